/* ocsp_der.h - an OCSP response checked on its DER bytes, with no OpenSSL
 * decoding, for the common case of checking many at once (ocsp_batch.c):
 * a response the certificate's issuer signed itself.
 *
 * Decoding a response with OpenSSL (d2i, then the signed data encoded again
 * to hash it, ASN1_item_verify's way) was most of the cost of a stored
 * staple whose signature the memo already knew.  Here the response is read
 * with the strict DER reader (der.h), the signed bytes hashed where they
 * lie, and every check of cm_ocsp_response_parse made on what was read.
 *
 * Like ocsp_fast.h it never rejects: it either finds the response to be one
 * the OpenSSL path would accept with exactly these facts (if its signature
 * is good), or declines and the caller runs that path, which decides and
 * reports.  It takes only: strict DER throughout, a successful basic
 * response, no version field, a responder ID naming the issuer (by key
 * hash, or by name in the same bytes as the issuer's subject), every
 * SingleResponse's CertID naming the issuer (SHA-1 or SHA-256, parameters
 * NULL or absent), well-formed extensions (critical only as TRUE), no
 * certificate but the issuer's own (byte for byte), an ECDSA signature with
 * SHA-256/384/512 and no parameters, times in RFC 5280's GeneralizedTime
 * form, and a SingleResponse about the serial that is current at `now` (no
 * "notyet" or "stale").  The signature itself is the caller's to check
 * (out->dgst, out->sig): only a good one makes out->info the outcome.
 */
#ifndef CM_OCSP_DER_H
#define CM_OCSP_DER_H

#include <stddef.h>
#include <stdint.h>

#include "ocsp.h"
#include "ocsp_fast.h"

/* The largest DER ECDSA signature taken (P-521's is at most 139 bytes). */
#define CM_OCSP_DER_MAX_SIG 160

struct cm_ocsp_der_result {
    struct cm_ocsp_info info;       /* what the response says of the serial */
    unsigned char dgst[64];         /* the signed bytes' digest under the signature's hash */
    unsigned int dlen;
    unsigned char sig[CM_OCSP_DER_MAX_SIG]; /* the signature (DER ECDSA-Sig-Value), copied */
    size_t siglen;
};

/* 1: der (a whole OCSPResponse) is what the header says, about the
 * certificate whose serialNumber element (tag, length, contents: strict DER)
 * is serial[0..serial_len), under fi's issuer; *out holds its facts, digest
 * and signature.  0: declined (*out undefined), the OpenSSL path decides.
 * now 0 skips the time checks, as cm_ocsp_response_parse does. */
int cm_ocsp_der_check(const struct cm_ocsp_fast_issuer *fi, const unsigned char *der, size_t len,
                      const unsigned char *serial, size_t serial_len, int64_t now, int64_t skew,
                      struct cm_ocsp_der_result *out);

#endif
