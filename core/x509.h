/* x509.h - certificates, chains and CSRs on OpenSSL, with no Lua in sight.
 * Keys are in key.h, the local CA (issuing, OCSP responses) in localca.h.
 *
 * The cache keeps DER plus the facts below, never OpenSSL objects, so 100k
 * certificates stay small.  Everything parsed here comes from outside
 * (storage, a CA): it is sized and every OpenSSL return value is checked.
 */
#ifndef CM_X509_H
#define CM_X509_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Upper bound on any PEM/DER input we accept (a chain is a few KiB). */
#define CM_X509_MAX_INPUT (1024 * 1024)

/* Longest subject CN we write (RFC 5280 ub-common-name). */
#define CM_X509_CN_MAX 64

struct cm_strlist {
    char **items;
    size_t count;
};

/* Facts about a leaf certificate and its chain, all owned by the struct. */
struct cm_cert_facts {
    unsigned char sha256[32];          /* SHA-256 of the leaf DER: the cache key */
    int64_t not_before, not_after;     /* Unix seconds */
    struct cm_strlist names;           /* DNS SANs then IP SANs (canonical text); subject CN if no SAN */
    char *serial_hex;                  /* lower-case hex */
    char *issuer;                      /* issuer DN, RFC 2253 */
    char *subject;                     /* subject DN, RFC 2253 */
    struct cm_strlist ocsp_urls;       /* AIA OCSP responders */
    struct cm_strlist crl_urls;        /* CRL distribution points (URIs) */
    int is_ca;                         /* basicConstraints CA:TRUE */
    int must_staple;                   /* TLS Feature (RFC 7633) lists status_request (5) */
    unsigned char *der;                /* leaf DER */
    size_t der_len;
    unsigned char *chain_der;          /* the rest of the chain, DER certificates back to back */
    size_t chain_der_len;
    size_t chain_count;                /* certificates in chain_der */
};

/* Parse a PEM chain (leaf first, then intermediates) into *out, which the
 * caller frees with cm_cert_facts_free.  Fails with code "parse" (garbage,
 * truncated, empty), "toobig" (len > CM_X509_MAX_INPUT).  On failure *out is
 * left zeroed. */
int cm_x509_parse_chain(const char *pem, size_t len, struct cm_cert_facts *out,
                        struct cm_result *res);

/* Parse DER certificates back to back (leaf first) into *out, as above. */
int cm_x509_parse_der_chain(const unsigned char *der, size_t len,
                            struct cm_cert_facts *out, struct cm_result *res);

/* Free everything *f owns and zero it; safe on a zeroed struct. */
void cm_cert_facts_free(struct cm_cert_facts *f);

/* The leaf's notAfter of a PEM chain, without the rest of its facts (the
 * clean pass's scan of every stored certificate): the fast path's shape
 * check and validity, else the full parse's verdict.  CM_ERR with res
 * ("parse", "toobig", "ENOMEM") as cm_x509_parse_chain fails. */
int cm_x509_leaf_not_after(const char *pem, size_t len, int64_t *not_after, struct cm_result *res);

/* Free every item and the array of *l and zero it; safe on a zeroed list. */
void cm_strlist_free(struct cm_strlist *l);

/* Length of the first DER element (tag, length, contents) in der[0..len),
 * without decoding it: how the cache splits chain_der into certificates.
 * Fails with "parse" when the header is malformed or runs past len. */
int cm_x509_der_next(const unsigned char *der, size_t len, size_t *elem_len,
                     struct cm_result *res);

/* PEM text for DER certificates: leaf[0..leaf_len) then the certificates in
 * chain[0..chain_len) (back to back, may be NULL/0), each as a CERTIFICATE
 * block with 64-column lines.  *pem (NUL-terminated, *pem_len bytes without
 * the NUL) is malloc'd for the caller.  The DER is split by its element
 * headers, not decoded.  Fails with "parse" (bad DER header), "toobig". */
int cm_x509_chain_pem(const unsigned char *leaf, size_t leaf_len, const unsigned char *chain,
                      size_t chain_len, char **pem, size_t *pem_len, struct cm_result *res);

/* FNV-1a 32 (certmagic's staple key hash) of what cm_x509_chain_pem makes of
 * the same input, into *hash, without making it.  Fails as it does. */
int cm_x509_chain_pem_fnv1a32(const unsigned char *leaf, size_t leaf_len, const unsigned char *chain,
                              size_t chain_len, uint32_t *hash, struct cm_result *res);

/* ---- CSRs -------------------------------------------------------------- */

/* Make a CSR signed (SHA-256) by the private key in key_pem for names[0..n)
 * (n >= 1): SAN with a DNS entry per name and an IP entry per IP address
 * literal, subject CN = names[0] when it fits (64 bytes).  Names are used as
 * given (normalise them first) but must be printable ASCII.  *csr_pem and
 * *csr_der (*der_len bytes) are malloc'd for the caller; either pointer may
 * be NULL when not wanted.  Fails with "parse" (key), "invalid" (no names,
 * a bad name), "crypto". */
int cm_csr_create(const char *key_pem, size_t key_len, const char *const *names, size_t n,
                  char **csr_pem, unsigned char **csr_der, size_t *der_len,
                  struct cm_result *res);

/* What a CA needs from a CSR.  Owned by the struct. */
struct cm_csr_info {
    struct cm_strlist names;   /* SAN DNS names then IPs; the subject CN if no SAN */
    char *cn;                  /* subject CN or NULL */
    char *public_key_pem;      /* "PUBLIC KEY" PEM */
};

/* Parse a CSR (PEM "CERTIFICATE REQUEST" or DER) and verify its signature
 * with its own key.  *out is the caller's (cm_csr_info_free); zeroed on
 * failure.  Fails with "parse", "verify" (bad signature: tampered),
 * "toobig". */
int cm_csr_parse(const unsigned char *data, size_t len, struct cm_csr_info *out,
                 struct cm_result *res);

/* Free what *info owns and zero it; safe on a zeroed struct. */
void cm_csr_info_free(struct cm_csr_info *info);

#endif
