/* crl.h - checking CRLs (RFC 5280 section 5), no Lua.
 *
 * Building them is the local CA's (localca.h: cm_crl_build).  A CRL is the
 * revocation fallback for certificates that name no OCSP responder: fetched
 * over plain HTTP, so untrusted until its issuer name matches the issuer
 * certificate we already hold and its signature verifies under that
 * certificate's key.  A parsed CRL keeps only what lookups need (each
 * entry's serial, revocation time and reason, sorted for binary search), not
 * OpenSSL's decoded structure, so its memory is a small constant per entry.
 *
 * Inputs are DER (first byte 0x30) or PEM ("X509 CRL" block); certificates
 * are PEM (first certificate used) or DER, with lengths.
 */
#ifndef CM_CRL_H
#define CM_CRL_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Upper bound on a CRL we parse (the largest public CRLs are tens of MB). */
#define CM_CRL_MAX_INPUT (32u * 1024u * 1024u)

/* Octets of a serial (or cRLNumber) magnitude: RFC 5280 4.1.2.2 allows 20. */
#define CM_CRL_SERIAL_MAX 20

/* What a CRL says about itself. */
struct cm_crl_info {
    int64_t this_update;
    int64_t next_update;   /* 0 when the CRL has none */
    size_t count;          /* revoked entries */
    char number_hex[2 * CM_CRL_SERIAL_MAX + 1]; /* cRLNumber, lower-case hex; "" when none */
};

/* One revoked entry, as cm_crl_lookup reports it. */
struct cm_crl_revoked {
    int64_t revoked_at;    /* Unix seconds */
    int reason;            /* CRLReason 0-10 when the entry has a reasonCode, else -1 */
};

struct cm_crl;

/* Parse a CRL and check it: at most CM_CRL_MAX_INPUT bytes ("toobig"), a
 * complete (not delta) X.509 v1/v2 CRL ("parse"), issued under the issuer
 * certificate's subject name ("mismatch"), signed by its key, which must be
 * allowed to sign CRLs (keyUsage cRLSign when present) ("verify").  With now
 * > 0 it must be current: thisUpdate > now + skew fails with "notyet", a
 * nextUpdate at or before now with "stale".  *out (freed with cm_crl_free) is
 * the caller's on success, NULL on failure.  Other codes: "parse" for an
 * unreadable issuer certificate or an entry whose serial is longer than
 * CM_CRL_SERIAL_MAX octets, "ENOMEM". */
int cm_crl_parse(const char *data, size_t len, const char *issuer, size_t issuer_len,
                 int64_t now, int64_t skew, struct cm_crl **out, struct cm_result *res);

/* Free crl (NULL is fine). */
void cm_crl_free(struct cm_crl *crl);

/* What the parsed CRL says about itself (never fails). */
void cm_crl_get_info(const struct cm_crl *crl, struct cm_crl_info *out);

/* Look a serial up: serial_hex[0..len) as cm_cert_facts.serial_hex writes it,
 * though case and leading zeros do not matter (and a leading '-' names a
 * negative serial).  1 with *out filled when the CRL lists it, 0 when it does
 * not; CM_ERR with "invalid" when serial_hex is empty or not hex.  O(log n). */
int cm_crl_lookup(const struct cm_crl *crl, const char *serial_hex, size_t len,
                  struct cm_crl_revoked *out, struct cm_result *res);

/* Read what a CRL says about itself WITHOUT verifying it: for deciding
 * whether a stored copy is stale (the clean pass), never for trusting it.
 * Fails with "toobig", "parse"; *out is then zeroed. */
int cm_crl_peek(const char *data, size_t len, struct cm_crl_info *out, struct cm_result *res);

#endif
