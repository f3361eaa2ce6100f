/* ari.h - the ACME Renewal Information certificate identifier (RFC 9773
 * section 4.1).
 *
 * The identifier is base64url(AKI keyIdentifier) "." base64url(serial),
 * where the serial is the DER INTEGER's content octets (with the leading
 * 0x00 a positive serial with its top bit set carries), both unpadded.
 */
#ifndef CM_ARI_H
#define CM_ARI_H

#include <stddef.h>

#include "result.h"

/* Longest identifier: a 64-byte key identifier and a 21-byte serial
 * (RFC 5280 allows 20 octets of value) fit with room to spare. */
#define CM_ARI_CERT_ID_MAX 256

/* The identifier of the leaf certificate in cert[0..len) (PEM, first block,
 * or DER) into out (out_size bytes, CM_ARI_CERT_ID_MAX is enough).  Fails
 * with "parse", "toobig" (the input, or an AKI/serial too long for out),
 * "noaki" (the certificate has no authorityKeyIdentifier keyIdentifier: a
 * CA's certificates always have one, RFC 5280 section 4.2.1.1). */
int cm_ari_cert_id(const char *cert, size_t len, char *out, size_t out_size,
                   struct cm_result *res);

#endif
