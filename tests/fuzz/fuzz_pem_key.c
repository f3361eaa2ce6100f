/* fuzz_pem_key.c - the key and CSR loaders on untrusted bytes: what storage
 * hands back as a .key (an account key, a certificate's key, an order's CSR
 * key), what an operator points a policy at, and the CSRs the internal
 * issuer and stub CAs read.
 *
 * Every input goes to cm_key_load_private, cm_key_load_public,
 * cm_key_public_pem, cm_jws_signer_new, cm_key_matches_cert (as the key
 * against a fixture certificate, and as the certificate against its key) and
 * cm_csr_parse.  Properties (key.h, jws.h, x509.h): failures leave outputs
 * NULL/zeroed with a documented code; a loaded private key has a type, a
 * public half that cm_key_load_public and cm_key_public_pem agree on, and a
 * JWK whose thumbprint is the signer's; a signer's JWS verifies under that
 * public key; a CSR made with the key parses back with the name asked for. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fuzz.h"
#include "jws.h"
#include "key.h"
#include "x509.h"

static char *leaf_pem, *leaf_key;
static size_t leaf_pem_len, leaf_key_len;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = '\0';
        *len = (size_t)n;
    } else {
        free(buf); buf = NULL;
    }
    fclose(f);
    return buf;
}

static void load_fixtures(void)
{
    if (leaf_pem) return;
    leaf_pem = slurp(CM_FUZZ_FIXTURES "/ok_leaf.pem", &leaf_pem_len);
    leaf_key = slurp(CM_FUZZ_FIXTURES "/ok_leaf.key", &leaf_key_len);
    if (!leaf_pem || !leaf_key) {
        fprintf(stderr, "fuzz_pem_key: cannot read the fixtures in %s\n", CM_FUZZ_FIXTURES);
        abort();
    }
}

static int is_code(const struct cm_result *res, const char *const *codes)
{
    for (; *codes; codes++)
        if (strcmp(res->code, *codes) == 0) return 1;
    return 0;
}

static const char *const LOAD_CODES[] = {"parse", "toobig", "ENOMEM", NULL};

/* The signer made from the input: its JWK and thumbprint, and a JWS that
 * verifies under pub. */
static void check_signer(const char *in, size_t len, const char *pub)
{
    static const char *const codes[] = {"parse", "toobig", "invalid", "crypto", "ENOMEM", NULL};
    static const char PROT[] = "{\"alg\":\"x\",\"nonce\":\"n\",\"url\":\"https://ca.test/x\"}";
    struct cm_jws_signer *s = (struct cm_jws_signer *)1;
    struct cm_result res;
    char thumb[CM_JWS_THUMBPRINT_LEN + 1];
    char *jws = NULL, *prot = NULL, *payload = NULL;
    const char *jwk;
    size_t jwk_len = 0, jws_len = 0;
    if (cm_jws_signer_new(in, len, &s, &res) != CM_OK) {
        FUZZ_CHECK(s == NULL && is_code(&res, codes));
        return;
    }
    FUZZ_CHECK(pub != NULL); /* a signer's key is a private key */
    jwk = cm_jws_signer_jwk(s, &jwk_len);
    FUZZ_CHECK(jwk && strlen(jwk) == jwk_len && jwk[0] == '{');
    FUZZ_CHECK(cm_jws_thumbprint(jwk, jwk_len, thumb, &res) == CM_OK);
    FUZZ_CHECK(strcmp(thumb, cm_jws_signer_thumbprint(s)) == 0);
    FUZZ_CHECK(cm_jws_sign(s, PROT, sizeof PROT - 1, "{}", 2, &jws, &jws_len, &res) == CM_OK);
    /* verify wants the header's alg to be the key's: sign once more with it */
    free(jws); jws = NULL;
    {
        char hdr[128];
        int n = snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"nonce\":\"n\"}", cm_jws_signer_alg(s));
        FUZZ_CHECK(n > 0 && (size_t)n < sizeof hdr);
        FUZZ_CHECK(cm_jws_sign(s, hdr, (size_t)n, "{}", 2, &jws, &jws_len, &res) == CM_OK);
        FUZZ_CHECK(cm_jws_verify(pub, strlen(pub), jws, jws_len, &prot, NULL, &payload, NULL, &res) == CM_OK);
        FUZZ_CHECK(strcmp(prot, hdr) == 0 && strcmp(payload, "{}") == 0);
    }
    free(prot); prot = NULL;
    free(payload); payload = NULL;
    free(jws); jws = NULL;
    cm_jws_signer_free(s); s = NULL;
}

