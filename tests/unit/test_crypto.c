/* test_crypto.c - SHA-256, random bytes, strict base64 / base64url. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "crypto.h"
#include "encoding.h"

static void test_sha256(void)
{
    unsigned char md[CM_SHA256_LEN];
    char hex[2 * CM_SHA256_LEN + 1];
    struct cm_result res;
    CHECK(cm_crypto_sha256("abc", 3, md, &res) == CM_OK);
    cm_crypto_hex(md, sizeof md, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(cm_crypto_sha256("", 0, md, &res) == CM_OK);
    cm_crypto_hex(md, sizeof md, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_random(void)
{
    unsigned char a[32], b[32];
    struct cm_result res;
    CHECK(cm_crypto_random_bytes(a, sizeof a, &res) == CM_OK);
    CHECK(cm_crypto_random_bytes(b, sizeof b, &res) == CM_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);
    CHECK(cm_crypto_random_bytes(a, 0, &res) == CM_OK);
}

/* RFC 4648 section 10 vectors, both alphabets. */
static void test_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                      "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    size_t i;
    for (i = 0; i < 7; i++) {
        char out[32];
        unsigned char dec[32];
        size_t n = 0, len = strlen(plain[i]);
        struct cm_result res;
        CHECK(cm_base64_encode(plain[i], len, out) == strlen(std[i]));
        CHECK_STR(out, std[i]);
        CHECK(cm_base64_encoded_len(len, 1) == strlen(std[i]));
        CHECK(cm_base64url_encode(plain[i], len, out) == strlen(url[i]));
        CHECK_STR(out, url[i]);
        CHECK(cm_base64_encoded_len(len, 0) == strlen(url[i]));
        CHECK(cm_base64_decode(std[i], strlen(std[i]), dec, &n, &res) == CM_OK);
        CHECK(n == len && memcmp(dec, plain[i], len) == 0);
        CHECK(cm_base64url_decode(url[i], strlen(url[i]), dec, &n, &res) == CM_OK);
        CHECK(n == len && memcmp(dec, plain[i], len) == 0);
    }
    {
        const unsigned char bin[] = {0xfb, 0xff, 0xfe};
        char out[8];
        cm_base64url_encode(bin, 3, out);
        CHECK_STR(out, "-__-");
        cm_base64_encode(bin, 3, out);
        CHECK_STR(out, "+//+");
    }
}

static void test_strict(void)
{
    static const char *const bad_url[] = {"Zg==", "Z", "Zh", "Zm9", "Zm+v", "Zm/v", "Zm 9v",
                                          "Zm9v\n"};
    static const char *const bad_std[] = {"Zg", "Zg=", "Zh==", "Zm9=", "Zm-v", "Zm9v\n", "Z===",
                                          "Zg==Zg==", "=Zg="};
    unsigned char dec[32];
    size_t n, i;
    struct cm_result res;
    for (i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++) {
        CHECK(cm_base64url_decode(bad_url[i], strlen(bad_url[i]), dec, &n, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
    }
    for (i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++) {
        if (cm_base64_decode(bad_std[i], strlen(bad_std[i]), dec, &n, &res) != CM_ERR)
            fprintf(stderr, "  accepted %s\n", bad_std[i]);
        else
            CHECK_STR(res.code, "invalid");
    }
    for (i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++)
        CHECK(cm_base64_decode(bad_std[i], strlen(bad_std[i]), dec, &n, &res) == CM_ERR);
}

int main(void)
{
    test_sha256();
    test_random();
    test_vectors();
    test_strict();
    return CHECK_DONE();
}
