/* key.c - generating, loading and matching keys on OpenSSL. */
#include "key.h"
#include "x509.h"
#include "x509_ssl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* ------------------------------------------------------------------------ */
/* OpenSSL-typed loaders (x509_ssl.h)                                       */

/* Never prompt on the terminal for an encrypted key: a daemon has none
 * (x509_ssl.h). */
int cm_ssl_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

EVP_PKEY *cm_ssl_load_private_key(const char *pem, size_t len, const char *what,
                                  struct cm_result *res)
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    if (cm_ssl_check_input(pem, len, what, res) != CM_OK) return NULL;
    if (!(bio = BIO_new_mem_buf(pem, (int)len))) {
        cm_fail_ssl(res, "ENOMEM", "%s: out of memory", what);
        return NULL;
    }
    if (!(pkey = PEM_read_bio_PrivateKey(bio, NULL, cm_ssl_no_password, NULL)))
        cm_fail_ssl(res, "parse", "%s: not a PEM private key (or an encrypted one)", what);
    BIO_free(bio); bio = NULL;
    return pkey;
}

int cm_ssl_key_self_check(EVP_PKEY *key, const char *what, struct cm_result *res)
{
    static const unsigned char msg[] = "certmaint: does this key sign what it verifies?";
    EVP_MD_CTX *ctx = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int id = EVP_PKEY_get_base_id(key), ret = CM_ERR;
    const EVP_MD *md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();

    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestSignInit(ctx, NULL, md, NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &sig_len, msg, sizeof msg - 1) != 1 || !(sig = malloc(sig_len ? sig_len : 1)) ||
        EVP_DigestSign(ctx, sig, &sig_len, msg, sizeof msg - 1) != 1) {
        cm_fail_ssl(res, "parse", "%s: the private key cannot sign (damaged?)", what);
        goto out;
    }
    EVP_MD_CTX_free(ctx);
    if (!(ctx = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) != 1 ||
        EVP_DigestVerify(ctx, sig, sig_len, msg, sizeof msg - 1) != 1) {
        cm_fail_ssl(res, "parse", "%s: the private key's parts do not agree: its signatures do not verify "
                    "under its own public key (a damaged key file?)", what);
        goto out;
    }
    ret = CM_OK;
out:
    free(sig); sig = NULL;
    EVP_MD_CTX_free(ctx); ctx = NULL;
    return ret;
}

EVP_PKEY *cm_ssl_load_public_key(const char *pem, size_t len, const char *what,
                                 struct cm_result *res)
{
    static const char pub[] = "-----BEGIN PUBLIC KEY-----";
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    if (!pem || len == 0 || len > CM_X509_MAX_INPUT || !memmem(pem, len, pub, sizeof pub - 1))
        return cm_ssl_load_private_key(pem, len, what, res);
    if (!(bio = BIO_new_mem_buf(pem, (int)len))) {
        cm_fail_ssl(res, "ENOMEM", "%s: out of memory", what);
        return NULL;
    }
    if (!(pkey = PEM_read_bio_PUBKEY(bio, NULL, cm_ssl_no_password, NULL)))
        cm_fail_ssl(res, "parse", "%s: not a PEM public key", what);
    BIO_free(bio); bio = NULL;
    return pkey;
}

/* ------------------------------------------------------------------------ */
/* keys                                                                     */

static char *private_key_pem(EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (bio && PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1)
        s = cm_ssl_bio_string(bio, NULL);
    BIO_free(bio); bio = NULL;
    return s;
}

char *cm_ssl_public_key_pem(const EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (bio && PEM_write_bio_PUBKEY(bio, pkey) == 1) s = cm_ssl_bio_string(bio, NULL);
    BIO_free(bio); bio = NULL;
    return s;
}

