/* fuzz_jws.c - the JWS and ARI parsers on untrusted bytes: cm_jws_verify on
 * the input as a flattened JWS (what a stub CA or a test reads from a
 * client) against the RFC 7515 A.3 key, cm_ari_cert_id on the input as
 * a certificate (PEM or DER, as a CA hands it out), and cm_jws_hmac_sign
 * with the input as the External Account Binding MAC key (base64url text a
 * CA hands out and an operator pastes into a policy).
 *
 * Properties (jws.h, ari.h): failures leave the outputs NULL / empty and
 * carry one of the documented codes; a verified JWS hands back exactly the
 * base64url-decoded members; an ARI ID is two non-empty base64url parts; an
 * EAB key is refused as "invalid" or "toobig" or signs a flattened JWS. */
#include <stdlib.h>
#include <string.h>

#include "ari.h"
#include "encoding.h"
#include "fuzz.h"
#include "jws.h"

/* RFC 7515 appendix A.3's P-256 public key */
static const char KEY[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEf83OJ3D2xF1Bg8vub9tLe1gHMzV7\n"
    "6e8Tus9uPHvRVEXH8UTNG72bfocs3+257rn0s2ldbqkLJK2KRiMohYjlrQ==\n"
    "-----END PUBLIC KEY-----\n";

static int is_code(const char *code, const char *const *codes)
{
    for (; *codes; codes++)
        if (strcmp(code, *codes) == 0) return 1;
    return 0;
}

static void check_verify(const char *in, size_t len)
{
    static const char *const codes[] = {"parse", "verify", "toobig", "ENOMEM", NULL};
    char *prot = (char *)"x", *payload = (char *)"x";
    size_t plen = 0, ylen = 0;
    struct cm_result res;
    int rc = cm_jws_verify(KEY, sizeof KEY - 1, in, len, &prot, &plen, &payload, &ylen, &res);
    if (rc != CM_OK) {
        FUZZ_CHECK(rc == CM_ERR && prot == NULL && payload == NULL);
        FUZZ_CHECK(is_code(res.code, codes));
        return;
    }
    FUZZ_CHECK(prot && payload && strlen(prot) <= plen && prot[plen] == '\0');
    FUZZ_CHECK(payload[ylen] == '\0');
    FUZZ_CHECK(plen <= len && ylen <= len);
    free(prot);
    free(payload);
}

static void check_ari(const char *in, size_t len)
{
    static const char *const codes[] = {"parse", "toobig", "noaki", "ENOMEM", NULL};
    char id[CM_ARI_CERT_ID_MAX];
    struct cm_result res;
    const char *dot;
    unsigned char bin[CM_ARI_CERT_ID_MAX];
    size_t n;
    if (cm_ari_cert_id(in, len, id, sizeof id, &res) != CM_OK) {
        FUZZ_CHECK(id[0] == '\0');
        FUZZ_CHECK(is_code(res.code, codes));
        return;
    }
    dot = strchr(id, '.');
    FUZZ_CHECK(dot && dot > id && dot[1] != '\0' && !strchr(dot + 1, '.'));
    FUZZ_CHECK(cm_base64url_decode(id, (size_t)(dot - id), bin, &n, NULL) == CM_OK && n > 0);
    FUZZ_CHECK(cm_base64url_decode(dot + 1, strlen(dot + 1), bin, &n, NULL) == CM_OK && n > 0);
}

static void check_hmac(const char *in, size_t len)
{
    static const char *const codes[] = {"invalid", "toobig", "ENOMEM", NULL};
    static const char PROT[] = "{\"alg\":\"HS256\",\"kid\":\"kid-1\",\"url\":\"https://ca.test/acct\"}";
    static const char JWK[] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"x\",\"y\":\"y\"}";
    char *out = (char *)"x";
    size_t out_len = 0;
    struct cm_result res;
    if (cm_jws_hmac_sign(in, len, PROT, sizeof PROT - 1, JWK, sizeof JWK - 1, &out, &out_len, &res) != CM_OK) {
        FUZZ_CHECK(out == NULL && is_code(res.code, codes));
        return;
    }
    FUZZ_CHECK(out && strlen(out) == out_len && out[0] == '{' && strstr(out, "\"signature\":\""));
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_verify((const char *)data, size);
    check_hmac((const char *)data, size);
    check_ari((const char *)data, size);
    return 0;
}
