/* crypto.c - SHA-256, random bytes and strict base64 / base64url. */
#include "crypto.h"

#include <limits.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

int cm_crypto_sha256(const void *data, size_t len, unsigned char out[CM_SHA256_LEN],
                     struct cm_result *res)
{
    unsigned int out_len = 0;
    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1 ||
        out_len != CM_SHA256_LEN)
        return cm_fail_ssl(res, "crypto", "sha256");
    return CM_OK;
}

void cm_crypto_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

int cm_crypto_random_bytes(void *buf, size_t n, struct cm_result *res)
{
    unsigned char *p = buf;
    /* RAND_bytes takes an int: feed large requests in chunks. */
    while (n > 0) {
        int chunk = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return cm_fail_ssl(res, "crypto", "random_bytes: the random generator failed");
        p += chunk;
        n -= (size_t)chunk;
    }
    return CM_OK;
}

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t cm_base64_encoded_len(size_t n, int padded)
{
    if (padded) return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

static size_t encode(const char *alphabet, int padded, const unsigned char *in, size_t len,
                     char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned long v = (unsigned long)in[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (padded) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (len - i == 2) {
        unsigned long v = (unsigned long)in[i] << 16 | (unsigned long)in[i + 1] << 8;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        if (padded) out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t cm_base64url_encode(const void *in, size_t len, char *out)
{
    return encode(B64_URL, 0, in, len, out);
}

size_t cm_base64_encode(const void *in, size_t len, char *out)
{
    return encode(B64_STD, 1, in, len, out);
}

/* Value of c in alphabet, or -1.  The two alphabets share their first 62
 * characters, so ranges cover those and only the last two are looked up. */
static int b64_value(const char *alphabet, unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (unsigned char)alphabet[62]) return 62;
    if (c == (unsigned char)alphabet[63]) return 63;
    return -1;
}

static int decode(const char *alphabet, int padded, const char *what, const char *in,
                  size_t len, unsigned char *out, size_t *out_len, struct cm_result *res)
{
    size_t data_len = len, i, o = 0, rest;
    int vals[4];

    if (padded) {
        if (len % 4 != 0)
            return cm_fail(res, "invalid", "%s: length %zu is not a multiple of 4", what, len);
        if (data_len > 0 && in[data_len - 1] == '=') data_len--;
        if (data_len > 0 && in[data_len - 1] == '=') data_len--;
    }
    rest = data_len % 4;
    if (rest == 1)
        return cm_fail(res, "invalid", "%s: length %zu is impossible", what, data_len);
    for (i = 0; i < data_len; i++) {
        int v = b64_value(alphabet, (unsigned char)in[i]);
        if (v < 0)
            return cm_fail(res, "invalid", "%s: invalid character at offset %zu", what, i);
        vals[i % 4] = v;
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(vals[0] << 2 | vals[1] >> 4);
            out[o++] = (unsigned char)((vals[1] & 15) << 4 | vals[2] >> 2);
            out[o++] = (unsigned char)((vals[2] & 3) << 6 | vals[3]);
        }
    }
    /* A partial final group: its unused low bits must be zero, otherwise two
     * different texts would decode to the same bytes. */
    if (rest == 2) {
        if (vals[1] & 15)
            return cm_fail(res, "invalid", "%s: non-zero trailing bits at offset %zu", what,
                           data_len - 1);
        out[o++] = (unsigned char)(vals[0] << 2 | vals[1] >> 4);
    } else if (rest == 3) {
        if (vals[2] & 3)
            return cm_fail(res, "invalid", "%s: non-zero trailing bits at offset %zu", what,
                           data_len - 1);
        out[o++] = (unsigned char)(vals[0] << 2 | vals[1] >> 4);
        out[o++] = (unsigned char)((vals[1] & 15) << 4 | vals[2] >> 2);
    }
    *out_len = o;
    return CM_OK;
}

int cm_base64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                        struct cm_result *res)
{
    return decode(B64_URL, 0, "base64url", in, len, out, out_len, res);
}

int cm_base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len,
                     struct cm_result *res)
{
    return decode(B64_STD, 1, "base64", in, len, out, out_len, res);
}