static void check_csr(const unsigned char *in, size_t len)
{
    static const char *const codes[] = {"parse", "verify", "toobig", "ENOMEM", NULL};
    struct cm_csr_info info;
    struct cm_result res;
    size_t i;
    memset(&info, 0xff, sizeof info);
    if (cm_csr_parse(in, len, &info, &res) != CM_OK) {
        FUZZ_CHECK(info.cn == NULL && info.public_key_pem == NULL && info.names.count == 0);
        FUZZ_CHECK(is_code(&res, codes));
        return;
    }
    FUZZ_CHECK(info.public_key_pem != NULL);
    for (i = 0; i < info.names.count; i++) FUZZ_CHECK(info.names.items[i] != NULL);
    cm_csr_info_free(&info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct evp_pkey_st *priv = (struct evp_pkey_st *)1, *pub = (struct evp_pkey_st *)1;
    struct cm_result res;
    char *pub_pem = NULL, *pub_of_priv = NULL, *pub2 = NULL, *jwk = NULL, *csr = NULL;
    unsigned char *csr_der = NULL;
    size_t csr_der_len = 0;
    char type[16];
    int rc;

    load_fixtures();
    rc = cm_key_load_private(in, size, &priv, &res);
    if (rc != CM_OK) {
        FUZZ_CHECK(priv == NULL && is_code(&res, LOAD_CODES));
    } else {
        const char *alg = NULL;
        const char *const names[] = {"fuzz.example"};
        struct cm_csr_info info;
        FUZZ_CHECK(priv != NULL);
        FUZZ_CHECK(cm_key_public_pem_of(priv, &pub_of_priv, NULL, &res) == CM_OK);
        if (cm_key_type(priv, type, sizeof type, &res) == CM_OK) FUZZ_CHECK(type[0] != '\0');
        if (cm_jws_jwk_of_key(priv, &jwk, NULL, &alg, &res) == CM_OK) FUZZ_CHECK(jwk[0] == '{' && alg);
        else FUZZ_CHECK(jwk == NULL);
        /* a CSR with the key parses back with the name (Ed25519 and others may be refused) */
        if (cm_csr_create(in, size, names, 1, &csr, &csr_der, &csr_der_len, &res) == CM_OK) {
            FUZZ_CHECK(cm_csr_parse((unsigned char *)csr, strlen(csr), &info, &res) == CM_OK);
            FUZZ_CHECK(info.names.count == 1 && strcmp(info.names.items[0], "fuzz.example") == 0);
            FUZZ_CHECK(strcmp(info.public_key_pem, pub_of_priv) == 0);
            cm_csr_info_free(&info);
        } else {
            FUZZ_CHECK(csr == NULL && csr_der == NULL);
        }
    }
    rc = cm_key_load_public(in, size, &pub, &res);
    if (rc != CM_OK) {
        FUZZ_CHECK(pub == NULL && is_code(&res, LOAD_CODES));
        FUZZ_CHECK(priv == NULL); /* a private key always has a public half */
    } else {
        FUZZ_CHECK(cm_key_public_pem_of(pub, &pub2, NULL, &res) == CM_OK);
        if (pub_of_priv) FUZZ_CHECK(strcmp(pub2, pub_of_priv) == 0);
    }
    if (cm_key_public_pem(in, size, &pub_pem, &res) == CM_OK) {
        FUZZ_CHECK(pub2 && strcmp(pub_pem, pub2) == 0);
    } else {
        FUZZ_CHECK(pub_pem == NULL);
    }
    check_signer(in, size, pub_of_priv);
    /* as the key of a stored certificate, and as the certificate of a stored key */
    rc = cm_key_matches_cert(leaf_pem, leaf_pem_len, in, size, &res);
    FUZZ_CHECK(rc == CM_OK || strcmp(res.code, "mismatch") == 0 || strcmp(res.code, "parse") == 0 ||
               strcmp(res.code, "toobig") == 0);
    if (rc == CM_OK) FUZZ_CHECK(priv != NULL);
    rc = cm_key_matches_cert(in, size, leaf_key, leaf_key_len, &res);
    FUZZ_CHECK(rc == CM_OK || strcmp(res.code, "mismatch") == 0 || strcmp(res.code, "parse") == 0 ||
               strcmp(res.code, "toobig") == 0);
    check_csr(data, size);

    free(pub_pem); pub_pem = NULL;
    free(pub_of_priv); pub_of_priv = NULL;
    free(pub2); pub2 = NULL;
    free(jwk); jwk = NULL;
    free(csr); csr = NULL;
    free(csr_der); csr_der = NULL;
    cm_key_free(priv == (struct evp_pkey_st *)1 ? NULL : priv);
    cm_key_free(pub == (struct evp_pkey_st *)1 ? NULL : pub);
    return 0;
}
