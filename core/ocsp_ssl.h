/* ocsp_ssl.h - the steps of cm_ocsp_response_parse on OpenSSL objects, for
 * checking many responses (ocsp_batch.c) with the issuer decoded and its
 * trust store built once.  Private to ocsp.c and ocsp_batch.c.
 *
 * cm_ocsp_response_parse is exactly: cm_ssl_ocsp_decode, the certificate's
 * serial (cm_ssl_cert_serial), the issuer (cm_ssl_load_issuer),
 * cm_ssl_ocsp_trust, cm_ssl_ocsp_check with verify_signature = 1; a caller
 * that runs them in that order fails in the same way on the same input. */
#ifndef CM_OCSP_SSL_H
#define CM_OCSP_SSL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include "ocsp.h"
#include "ocsp_fast.h"
#include "result.h"

/* Decode a successful OCSPResponse and its BasicOCSPResponse (both the
 * caller's on success; NULL on failure).  Fails with "parse", "toobig",
 * "ocsp:<responseStatus>". */
int cm_ssl_ocsp_decode(const unsigned char *der, size_t der_len, OCSP_RESPONSE **resp,
                       OCSP_BASICRESP **bs, struct cm_result *res);

/* A store trusting exactly issuer, at `now` (0: no time checks), for
 * cm_ssl_ocsp_check.  Caller frees.  Read-only once made, so threads may
 * share it.  NULL with "crypto". */
X509_STORE *cm_ssl_ocsp_trust(X509 *issuer, int64_t now, struct cm_result *res);

/* The checks after decoding: the signature against store (when
 * verify_signature; skipped otherwise: a parse-only measurement, never for
 * trusting a response), the SingleResponse about serial under issuer, its
 * times at now/skew.  Fills *out only on success (zeroed otherwise).
 * signed_ok: the signature is known good already (ocsp_fast.h's path), so
 * OCSP_basic_verify is skipped.
 * Nothing passed in is changed, so threads may share issuer and store.
 * Fails with "crypto", "verify", "mismatch", "parse", "notyet", "stale". */
int cm_ssl_ocsp_check(OCSP_BASICRESP *bs, const ASN1_INTEGER *serial, X509 *issuer,
                      X509_STORE *store, int signed_ok, int verify_signature,
                      int64_t now, int64_t skew, struct cm_ocsp_info *out, struct cm_result *res);

#endif
