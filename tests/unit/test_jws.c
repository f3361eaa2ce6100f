/* test_jws.c - JWK, thumbprints, JWS signing and verifying, ARI IDs, with
 * the RFC 7515 appendix A, RFC 7638 section 3.1 and RFC 9773 appendix A
 * vectors (keys: tests/fixtures/jws/, see its README). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ari.h"
#include "check.h"
#include "encoding.h"
#include "jws.h"
#include "key.h"

#define FIXTURES "fixtures/jws/"

/* RFC 7515 A.1-A.3: the payload (with its CR LFs) and the A.1 header. */
static const char PAYLOAD[] =
    "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
static const char PAYLOAD_B64[] =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
    "cnVlfQ";
static const char A1_HEADER[] = "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
static const char A1_KEY[] =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
static const char A1_SIG[] = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
static const char A2_N[] =
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0B"
    "m4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5"
    "z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7"
    "aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
static const char A2_SIG[] =
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2F"
    "p5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQB"
    "MHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeY"
    "I2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
static const char A3_JWK[] =
    "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";
static const char A3_SIG[] =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
static const char RFC7638_N[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJE"
    "CPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6"
    "WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        if (len) *len = (size_t)n;
    } else {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static struct cm_jws_signer *signer_from(const char *file)
{
    size_t len = 0;
    char *pem = slurp(file, &len);
    struct cm_jws_signer *s = NULL;
    struct cm_result res;
    CHECK(pem != NULL);
    if (!pem) return NULL;
    if (cm_jws_signer_new(pem, len, &s, &res) != CM_OK) fprintf(stderr, "%s\n", res.message);
    free(pem);
    return s;
}

/* The "signature" member's value of a flattened JWS, copied into out. */
static void member(const char *jws, const char *name, char *out, size_t cap)
{
    char key[32];
    const char *p, *q;
    out[0] = '\0';
    snprintf(key, sizeof key, "\"%s\":\"", name);
    if (!(p = strstr(jws, key))) return;
    p += strlen(key);
    if (!(q = strchr(p, '"')) || (size_t)(q - p) >= cap) return;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
}

/* A flattened JWS from the RFC's compact parts. */
static char *flattened(const char *prot_b64, const char *payload_b64, const char *sig_b64)
{
    size_t n = strlen(prot_b64) + strlen(payload_b64) + strlen(sig_b64) + 64;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", prot_b64,
                 payload_b64, sig_b64);
    return s;
}

static int verify_with(const char *key_file, const char *jws, struct cm_result *res,
                       char **prot, char **payload)
{
    size_t klen = 0;
    char *key = slurp(key_file, &klen);
    int rc;
    *prot = *payload = NULL;
    rc = cm_jws_verify(key, klen, jws, strlen(jws), prot, NULL, payload, NULL, res);
    free(key);
    return rc;
}

