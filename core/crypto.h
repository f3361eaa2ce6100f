/* crypto.h - small cryptographic helpers: SHA-256 and random bytes.
 *
 * The primitives storage keys and lock owners need.  Base64 and hex live in
 * encoding.h.  Nothing here allocates.
 */
#ifndef CM_CRYPTO_H
#define CM_CRYPTO_H

#include <stddef.h>

#include "result.h"

#define CM_SHA256_LEN 32

/* SHA-256 of len bytes at data into out (32 bytes).  Returns CM_OK, or CM_ERR
 * with code "crypto" when OpenSSL fails (it should not). */
int cm_crypto_sha256(const void *data, size_t len, unsigned char out[CM_SHA256_LEN],
                     struct cm_result *res);

/* Lower-case hex of len bytes into out, which must hold 2*len+1 bytes: the
 * same as cm_hex_encode (encoding.h), which new code should call; kept so
 * existing callers compile. */
void cm_crypto_hex(const unsigned char *in, size_t len, char *out);

/* n cryptographically strong random bytes into buf (RAND_bytes).  Returns
 * CM_ERR with code "crypto" if the generator is not seeded or fails: callers
 * must not fall back to anything weaker. */
int cm_crypto_random_bytes(void *buf, size_t n, struct cm_result *res);

#endif
