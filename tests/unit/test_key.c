/* test_key.c - the key loaders a JWS signer uses (generate, match and public
 * PEM are covered in test_x509.c). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "key.h"

static void test_load_and_type(const char *type, const char *want)
{
    char *pem = NULL, *pub = NULL, *pub2 = NULL;
    struct evp_pkey_st *key = NULL, *pubkey = NULL;
    char name[16];
    size_t len = 0;
    struct cm_result res;

    CHECK(cm_key_generate(type, &pem, &res) == CM_OK);
    if (!pem) return;
    CHECK(cm_key_load_private(pem, strlen(pem), &key, &res) == CM_OK);
    CHECK(cm_key_type(key, name, sizeof name, &res) == CM_OK);
    CHECK_STR(name, want);
    CHECK(cm_key_type(key, name, 3, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    /* the public key given back is the one cm_key_public_pem computes */
    CHECK(cm_key_public_pem_of(key, &pub, &len, &res) == CM_OK);
    CHECK(pub && len == strlen(pub) && strstr(pub, "-----BEGIN PUBLIC KEY-----") == pub);
    CHECK(cm_key_public_pem(pem, strlen(pem), &pub2, &res) == CM_OK);
    CHECK_STR(pub, pub2);
    /* a public key loads as public, never as private */
    CHECK(cm_key_load_public(pub, len, &pubkey, &res) == CM_OK);
    CHECK(cm_key_type(pubkey, name, sizeof name, &res) == CM_OK);
    CHECK_STR(name, want);
    cm_key_free(pubkey); pubkey = NULL;
    CHECK(cm_key_load_private(pub, len, &pubkey, &res) == CM_ERR && pubkey == NULL);
    CHECK_STR(res.code, "parse");
    cm_key_free(key); key = NULL;
    free(pem); pem = NULL;
    free(pub); pub = NULL;
    free(pub2); pub2 = NULL;
}

static void test_refusals(void)
{
    struct evp_pkey_st *key = (struct evp_pkey_st *)&key;
    char *pem = (char *)"x";
    char name[16];
    struct cm_result res;
    CHECK(cm_key_load_private("garbage", 7, &key, &res) == CM_ERR && key == NULL);
    CHECK_STR(res.code, "parse");
    CHECK(cm_key_load_private("", 0, &key, &res) == CM_ERR && key == NULL);
    CHECK(cm_key_load_public("garbage", 7, &key, &res) == CM_ERR && key == NULL);
    CHECK(cm_key_public_pem_of(NULL, &pem, NULL, &res) == CM_ERR && pem == NULL);
    CHECK(cm_key_type(NULL, name, sizeof name, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    cm_key_free(NULL);
}

int main(void)
{
    test_load_and_type(NULL, "p256");
    test_load_and_type("p384", "p384");
    test_load_and_type("rsa2048", "rsa2048");
    test_refusals();
    return CHECK_DONE();
}
