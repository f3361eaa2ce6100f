/* x509_ssl.h - OpenSSL-typed helpers shared by x509.c and ocsp.c.
 *
 * Private to the x509/ocsp unit: the rest of the core sees only x509.h and
 * ocsp.h, which hold no OpenSSL types.  Every loader bounds its input by
 * CM_X509_MAX_INPUT and names `what` (e.g. "issuer certificate") in errors.
 */
#ifndef CM_X509_SSL_H
#define CM_X509_SSL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "result.h"

/* The first certificate of a PEM chain or of DER data (first byte 0x30).
 * Caller frees.  NULL with "parse"/"toobig" in res. */
X509 *cm_ssl_load_cert(const char *data, size_t len, const char *what, struct cm_result *res);

/* A private key from PEM (PKCS#8 or traditional); encrypted keys are refused,
 * never prompted for.  Caller frees.  NULL with "parse"/"toobig" in res. */
EVP_PKEY *cm_ssl_load_private_key(const char *pem, size_t len, const char *what,
                                  struct cm_result *res);

/* A key from "PUBLIC KEY" PEM, or the public half of a private key PEM. */
EVP_PKEY *cm_ssl_load_public_key(const char *pem, size_t len, const char *what,
                                 struct cm_result *res);

/* The contents of a memory BIO as a malloc'd NUL-terminated string (*len
 * bytes without the NUL, when len is not NULL), or NULL when out of memory. */
char *cm_ssl_bio_string(BIO *bio, size_t *len);

/* An ASN1_TIME as Unix seconds (ASN1_TIME_to_tm + timegm); CM_ERR when it
 * is malformed. */
int cm_ssl_time_unix(const ASN1_TIME *t, int64_t *out);

#endif
