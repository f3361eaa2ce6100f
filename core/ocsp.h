/* ocsp.h - checking OCSP responses (RFC 6960), no Lua.
 *
 * Building them is the local CA's (localca.h: testing.ca:ocsp).  Parsing is what
 * the OCSP pass runs on every response it fetches or loads from storage: the
 * response is untrusted until its signature verifies against the issuer we
 * already hold (directly, or through a delegated responder certificate that
 * the issuer signed and that carries the OCSPSigning EKU) and its CertID
 * names our certificate.  Given `now`, it must also be current: thisUpdate
 * not in the future (beyond a clock skew) and nextUpdate not passed.  When
 * to refresh a current response is the caller's decision: the times are
 * returned.  Requests (cm_ocsp_request_build) are what the OCSP pass sends.
 *
 * Certificate inputs are PEM (first certificate used) or DER, with lengths.
 */
#ifndef CM_OCSP_H
#define CM_OCSP_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

/* Upper bound on a response we parse (real ones are 1-4 KiB). */
#define CM_OCSP_MAX_INPUT (64 * 1024)

enum cm_ocsp_cert_status { CM_OCSP_GOOD = 0, CM_OCSP_REVOKED, CM_OCSP_UNKNOWN };

/* What a verified response says about one certificate. */
struct cm_ocsp_info {
    enum cm_ocsp_cert_status status;
    int64_t this_update;
    int64_t next_update;   /* 0 when the response has none */
    int64_t produced_at;
    int64_t revoked_at;    /* 0 unless revoked */
    int reason;            /* CRLReason when revoked and given, else -1 */
};

/* Clock skew allowed on a thisUpdate in the future, when the caller names none. */
#define CM_OCSP_DEFAULT_SKEW 300

/* Parse an OCSPResponse (DER) and check it is a successful response, signed
 * by the issuer or by a responder the issuer delegated to (OCSPSigning EKU),
 * with a SingleResponse for cert under any CertID hash.  `now` (Unix seconds,
 * > 0) is the time at which a delegated responder certificate must be valid
 * and against which the response must be current: thisUpdate > now + skew
 * fails with "notyet", a nextUpdate at or before now with "stale"; 0 skips
 * every time check.  Fills *out only when every check passed.  Fails with
 * "toobig", "parse" (not an OCSP response, or cert/issuer unreadable),
 * "ocsp:<responseStatus>" (e.g. "ocsp:tryLater": the responder answered but
 * with no response), "verify" (signature or responder not trusted),
 * "mismatch" (the response is not about cert), "notyet", "stale"; *out is
 * then zeroed. */
int cm_ocsp_response_parse(const unsigned char *der, size_t der_len, const char *cert,
                           size_t cert_len, const char *issuer, size_t issuer_len, int64_t now,
                           int64_t skew, struct cm_ocsp_info *out, struct cm_result *res);

/* Build the DER OCSPRequest asking about cert (PEM, first certificate, or
 * DER) issued by issuer (the same forms): one Request with a SHA-1 CertID,
 * as RFC 5019 (the lightweight profile every public responder serves)
 * prescribes, no nonce (so responders may answer from cache), no signature.
 * *der (*der_len bytes) is malloc'd for the caller.  Fails with "parse" /
 * "toobig" (a certificate unreadable), "crypto"; *der is then NULL. */
int cm_ocsp_request_build(const char *cert, size_t cert_len, const char *issuer,
                          size_t issuer_len, unsigned char **der, size_t *der_len,
                          struct cm_result *res);

/* Read what a successful OCSPResponse says (its first SingleResponse)
 * WITHOUT verifying its signature or whom it is about: for deciding whether a
 * stored staple is stale or unparseable (the clean pass), never for trusting
 * it.  Fails with "toobig", "parse", "ocsp:<responseStatus>"; *out is then
 * zeroed. */
int cm_ocsp_response_peek(const unsigned char *der, size_t der_len, struct cm_ocsp_info *out,
                          struct cm_result *res);

/* The update window of a signed revocation statement (an OCSP response,
 * a CRL) at `now`: fails with "notyet" when this_update is more than `skew`
 * seconds ahead (negative: 0), "stale" when next_update (0: none, never
 * stale) is at or before now; the message names `what` and the times in
 * RFC 3339. */
int cm_revocation_times_check(const char *what, int64_t this_update, int64_t next_update,
                              int64_t now, int64_t skew, struct cm_result *res);

/* "good", "revoked", "unknown"; cm_ocsp_status_parse returns -1 for others. */
const char *cm_ocsp_status_name(enum cm_ocsp_cert_status s);
int cm_ocsp_status_parse(const char *name);

/* RFC 5280 CRLReason names ("keyCompromise", ...) for 0-10 (7 is unused:
 * NULL); cm_ocsp_reason_parse returns -1 for an unknown name. */
const char *cm_ocsp_reason_name(int reason);
int cm_ocsp_reason_parse(const char *name);

#endif
