/* encoding.h - the core's one base64 (RFC 4648) and one hex.
 *
 * Every user in the core calls these: PEM bodies (x509.c), JOSE base64url
 * (the JWS signer), storage keys and digests (hex).  Decoding is strict (one
 * text per byte string: no characters outside the alphabet, no misplaced or
 * missing padding, no non-zero unused trailing bits) and bounded (the caller
 * passes the output capacity; nothing here allocates).
 */
#ifndef CM_ENCODING_H
#define CM_ENCODING_H

#include <stddef.h>

#include "result.h"

/* Flags of cm_base64_encode_into / cm_base64_decode_into. */
#define CM_BASE64_URL   0x1u /* RFC 4648 section 5 alphabet ("-_"), else section 4 ("+/") */
#define CM_BASE64_PAD   0x2u /* '=' padding: written when encoding, required when decoding */
#define CM_BASE64_SPACE 0x4u /* decode: skip ' ', '\t', '\r', '\n' anywhere (PEM, RFC 7468) */
#define CM_BASE64_LINES 0x8u /* encode: 64-column lines, each ending in '\n' (PEM) */

/* Number of characters cm_base64_encode_into writes for n bytes with flags,
 * without the terminating NUL.  n must be below SIZE_MAX / 2 (inputs are
 * bounded long before that). */
size_t cm_base64_encoded_size(size_t n, unsigned flags);

/* Encode in[0..len) into out, which holds at least
 * cm_base64_encoded_size(len, flags) + 1 bytes; NUL-terminates and returns
 * the number of characters written.  Cannot fail. */
size_t cm_base64_encode_into(const void *in, size_t len, unsigned flags, char *out);

/* An upper bound on the bytes any text of len characters decodes to: size
 * out with it. */
size_t cm_base64_decoded_max(size_t len);

/* Strictly decode in[0..len) into out (out_cap bytes); *out_len receives the
 * decoded length.  With CM_BASE64_PAD padding is mandatory, without it '=' is
 * refused.  Fails with CM_ERR, code "invalid" and a message starting
 * "base64: " or "base64url: " that names the offset (bad character, misplaced
 * or missing padding, impossible length, non-zero trailing bits), or code
 * "toobig" when the result does not fit in out_cap.  On failure *out_len is 0
 * and out may hold partial output. */
int cm_base64_decode_into(const char *in, size_t len, unsigned flags, unsigned char *out,
                          size_t out_cap, size_t *out_len, struct cm_result *res);

/* Shorthands for the two forms the core uses most.
 *   cm_base64_encoded_len(n, padded): cm_base64_encoded_size with
 *     CM_BASE64_PAD when padded (standard) or without (base64url);
 *   cm_base64url_encode: RFC 4648 section 5, no padding (JOSE);
 *   cm_base64_encode:    RFC 4648 section 4, '=' padded.
 * out must hold cm_base64_encoded_len(len, ...) + 1 bytes; they NUL-terminate
 * and return the length written. */
size_t cm_base64_encoded_len(size_t n, int padded);
size_t cm_base64url_encode(const void *in, size_t len, char *out);
size_t cm_base64_encode(const void *in, size_t len, char *out);

/* Strict decoding of len characters into out, which must hold at least
 * cm_base64_decoded_max(len) (= len / 4 * 3 + 3) bytes:
 *   cm_base64url_decode: base64url without padding; '=' is refused;
 *   cm_base64_decode:    standard base64 with mandatory padding.
 * Failures as cm_base64_decode_into (code "invalid"). */
int cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                        struct cm_result *res);
int cm_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                     struct cm_result *res);

/* Lower-case hex of in[0..len) into out, which must hold 2 * len + 1 bytes;
 * NUL-terminates.  Cannot fail. */
void cm_hex_encode(const unsigned char *in, size_t len, char *out);

/* Decode len hex digits (either case, len even) into out (out_cap bytes);
 * *out_len receives len / 2.  Fails with code "invalid" (odd length, a
 * non-hex character, naming its offset) or "toobig" (out_cap too small). */
int cm_hex_decode(const char *in, size_t len, unsigned char *out, size_t out_cap,
                  size_t *out_len, struct cm_result *res);

#endif
