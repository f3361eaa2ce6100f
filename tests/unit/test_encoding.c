/* test_encoding.c - the core's one base64 (RFC 4648 vectors, strictness,
 * bounds, hostile input) and one hex. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "encoding.h"

/* RFC 4648 section 10 */
static const char *const PLAIN[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const STD[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
static const char *const URL[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};

static void test_rfc4648_vectors(void)
{
    char out[64];
    unsigned char dec[64];
    size_t i, n;
    struct cm_result res;
    for (i = 0; i < sizeof PLAIN / sizeof PLAIN[0]; i++) {
        size_t len = strlen(PLAIN[i]);
        CHECK(cm_base64_encoded_size(len, CM_BASE64_PAD) == strlen(STD[i]));
        CHECK(cm_base64_encode_into(PLAIN[i], len, CM_BASE64_PAD, out) == strlen(STD[i]));
        CHECK_STR(out, STD[i]);
        CHECK(cm_base64_encoded_size(len, CM_BASE64_URL) == strlen(URL[i]));
        CHECK(cm_base64_encode_into(PLAIN[i], len, CM_BASE64_URL, out) == strlen(URL[i]));
        CHECK_STR(out, URL[i]);
        CHECK(cm_base64_decode_into(STD[i], strlen(STD[i]), CM_BASE64_PAD, dec, sizeof dec, &n,
                                    &res) == CM_OK);
        CHECK(n == len && memcmp(dec, PLAIN[i], len) == 0);
        CHECK(cm_base64_decode_into(URL[i], strlen(URL[i]), CM_BASE64_URL, dec, sizeof dec, &n,
                                    &res) == CM_OK);
        CHECK(n == len && memcmp(dec, PLAIN[i], len) == 0);
        /* the shorthands agree */
        CHECK(cm_base64_encode(PLAIN[i], len, out) == strlen(STD[i]));
        CHECK_STR(out, STD[i]);
        CHECK(cm_base64url_encode(PLAIN[i], len, out) == strlen(URL[i]));
        CHECK_STR(out, URL[i]);
        CHECK(cm_base64_decode(STD[i], strlen(STD[i]), dec, &n, &res) == CM_OK && n == len);
        CHECK(cm_base64url_decode(URL[i], strlen(URL[i]), dec, &n, &res) == CM_OK && n == len);
    }
}

static void test_alphabets(void)
{
    static const unsigned char bin[] = {0xfb, 0xff, 0xfe};
    char out[8];
    unsigned char dec[8];
    size_t n;
    struct cm_result res;
    cm_base64_encode_into(bin, 3, CM_BASE64_PAD, out);
    CHECK_STR(out, "+//+");
    cm_base64_encode_into(bin, 3, CM_BASE64_URL, out);
    CHECK_STR(out, "-__-");
    /* each alphabet refuses the other's two characters */
    CHECK(cm_base64_decode_into("+//+", 4, CM_BASE64_URL, dec, sizeof dec, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(strstr(res.message, "base64url: ") == res.message);
    CHECK(cm_base64_decode_into("-__-", 4, CM_BASE64_PAD, dec, sizeof dec, &n, &res) == CM_ERR);
    CHECK(strstr(res.message, "base64: ") == res.message);
    CHECK(strstr(res.message, "offset 0") != NULL);
}

static void test_strict(void)
{
    /* every one of these has no decoding, or a second text for its bytes */
    static const char *const bad_std[] = {
        "Zg", "Zg=", "Zg===", "Z===", "Zh==", "Zm9=", "Zm8=Zm8=", "=Zm8", "Zm 8=", "Zm8\n",
        "Zm8\0", "Zg=a", "====", "Zm9vY===",
    };
    static const size_t bad_std_len[] = {2, 3, 5, 4, 4, 4, 8, 4, 5, 4, 4, 4, 4, 8};
    static const char *const bad_url[] = {"Zg==", "Z", "Zh", "Zm9", "Zm+v", "Zm/v", "Zm9v Zg", "Zm9vY"};
    unsigned char dec[32];
    size_t i, n = 99;
    struct cm_result res;
    for (i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++) {
        n = 99;
        if (cm_base64_decode_into(bad_std[i], bad_std_len[i], CM_BASE64_PAD, dec, sizeof dec, &n,
                                  &res) != CM_ERR)
            fprintf(stderr, "accepted std \"%s\"\n", bad_std[i]);
        CHECK(n == 0);
        CHECK_STR(res.code, "invalid");
    }
    for (i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++) {
        if (cm_base64_decode_into(bad_url[i], strlen(bad_url[i]), CM_BASE64_URL, dec, sizeof dec,
                                  &n, &res) != CM_ERR)
            fprintf(stderr, "accepted url \"%s\"\n", bad_url[i]);
        CHECK_STR(res.code, "invalid");
    }
    /* the offset named is the bad character's */
    CHECK(cm_base64_decode_into("Zm9v*mFy", 8, CM_BASE64_PAD, dec, sizeof dec, &n, &res) ==
          CM_ERR);
    CHECK(strstr(res.message, "offset 4") != NULL);
}

static void test_pem_bodies(void)
{
    /* CM_BASE64_SPACE: whitespace anywhere, still strict otherwise */
    static const char body[] = "\nZm9v\r\nYmE=\n";
    unsigned char dec[16];
    size_t n;
    struct cm_result res;
    CHECK(cm_base64_decode_into(body, strlen(body), CM_BASE64_PAD | CM_BASE64_SPACE, dec,
                                sizeof dec, &n, &res) == CM_OK);
    CHECK(n == 5 && memcmp(dec, "fooba", 5) == 0);
    CHECK(cm_base64_decode_into(body, strlen(body), CM_BASE64_PAD, dec, sizeof dec, &n, &res) ==
          CM_ERR);
    CHECK(cm_base64_decode_into("Zm9v\nYm", 7, CM_BASE64_PAD | CM_BASE64_SPACE, dec, sizeof dec,
                                &n, &res) == CM_ERR); /* padding still required */
    CHECK(cm_base64_decode_into("Zm8= \n", 6, CM_BASE64_PAD | CM_BASE64_SPACE, dec, sizeof dec,
                                &n, &res) == CM_OK && n == 2);
    CHECK(cm_base64_decode_into("Zm8=\nZm8=", 9, CM_BASE64_PAD | CM_BASE64_SPACE, dec,
                                sizeof dec, &n, &res) == CM_ERR); /* data after padding */
}

static void test_lines(void)
{
    unsigned char in[100];
    char out[256];
    unsigned char back[128];
    size_t i, n, len;
    struct cm_result res;
    for (i = 0; i < sizeof in; i++) in[i] = (unsigned char)(i * 7 + 3);
    /* 48 bytes: exactly one 64-column line */
    len = cm_base64_encode_into(in, 48, CM_BASE64_PAD | CM_BASE64_LINES, out);
    CHECK(len == 65 && len == cm_base64_encoded_size(48, CM_BASE64_PAD | CM_BASE64_LINES));
    CHECK(out[64] == '\n' && strchr(out, '\n') == out + 64);
    for (n = 0; n <= sizeof in; n++) {
        len = cm_base64_encode_into(in, n, CM_BASE64_PAD | CM_BASE64_LINES, out);
        CHECK(len == cm_base64_encoded_size(n, CM_BASE64_PAD | CM_BASE64_LINES));
        CHECK(n == 0 || out[len - 1] == '\n');
        CHECK(cm_base64_decode_into(out, len, CM_BASE64_PAD | CM_BASE64_SPACE, back, sizeof back,
                                    &i, &res) == CM_OK);
        CHECK(i == n && memcmp(back, in, n) == 0);
    }
}

static void test_bounds(void)
{
    unsigned char dec[8];
    size_t n;
    struct cm_result res;
    /* out_cap is honoured, to the byte */
    CHECK(cm_base64_decode_into("Zm9vYmFy", 8, CM_BASE64_PAD, dec, 6, &n, &res) == CM_OK && n == 6);
    CHECK(cm_base64_decode_into("Zm9vYmFy", 8, CM_BASE64_PAD, dec, 5, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(cm_base64_decode_into("Zm9vYg==", 8, CM_BASE64_PAD, dec, 4, &n, &res) == CM_OK && n == 4);
    CHECK(cm_base64_decode_into("Zm9vYg==", 8, CM_BASE64_PAD, dec, 3, &n, &res) == CM_ERR);
    CHECK(cm_base64_decode_into("", 0, CM_BASE64_PAD, dec, 0, &n, &res) == CM_OK && n == 0);
    CHECK(cm_base64_decoded_max(8) >= 6);
}

static void test_hostile(void)
{
    /* every byte value, every length up to 4 in every position: no crash,
     * and whatever decodes re-encodes to the same text (one text a value) */
    unsigned char text[4], dec[8];
    char again[16];
    size_t n;
    unsigned i, j;
    struct cm_result res;
    int unique = 1;
    for (i = 0; i < 256; i++) {
        for (j = 0; j < 256; j += 3) {
            text[0] = 'Q';
            text[1] = (unsigned char)i;
            text[2] = (unsigned char)j;
            text[3] = '=';
            if (cm_base64_decode_into((const char *)text, 4, CM_BASE64_PAD, dec, sizeof dec, &n,
                                      &res) == CM_OK) {
                cm_base64_encode_into(dec, n, CM_BASE64_PAD, again);
                if (memcmp(again, text, 4) != 0) unique = 0;
            }
            if (cm_base64_decode_into((const char *)text, 3, CM_BASE64_URL, dec, sizeof dec, &n,
                                      &res) == CM_OK) {
                cm_base64_encode_into(dec, n, CM_BASE64_URL, again);
                if (memcmp(again, text, 3) != 0) unique = 0;
            }
        }
    }
    CHECK(unique);
    /* a large random-ish input full of junk fails cleanly at its first bad byte */
    {
        size_t len = 1 << 16, k;
        char *junk = malloc(len);
        unsigned char *big = malloc(cm_base64_decoded_max(len));
        CHECK(junk && big);
        if (junk && big) {
            for (k = 0; k < len; k++) junk[k] = "QUJD"[k % 4];
            junk[len - 5] = '\x80';
            CHECK(cm_base64_decode_into(junk, len, CM_BASE64_PAD, big, cm_base64_decoded_max(len),
                                        &n, &res) == CM_ERR);
            CHECK(strstr(res.message, "offset 65531") != NULL);
        }
        free(junk); junk = NULL;
        free(big); big = NULL;
    }
}

static void test_hex(void)
{
    static const unsigned char bin[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    unsigned char back[4];
    size_t n;
    struct cm_result res;
    cm_hex_encode(bin, sizeof bin, out);
    CHECK_STR(out, "0001abff");
    cm_hex_encode(bin, 0, out);
    CHECK_STR(out, "");
    CHECK(cm_hex_decode("0001ABff", 8, back, sizeof back, &n, &res) == CM_OK);
    CHECK(n == 4 && memcmp(back, bin, 4) == 0);
    CHECK(cm_hex_decode("000", 3, back, sizeof back, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_hex_decode("00g1", 4, back, sizeof back, &n, &res) == CM_ERR);
    CHECK(strstr(res.message, "offset 2") != NULL);
    CHECK(cm_hex_decode("0001abff00", 10, back, sizeof back, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
}

int main(void)
{
    test_rfc4648_vectors();
    test_alphabets();
    test_strict();
    test_pem_bodies();
    test_lines();
    test_bounds();
    test_hostile();
    test_hex();
    return CHECK_DONE();
}