/* RFC 7515 A.1: HS256 over the RFC's header bytes gives the RFC's MAC. */
static void test_hs256_vector(void)
{
    char *out = NULL, sig[128], prot[128];
    size_t len = 0;
    struct cm_result res;
    CHECK(cm_jws_hmac_sign(A1_KEY, strlen(A1_KEY), A1_HEADER, strlen(A1_HEADER), PAYLOAD,
                           strlen(PAYLOAD), &out, &len, &res) == CM_OK);
    CHECK(out && strlen(out) == len);
    if (out) {
        member(out, "signature", sig, sizeof sig);
        CHECK_STR(sig, A1_SIG);
        member(out, "protected", prot, sizeof prot);
        CHECK_STR(prot, "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9");
        member(out, "payload", sig, sizeof sig);
        CHECK_STR(sig, PAYLOAD_B64);
    }
    free(out);
    /* bad keys: named, nothing allocated */
    out = NULL;
    CHECK(cm_jws_hmac_sign("", 0, "{}", 2, "", 0, &out, NULL, &res) == CM_ERR && !out);
    CHECK_STR(res.code, "invalid");
    CHECK(strstr(res.message, "empty") != NULL);
    CHECK(cm_jws_hmac_sign("abc+def", 7, "{}", 2, "", 0, &out, NULL, &res) == CM_ERR && !out);
    CHECK_STR(res.code, "invalid");
    CHECK(strstr(res.message, "not base64url") != NULL && strstr(res.message, "offset") != NULL);
    CHECK(cm_jws_hmac_sign("YWJj==", 6, "{}", 2, "", 0, &out, NULL, &res) == CM_ERR && !out);
    CHECK_STR(res.code, "invalid");
    {
        char big[CM_JWS_MAX_MAC_KEY + 2];
        memset(big, 'A', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        CHECK(cm_jws_hmac_sign(big, strlen(big), "{}", 2, "", 0, &out, NULL, &res) == CM_ERR);
        CHECK_STR(res.code, "invalid");
    }
    CHECK(cm_jws_hmac_sign(A1_KEY, strlen(A1_KEY), "", 0, "", 0, &out, NULL, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
}

/* RFC 7515 A.2: RS256 is deterministic, so our signature is the RFC's. */
static void test_rs256_vector(void)
{
    struct cm_jws_signer *s = signer_from(FIXTURES "rfc7515_a2_rsa.pem");
    char *out = NULL, *jwk_want, sig[512], *prot = NULL, *payload = NULL, *rfc;
    size_t n;
    struct cm_result res;
    if (!s) return;
    CHECK_STR(cm_jws_signer_alg(s), "RS256");
    n = strlen(A2_N) + 64;
    jwk_want = malloc(n);
    snprintf(jwk_want, n, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"%s\"}", A2_N);
    CHECK_STR(cm_jws_signer_jwk(s, NULL), jwk_want);
    free(jwk_want);
    CHECK(cm_jws_sign(s, "{\"alg\":\"RS256\"}", 15, PAYLOAD, strlen(PAYLOAD), &out, NULL, &res) ==
          CM_OK);
    if (out) {
        member(out, "signature", sig, sizeof sig);
        CHECK_STR(sig, A2_SIG);
        member(out, "protected", sig, sizeof sig);
        CHECK_STR(sig, "eyJhbGciOiJSUzI1NiJ9");
        CHECK(verify_with(FIXTURES "rfc7515_a2_rsa.pem", out, &res, &prot, &payload) == CM_OK);
        CHECK_STR(prot, "{\"alg\":\"RS256\"}");
        CHECK_STR(payload, PAYLOAD);
        free(prot);
        free(payload);
    }
    free(out);
    /* the RFC's own JWS verifies; one flipped signature character does not */
    rfc = flattened("eyJhbGciOiJSUzI1NiJ9", PAYLOAD_B64, A2_SIG);
    CHECK(verify_with(FIXTURES "rfc7515_a2_rsa.pem", rfc, &res, &prot, &payload) == CM_OK);
    free(prot);
    free(payload);
    rfc[strlen(rfc) - 4] = rfc[strlen(rfc) - 4] == 'A' ? 'B' : 'A';
    CHECK(verify_with(FIXTURES "rfc7515_a2_rsa.pem", rfc, &res, &prot, &payload) == CM_ERR);
    CHECK_STR(res.code, "verify");
    CHECK(prot == NULL && payload == NULL);
    free(rfc);
    cm_jws_signer_free(s);
}

/* RFC 7515 A.3: ECDSA is randomised, so: the RFC's JWS verifies with the
 * key, and ours (raw r||s, 64 bytes) verifies too and differs each time. */
static void test_es256_vector(void)
{
    struct cm_jws_signer *s = signer_from(FIXTURES "rfc7515_a3_p256.pem");
    char *a = NULL, *b = NULL, *rfc, sa[128], sb[128], *prot = NULL, *payload = NULL;
    unsigned char raw[128];
    size_t raw_len = 0;
    struct cm_result res;
    if (!s) return;
    CHECK_STR(cm_jws_signer_alg(s), "ES256");
    CHECK_STR(cm_jws_signer_jwk(s, NULL), A3_JWK);
    rfc = flattened("eyJhbGciOiJFUzI1NiJ9", PAYLOAD_B64, A3_SIG);
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", rfc, &res, &prot, &payload) == CM_OK);
    CHECK_STR(prot, "{\"alg\":\"ES256\"}");
    CHECK_STR(payload, PAYLOAD);
    free(prot);
    free(payload);
    /* the RFC key with another algorithm in the header is refused */
    free(rfc);
    rfc = flattened("eyJhbGciOiJSUzI1NiJ9", PAYLOAD_B64, A3_SIG);
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", rfc, &res, &prot, &payload) == CM_ERR);
    CHECK_STR(res.code, "verify");
    CHECK(strstr(res.message, "\"RS256\"") != NULL);
    free(rfc);

    CHECK(cm_jws_sign(s, "{\"alg\":\"ES256\"}", 15, PAYLOAD, strlen(PAYLOAD), &a, NULL, &res) ==
          CM_OK);
    CHECK(cm_jws_sign(s, "{\"alg\":\"ES256\"}", 15, PAYLOAD, strlen(PAYLOAD), &b, NULL, &res) ==
          CM_OK);
    if (a && b) {
        member(a, "signature", sa, sizeof sa);
        member(b, "signature", sb, sizeof sb);
        CHECK(strcmp(sa, sb) != 0);
        CHECK(cm_base64url_decode(sa, strlen(sa), raw, &raw_len, &res) == CM_OK);
        CHECK(raw_len == 64);
        CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", a, &res, &prot, &payload) == CM_OK);
        free(prot);
        free(payload);
        CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", b, &res, &prot, &payload) == CM_OK);
        free(prot);
        free(payload);
    }
    free(a);
    free(b);
    /* POST-as-GET: an empty payload is "payload":"" */
    a = NULL;
    CHECK(cm_jws_sign(s, "{\"alg\":\"ES256\"}", 15, "", 0, &a, NULL, &res) == CM_OK);
    CHECK(a && strstr(a, "\"payload\":\"\",") != NULL);
    if (a) {
        CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", a, &res, &prot, &payload) == CM_OK);
        CHECK_STR(payload, "");
        free(prot);
        free(payload);
    }
    free(a);
    cm_jws_signer_free(s);
}

/* RFC 7638 section 3.1: the thumbprint of the example RSA key. */
static void test_thumbprint_vector(void)
{
    size_t len = 0, jlen = 0;
    char *pem = slurp(FIXTURES "rfc7638_rsa_public.pem", &len), *jwk = NULL, *want;
    char tp[CM_JWS_THUMBPRINT_LEN + 1];
    struct evp_pkey_st *key = NULL;
    const char *alg = NULL;
    struct cm_result res;
    CHECK(pem != NULL);
    if (!pem) return;
    CHECK(cm_key_load_public(pem, len, &key, &res) == CM_OK);
    CHECK(cm_jws_jwk_of_key(key, &jwk, &jlen, &alg, &res) == CM_OK);
    CHECK_STR(alg, "RS256");
    want = malloc(strlen(RFC7638_N) + 64);
    sprintf(want, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"%s\"}", RFC7638_N);
    CHECK_STR(jwk, want);
    CHECK(jwk && jlen == strlen(jwk));
    CHECK(cm_jws_thumbprint(jwk, jlen, tp, &res) == CM_OK);
    CHECK_STR(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(want);
    free(jwk);
    cm_key_free(key);
    free(pem);
}

/* Generated keys of each type: alg, JWK shape (fixed-length EC coordinates),
 * thumbprint of the JWK, signature length, verification. */
static void test_generated_keys(void)
{
    static const struct { const char *type, *alg, *crv; size_t xlen, siglen; } cases[] = {
        {"p256", "ES256", "P-256", 43, 86},
        {"p384", "ES384", "P-384", 64, 128},
        {"rsa2048", "RS256", NULL, 0, 342},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *pem = NULL, *out = NULL, *prot = NULL, *payload = NULL, sig[1024], x[128];
        char tp[CM_JWS_THUMBPRINT_LEN + 1], hdr[64];
        struct cm_jws_signer *s = NULL;
        const char *jwk;
        size_t jlen = 0;
        struct cm_result res;
        CHECK(cm_key_generate(cases[i].type, &pem, &res) == CM_OK);
        CHECK(cm_jws_signer_new(pem, strlen(pem), &s, &res) == CM_OK);
        if (!s) {
            free(pem);
            continue;
        }
        CHECK_STR(cm_jws_signer_alg(s), cases[i].alg);
        jwk = cm_jws_signer_jwk(s, &jlen);
        CHECK(strlen(jwk) == jlen && strchr(jwk, ' ') == NULL);
        if (cases[i].crv) {
            CHECK(strncmp(jwk, "{\"crv\":\"", 8) == 0 && strstr(jwk, cases[i].crv) != NULL);
            member(jwk, "x", x, sizeof x);
            CHECK(strlen(x) == cases[i].xlen);
            member(jwk, "y", x, sizeof x);
            CHECK(strlen(x) == cases[i].xlen);
        } else {
            CHECK(strncmp(jwk, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"", 29) == 0);
        }
        CHECK(cm_jws_thumbprint(jwk, jlen, tp, &res) == CM_OK);
        CHECK_STR(cm_jws_signer_thumbprint(s), tp);
        CHECK(strlen(tp) == CM_JWS_THUMBPRINT_LEN);
        snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"nonce\":\"n\"}", cases[i].alg);
        CHECK(cm_jws_sign(s, hdr, strlen(hdr), "{}", 2, &out, NULL, &res) == CM_OK);
        if (out) {
            member(out, "signature", sig, sizeof sig);
            CHECK(strlen(sig) == cases[i].siglen);
            CHECK(cm_jws_verify(pem, strlen(pem), out, strlen(out), &prot, NULL, &payload, NULL,
                                &res) == CM_OK);
            CHECK_STR(prot, hdr);
            CHECK_STR(payload, "{}");
            free(prot);
            free(payload);
        }
        free(out);
        cm_jws_signer_free(s);
        free(pem);
    }
}

static void test_refusals(void)
{
    struct cm_jws_signer *s = (struct cm_jws_signer *)&s;
    char *out = (char *)"x", *prot = NULL, *payload = NULL;
    struct cm_result res;
    size_t n = 0;
    char *pem = slurp(FIXTURES "rfc7638_rsa_public.pem", &n);
    /* not a key; a public key; an Ed25519 key; a small RSA key */
    CHECK(cm_jws_signer_new("nope", 4, &s, &res) == CM_ERR && s == NULL);
    CHECK_STR(res.code, "parse");
    CHECK(cm_jws_signer_new(pem, n, &s, &res) == CM_ERR && s == NULL);
    CHECK_STR(res.code, "parse");
    free(pem);
    {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        char *jwk = NULL;
        CHECK(k != NULL);
        CHECK(cm_jws_jwk_of_key(k, &jwk, NULL, NULL, &res) == CM_ERR && jwk == NULL);
        CHECK_STR(res.code, "invalid");
        CHECK(strstr(res.message, "ed25519") != NULL);
        EVP_PKEY_free(k);
    }
    {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
        char *jwk = NULL;
        CHECK(k != NULL);
        CHECK(cm_jws_jwk_of_key(k, &jwk, NULL, NULL, &res) == CM_ERR && jwk == NULL);
        CHECK_STR(res.code, "invalid");
        CHECK(strstr(res.message, "1024") != NULL);
        EVP_PKEY_free(k);
    }
    /* oversized header or payload */
    s = signer_from(FIXTURES "rfc7515_a3_p256.pem");
    if (s) {
        char *big = malloc(CM_JWS_MAX_INPUT + 1);
        memset(big, 'a', CM_JWS_MAX_INPUT + 1);
        CHECK(cm_jws_sign(s, "{}", 2, big, CM_JWS_MAX_INPUT + 1, &out, NULL, &res) == CM_ERR);
        CHECK(out == NULL);
        CHECK_STR(res.code, "toobig");
        free(big);
        cm_jws_signer_free(s);
    }
    /* malformed JWS texts name what is wrong */
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", "[1]", &res, &prot, &payload) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem", "{\"protected\":\"e30\",\"payload\":\"\"}",
                      &res, &prot, &payload) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(strstr(res.message, "\"signature\"") != NULL);
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem",
                      "{\"protected\":\"e30=\",\"payload\":\"\",\"signature\":\"\"}", &res, &prot,
                      &payload) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(verify_with(FIXTURES "rfc7515_a3_p256.pem",
                      "{\"protected\":\"eyJhbGciOiJFUzI1NiJ9\",\"payload\":\"\",\"signature\":"
                      "\"AAAA\"}",
                      &res, &prot, &payload) == CM_ERR);
    CHECK_STR(res.code, "verify");
    CHECK(prot == NULL && payload == NULL);
}

/* RFC 9773 appendix A: the example certificate's ID. */
static void test_ari_cert_id(void)
{
    size_t len = 0;
    char *pem = slurp(FIXTURES "rfc9773_appendix_a.pem", &len), id[CM_ARI_CERT_ID_MAX];
    struct cm_result res;
    CHECK(pem != NULL);
    if (!pem) return;
    CHECK(cm_ari_cert_id(pem, len, id, sizeof id, &res) == CM_OK);
    CHECK_STR(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    CHECK(cm_ari_cert_id(pem, len, id, 10, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(cm_ari_cert_id("junk", 4, id, sizeof id, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    free(pem);
    /* no AKI: "noaki"; a serial with its top bit clear has no 0x00 */
    pem = slurp(FIXTURES "no_aki.pem", &len);
    CHECK(pem != NULL);
    if (!pem) return;
    CHECK(cm_ari_cert_id(pem, len, id, sizeof id, &res) == CM_ERR);
    CHECK_STR(res.code, "noaki");
    CHECK(id[0] == '\0');
    free(pem);
    pem = slurp(FIXTURES "aki_small_serial.der", &len);
    CHECK(pem != NULL);
    if (!pem) return;
    CHECK(cm_ari_cert_id(pem, len, id, sizeof id, &res) == CM_OK);
    CHECK_STR(id, "AQIDBA.ASM");
    free(pem);
}

int main(void)
{
    test_hs256_vector();
    test_rs256_vector();
    test_es256_vector();
    test_thumbprint_vector();
    test_generated_keys();
    test_refusals();
    test_ari_cert_id();
    return CHECK_DONE();
}
