/* crypto.c - SHA-256 and random bytes (base64 and hex: encoding.c). */
#include "crypto.h"
#include "encoding.h"

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
    cm_hex_encode(in, len, out);
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