int cm_key_generate(const char *type, char **pem, struct cm_result *res)
{
    EVP_PKEY *pkey = NULL;
    int ret = CM_ERR;

    *pem = NULL;
    if (!type || !*type || strcmp(type, "p256") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    else if (strcmp(type, "p384") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    else if (strcmp(type, "rsa2048") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    else if (strcmp(type, "rsa4096") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
    else
        return cm_fail(res, "invalid",
                       "unknown key type \"%.40s\" (want p256, p384, rsa2048 or rsa4096)", type);
    if (!pkey) {
        ret = cm_fail_ssl(res, "crypto", "generating a %s key failed", type ? type : "p256");
        goto out;
    }
    if (!(*pem = private_key_pem(pkey))) {
        ret = cm_fail_ssl(res, "crypto", "writing the new key as PEM failed");
        goto out;
    }
    ret = CM_OK;
out:
    EVP_PKEY_free(pkey); pkey = NULL;
    return ret;
}

int cm_key_matches_cert(const char *cert, size_t cert_len, const char *key_pem, size_t key_len,
                        struct cm_result *res)
{
    X509 *x = NULL;
    EVP_PKEY *key = NULL;
    EVP_PKEY *pub;
    int ret = CM_ERR;

    if (!(x = cm_ssl_load_cert(cert, cert_len, "certificate", res))) goto out;
    if (!(key = cm_ssl_load_private_key(key_pem, key_len, "private key", res))) goto out;
    if (!(pub = X509_get0_pubkey(x))) {
        ret = cm_fail_ssl(res, "parse", "certificate: unreadable public key");
        goto out;
    }
    /* 1: same key; 0: different; -1/-2: different types, also a mismatch. */
    if (EVP_PKEY_eq(pub, key) != 1) {
        ERR_clear_error();
        ret = cm_fail(res, "mismatch", "private key does not belong to the certificate");
        goto out;
    }
    ret = CM_OK;
out:
    X509_free(x); x = NULL;
    EVP_PKEY_free(key); key = NULL;
    return ret;
}

int cm_key_public_pem(const char *key_pem, size_t key_len, char **pub_pem,
                      struct cm_result *res)
{
    EVP_PKEY *key = NULL;
    int ret = CM_ERR;
    *pub_pem = NULL;
    if (!(key = cm_ssl_load_public_key(key_pem, key_len, "key", res))) goto out;
    if (!(*pub_pem = cm_ssl_public_key_pem(key))) {
        ret = cm_fail_ssl(res, "crypto", "writing the public key as PEM failed");
        goto out;
    }
    ret = CM_OK;
out:
    EVP_PKEY_free(key); key = NULL;
    return ret;
}

/* ------------------------------------------------------------------------ */
/* loaded keys (for signers)                                                */

int cm_key_load_private(const char *pem, size_t len, struct evp_pkey_st **out,
                        struct cm_result *res)
{
    *out = cm_ssl_load_private_key(pem, len, "private key", res);
    return *out ? CM_OK : CM_ERR;
}

int cm_key_load_public(const char *pem, size_t len, struct evp_pkey_st **out,
                       struct cm_result *res)
{
    *out = cm_ssl_load_public_key(pem, len, "key", res);
    return *out ? CM_OK : CM_ERR;
}

int cm_key_public_pem_of(const struct evp_pkey_st *key, char **pem, size_t *pem_len,
                         struct cm_result *res)
{
    *pem = NULL;
    if (pem_len) *pem_len = 0;
    if (!key) return cm_fail(res, "crypto", "public key: no key");
    if (!(*pem = cm_ssl_public_key_pem(key)))
        return cm_fail_ssl(res, "crypto", "writing the public key as PEM failed");
    if (pem_len) *pem_len = strlen(*pem);
    return CM_OK;
}

int cm_key_type(const struct evp_pkey_st *key, char *out, size_t out_size,
                struct cm_result *res)
{
    char group[64];
    const char *name = NULL;
    char rsa[24];
    int m;

    if (out_size) out[0] = '\0';
    if (!key) return cm_fail(res, "invalid", "key type: no key");
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC:
        if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           NULL) != 1) {
            ERR_clear_error();
            return cm_fail(res, "invalid", "key type: EC key without a named curve");
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) name = "p256";
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) name = "p384";
        else if (strcmp(group, "secp521r1") == 0 || strcmp(group, "P-521") == 0) name = "p521";
        else return cm_fail(res, "invalid", "key type: unsupported curve \"%.40s\"", group);
        break;
    case EVP_PKEY_RSA:
        snprintf(rsa, sizeof rsa, "rsa%d", EVP_PKEY_get_bits(key));
        name = rsa;
        break;
    case EVP_PKEY_ED25519:
        name = "ed25519";
        break;
    default:
        return cm_fail(res, "invalid", "key type: not an EC, RSA or Ed25519 key");
    }
    m = snprintf(out, out_size, "%s", name);
    if (m < 0 || (size_t)m >= out_size)
        return cm_fail(res, "toobig", "key type: \"%s\" does not fit in %zu bytes", name,
                       out_size);
    return CM_OK;
}

void cm_key_free(struct evp_pkey_st *key)
{
    EVP_PKEY_free(key);
}
