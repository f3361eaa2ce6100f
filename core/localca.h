/* localca.h - the local CA: issuing certificates and building the OCSP
 * responses a CA's responder would give, with no Lua and no clock
 *
 * (and the CRLs it would publish).
 *
 * For certmaint.issuer.internal and for tests (testing.ca): nothing here is
 * on the path that trusts what comes from outside.  Every time comes from the
 * options, so a spec on a fake clock gets consistent artefacts.
 */
#ifndef CM_LOCALCA_H
#define CM_LOCALCA_H

#include <stddef.h>
#include <stdint.h>

#include "ocsp.h"
#include "result.h"

/* ---- certificates ------------------------------------------------------ */

/* Input of cm_cert_issue.  Strings are NUL-terminated PEM unless a length
 * field says otherwise; all are borrowed for the call. */
struct cm_issue_opts {
    const char *subject_key;   /* subject key: private or public key PEM ... */
    const char *csr;           /* ... or a CSR (PEM or DER, csr_len bytes), signature verified */
    size_t csr_len;
    const char *const *names;  /* SAN entries (DNS names, IP literals); NULL: the CSR's names */
    size_t names_count;
    const char *cn;            /* subject CN; NULL: names[0] when it fits, else none */
    int64_t not_before, not_after;   /* Unix seconds, not_before < not_after */
    int is_ca;                 /* CA certificate (keyCertSign|cRLSign, no EKU) */
    int path_len;              /* CA path length constraint; < 0: none */
    int ocsp_signing;          /* leaf for a delegated OCSP responder: EKU OCSPSigning only */
    const char *issuer_cert;   /* issuer certificate PEM; NULL: self-signed */
    const char *issuer_key;    /* issuer private key PEM (required) */
    const char *ocsp_url;      /* AIA OCSP responder, optional */
    const char *crl_url;       /* CRL distribution point, optional */
    int must_staple;           /* TLS Feature status_request (RFC 7633 Must-Staple) */
    const char *serial_hex;    /* serial as hex, optional; default 128 random bits, positive */
};

/* Issue an X.509 v3 certificate signed (SHA-256) by the issuer key:
 * basicConstraints (critical), keyUsage (critical; CA: keyCertSign|cRLSign,
 * leaf: digitalSignature, +keyEncipherment for RSA keys), EKU serverAuth +
 * clientAuth for leaves, SKI, AKI, SAN, AIA/CDP when URLs are given, and
 * the TLS Feature extension listing status_request with must_staple.  For
 * a self-signed certificate the subject key defaults to the issuer key and
 * must equal it.  *cert_pem and *serial_hex (lower-case, as
 * cm_cert_facts.serial_hex) are malloc'd for the caller.  Fails with
 * "invalid" (missing or inconsistent options, bad serial or name), "parse"
 * (a key, certificate or CSR unreadable), "verify" (CSR signature),
 * "mismatch" (issuer key is not the issuer certificate's), "crypto". */
int cm_cert_issue(const struct cm_issue_opts *opts, char **cert_pem, char **serial_hex,
                  struct cm_result *res);

/* ---- OCSP responses ---------------------------------------------------- */

/* Options of cm_ocsp_response_build; pointers borrowed for the call. */
struct cm_ocsp_build_opts {
    const char *issuer_cert; size_t issuer_cert_len; /* CA that issued cert */
    const char *issuer_key;  size_t issuer_key_len;  /* its private key PEM (signs when no responder) */
    const char *cert;        size_t cert_len;        /* the certificate the response is about */
    const char *responder_cert; size_t responder_cert_len; /* optional delegated responder ... */
    const char *responder_key;  size_t responder_key_len;  /* ... and its key: sign with these */
    enum cm_ocsp_cert_status status;
    int64_t this_update;
    int64_t next_update;  /* 0: none (RFC 6960: newer info always available) */
    int64_t produced_at;  /* 0: this_update */
    int64_t revoked_at;   /* revoked only; 0: this_update */
    int reason;           /* revoked only: CRLReason 0-10, or -1 for none */
};

/* Build a signed OCSPResponse (status successful, BasicOCSPResponse, SHA-1
 * CertID as responders use, SHA-256 signature, responder ID by name) for one
 * certificate.  It reads no clock: every time comes from opts.  *der
 * (*der_len bytes) is malloc'd for the caller.  Fails with "invalid"
 * (options), "parse" (a certificate or key unreadable), "mismatch" (signing
 * key is not the signing certificate's), "crypto". */
int cm_ocsp_response_build(const struct cm_ocsp_build_opts *opts, unsigned char **der,
                           size_t *der_len, struct cm_result *res);

/* ---- CRLs ------------------------------------------------------------- */

/* One revoked certificate of a CRL; borrowed for the call. */
struct cm_crl_entry {
    const char *serial_hex;  /* 1-40 hex digits, as cm_cert_facts.serial_hex */
    int64_t revoked_at;      /* Unix seconds */
    int reason;              /* CRLReason 0-10 (not 7), or -1: no reasonCode */
};

/* Options of cm_crl_build; pointers borrowed for the call. */
struct cm_crl_build_opts {
    const char *issuer_cert; size_t issuer_cert_len; /* the CA (PEM or DER) ... */
    const char *issuer_key;  size_t issuer_key_len;  /* ... and its private key PEM */
    const struct cm_crl_entry *entries;              /* may be NULL when entry_count is 0 */
    size_t entry_count;
    int64_t this_update;     /* required */
    int64_t next_update;     /* 0: none */
    const char *crl_number_hex; /* cRLNumber extension, optional */
};

/* Build a v2 CRL signed (SHA-256) by the issuer: issuer name from the
 * issuer certificate, the entries sorted by serial, each with its
 * reasonCode when given.  It reads no clock.  *der (*der_len bytes) is
 * malloc'd for the caller.  Fails with "invalid" (options, a bad serial or
 * reason), "parse" (certificate or key unreadable), "mismatch" (key is not
 * the certificate's), "crypto", "ENOMEM"; *der is then NULL. */
int cm_crl_build(const struct cm_crl_build_opts *opts, unsigned char **der, size_t *der_len,
                 struct cm_result *res);

#endif
