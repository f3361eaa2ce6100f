/* encoding.c - strict, bounded base64 / base64url (RFC 4648) and hex.
 *
 * The decoder is on the cache's load path (every PEM body of 100k
 * certificates), so it is one table lookup a character: each alphabet has a
 * 256-entry table giving a character's value, or one of the classes below.
 */
#include "encoding.h"

#include <stdint.h>

enum { BAD = -1, SPACE = -2, PAD = -3 };

/* Value of each byte in the standard / url-safe alphabet; BAD, SPACE
 * (' ', '\t', '\r', '\n': skipped under CM_BASE64_SPACE) or PAD ('='). */
static const signed char STD_VALUES[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -2, -1, -1, -2, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -3, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static const signed char URL_VALUES[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -2, -2, -1, -1, -2, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -3, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, 63,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static const char STD_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char URL_ALPHABET[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#define LINE_CHARS 64 /* PEM: RFC 7468 section 2 */

size_t cm_base64_encoded_size(size_t n, unsigned flags)
{
    size_t chars = (flags & CM_BASE64_PAD) ? (n + 2) / 3 * 4
                                           : n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
    if (flags & CM_BASE64_LINES) chars += (chars + LINE_CHARS - 1) / LINE_CHARS;
    return chars;
}

size_t cm_base64_encode_into(const void *in_, size_t len, unsigned flags, char *out)
{
    const unsigned char *in = in_;
    const char *alphabet = (flags & CM_BASE64_URL) ? URL_ALPHABET : STD_ALPHABET;
    int pad = (flags & CM_BASE64_PAD) != 0, lines = (flags & CM_BASE64_LINES) != 0;
    size_t i, o = 0, col = 0;

    for (i = 0; i < len; i += 3) {
        size_t rest = len - i;
        uint32_t v = (uint32_t)in[i] << 16;
        if (rest > 1) v |= (uint32_t)in[i + 1] << 8;
        if (rest > 2) v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (rest > 1) out[o++] = alphabet[(v >> 6) & 63];
        else if (pad) out[o++] = '=';
        if (rest > 2) out[o++] = alphabet[v & 63];
        else if (pad) out[o++] = '=';
        if (lines && (col += 4) == LINE_CHARS) {
            out[o++] = '\n';
            col = 0;
        }
    }
    /* an unpadded short last group leaves col off a multiple of 4: any col
     * other than 0 means an unfinished line */
    if (lines && col) out[o++] = '\n';
    out[o] = '\0';
    return o;
}

size_t cm_base64_decoded_max(size_t len) { return len / 4 * 3 + 3; }

int cm_base64_decode_into(const char *in, size_t len, unsigned flags, unsigned char *out,
                          size_t out_cap, size_t *out_len, struct cm_result *res)
{
    const signed char *values = (flags & CM_BASE64_URL) ? URL_VALUES : STD_VALUES;
    const char *what = (flags & CM_BASE64_URL) ? "base64url" : "base64";
    int want_pad = (flags & CM_BASE64_PAD) != 0, skip_space = (flags & CM_BASE64_SPACE) != 0;
    uint32_t acc = 0;
    size_t i, o = 0, data = 0, last = 0;
    int q = 0, pads = 0;

    *out_len = 0;
    if (want_pad && !skip_space && len % 4 != 0)
        return cm_fail(res, "invalid", "%s: length %zu is not a multiple of 4", what, len);
    for (i = 0; i < len; i++) {
        int v;
        /* Four data characters at a group boundary (nearly all of a PEM
         * body: its 64-column lines hold whole groups) in one step. */
        while (q == 0 && !pads && len - i >= 4 && out_cap - o >= 3) {
            int a = values[(unsigned char)in[i]], b = values[(unsigned char)in[i + 1]],
                c = values[(unsigned char)in[i + 2]], d = values[(unsigned char)in[i + 3]];
            uint32_t g;
            if ((a | b | c | d) < 0) break;
            g = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
            out[o++] = (unsigned char)(g >> 16);
            out[o++] = (unsigned char)(g >> 8);
            out[o++] = (unsigned char)g;
            data += 4;
            last = i + 3;
            i += 4;
        }
        if (i == len) break;
        v = values[(unsigned char)in[i]];
        if (v >= 0) {
            if (pads)
                return cm_fail(res, "invalid", "%s: data after padding at offset %zu", what, i);
            acc = acc << 6 | (uint32_t)v;
            data++;
            last = i;
            if (++q == 4) {
                if (out_cap - o < 3)
                    return cm_fail(res, "toobig", "%s: more than %zu bytes decoded", what,
                                   out_cap);
                out[o++] = (unsigned char)(acc >> 16);
                out[o++] = (unsigned char)(acc >> 8);
                out[o++] = (unsigned char)acc;
                q = 0;
                acc = 0;
            }
        } else if (v == SPACE && skip_space) {
            continue;
        } else if (v == PAD && want_pad) {
            /* '=' only completes a group of 2 or 3 characters, to 4 */
            if (q < 2 || ++pads > 4 - q)
                return cm_fail(res, "invalid", "%s: misplaced padding at offset %zu", what, i);
        } else {
            return cm_fail(res, "invalid", "%s: invalid character at offset %zu", what, i);
        }
    }
    if (q == 1)
        return cm_fail(res, "invalid", "%s: length %zu is impossible", what, data);
    if (q && want_pad && pads != 4 - q)
        return cm_fail(res, "invalid", "%s: missing padding at the end", what);
    /* A partial final group: its unused low bits must be zero, otherwise two
     * different texts would decode to the same bytes. */
    if ((q == 2 && (acc & 15)) || (q == 3 && (acc & 3)))
        return cm_fail(res, "invalid", "%s: non-zero trailing bits at offset %zu", what, last);
    if (q && out_cap - o < (size_t)q - 1)
        return cm_fail(res, "toobig", "%s: more than %zu bytes decoded", what, out_cap);
    if (q == 2) {
        out[o++] = (unsigned char)(acc >> 4);
    } else if (q == 3) {
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    *out_len = o;
    return CM_OK;
}

size_t cm_base64_encoded_len(size_t n, int padded)
{
    return cm_base64_encoded_size(n, padded ? CM_BASE64_PAD : 0);
}

size_t cm_base64url_encode(const void *in, size_t len, char *out)
{
    return cm_base64_encode_into(in, len, CM_BASE64_URL, out);
}

size_t cm_base64_encode(const void *in, size_t len, char *out)
{
    return cm_base64_encode_into(in, len, CM_BASE64_PAD, out);
}

int cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                        struct cm_result *res)
{
    return cm_base64_decode_into(in, len, CM_BASE64_URL, out, cm_base64_decoded_max(len),
                                 out_len, res);
}

int cm_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                     struct cm_result *res)
{
    return cm_base64_decode_into(in, len, CM_BASE64_PAD, out, cm_base64_decoded_max(len),
                                 out_len, res);
}

void cm_hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int cm_hex_decode(const char *in, size_t len, unsigned char *out, size_t out_cap,
                  size_t *out_len, struct cm_result *res)
{
    size_t i;
    *out_len = 0;
    if (len % 2 != 0) return cm_fail(res, "invalid", "hex: odd length %zu", len);
    if (len / 2 > out_cap)
        return cm_fail(res, "toobig", "hex: %zu bytes do not fit in %zu", len / 2, out_cap);
    for (i = 0; i < len; i += 2) {
        int hi = hex_value((unsigned char)in[i]), lo = hex_value((unsigned char)in[i + 1]);
        if (hi < 0 || lo < 0)
            return cm_fail(res, "invalid", "hex: invalid character at offset %zu",
                           hi < 0 ? i : i + 1);
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    *out_len = len / 2;
    return CM_OK;
}
