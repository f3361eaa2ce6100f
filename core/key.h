/* key.h - private and public keys on OpenSSL: generate, load, match, and the
 * loaders a JWS signer needs.
 *
 * Key PEM inputs are bounded by CM_X509_MAX_INPUT and may be PKCS#8 or the
 * traditional "EC/RSA PRIVATE KEY" forms; an encrypted key is refused
 * ("parse"), never prompted for.  The loaders hand out OpenSSL's EVP_PKEY as
 * an opaque `struct evp_pkey_st` so that this header needs no OpenSSL one;
 * code that includes <openssl/evp.h> may use it as an EVP_PKEY *.
 */
#ifndef CM_KEY_H
#define CM_KEY_H

#include <stddef.h>

#include "result.h"

struct evp_pkey_st; /* OpenSSL's EVP_PKEY */

/* Generate a private key of type "p256" (type NULL or ""), "p384", "rsa2048"
 * or "rsa4096"; *pem gets it as PKCS#8 PEM, malloc'd for the caller.
 * Fails with "invalid" (unknown type) or "crypto"; *pem is then NULL. */
int cm_key_generate(const char *type, char **pem, struct cm_result *res);

/* CM_OK when the private key in key_pem belongs to the leaf certificate in
 * cert (PEM chain or DER, leaf first).  Fails with "mismatch" (another key),
 * "parse" (either input unreadable), "toobig". */
int cm_key_matches_cert(const char *cert, size_t cert_len, const char *key_pem, size_t key_len,
                        struct cm_result *res);

/* The public half of a private (or public) key PEM as SubjectPublicKeyInfo
 * PEM ("PUBLIC KEY"), malloc'd into *pub_pem.  Fails with "parse", "toobig",
 * "crypto"; *pub_pem is then NULL. */
int cm_key_public_pem(const char *key_pem, size_t key_len, char **pub_pem,
                      struct cm_result *res);

/* Load the private key in pem[0..len) into *out, which the caller frees with
 * cm_key_free (a signer keeps it for as long as it signs).  Fails with
 * "parse" (not a private key PEM, or an encrypted one), "toobig",
 * "ENOMEM"; *out is then NULL. */
int cm_key_load_private(const char *pem, size_t len, struct evp_pkey_st **out,
                        struct cm_result *res);

/* Load a "PUBLIC KEY" PEM, or the public half of a private key PEM, into
 * *out (caller frees with cm_key_free).  Failures as cm_key_load_private. */
int cm_key_load_public(const char *pem, size_t len, struct evp_pkey_st **out,
                       struct cm_result *res);

/* The public key of a loaded key as SubjectPublicKeyInfo PEM (*pem, *pem_len
 * bytes without the NUL when pem_len is not NULL), malloc'd for the caller:
 * what a JWK or an account key check is made from.  The key stays the
 * caller's.  Fails with "crypto" (no key, or OpenSSL failed); *pem is then
 * NULL. */
int cm_key_public_pem_of(const struct evp_pkey_st *key, char **pem, size_t *pem_len,
                         struct cm_result *res);

/* The type of a loaded key, as cm_key_generate names types ("p256", "p384",
 * "rsa2048", "rsa4096"; other RSA sizes as "rsa<bits>", "p521" for P-521,
 * "ed25519"), written NUL-terminated into out (out_size bytes; 16 is
 * enough): how a JWS signer picks its algorithm.  Fails with "invalid" for a
 * key of another kind, "toobig" when out is too small. */
int cm_key_type(const struct evp_pkey_st *key, char *out, size_t out_size,
                struct cm_result *res);

/* Free a key from the loaders; NULL is ignored. */
void cm_key_free(struct evp_pkey_st *key);

#endif
