/* crypto.h - small cryptographic helpers: SHA-256, random bytes, base64.
 *
 * These are the primitives storage keys, lock owners and JOSE (base64url)
 * need.  Nothing here allocates except the *_decode functions' callers'
 * buffers, which the caller sizes with the *_len helpers.
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

/* Lower-case hex of len bytes into out, which must hold 2*len+1 bytes. */
void cm_crypto_hex(const unsigned char *in, size_t len, char *out);

/* n cryptographically strong random bytes into buf (RAND_bytes).  Returns
 * CM_ERR with code "crypto" if the generator is not seeded or fails: callers
 * must not fall back to anything weaker. */
int cm_crypto_random_bytes(void *buf, size_t n, struct cm_result *res);

/* Length of the encoding of n bytes, without the terminating NUL:
 * padded = 1 for standard base64 with '=' padding, 0 for unpadded. */
size_t cm_base64_encoded_len(size_t n, int padded);

/* Encode len bytes into out (at least cm_base64_encoded_len(len, ...) + 1
 * bytes); NUL-terminates and returns the length written.
 *   cm_base64url_encode: RFC 4648 section 5 alphabet, no padding (JOSE);
 *   cm_base64_encode:    RFC 4648 section 4 alphabet, '=' padded. */
size_t cm_base64url_encode(const void *in, size_t len, char *out);
size_t cm_base64_encode(const void *in, size_t len, char *out);

/* Strict decoding of len characters into out, which must hold at least
 * len / 4 * 3 + 3 bytes; *out_len receives the decoded length.
 *   cm_base64url_decode: base64url without padding; '=' is refused.
 *   cm_base64_decode:    standard base64 with mandatory padding (len % 4 == 0).
 * Both refuse characters outside the alphabet (whitespace included), an
 * impossible length and non-zero unused trailing bits, so every input has at
 * most one decoding.  On failure: CM_ERR with code "invalid" and a message
 * naming the offset. */
int cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                        struct cm_result *res);
int cm_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                     struct cm_result *res);

#endif
