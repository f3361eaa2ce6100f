/* jws.c - JWK, RFC 7638 thumbprints and flattened JWS (ES256/384/512, RS256,
 * HS256) on OpenSSL 3. */
#include "jws.h"
#include "crypto.h"
#include "encoding.h"
#include "key.h"
#include "x509_ssl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>

/* The largest ECDSA coordinate: P-521, 66 bytes. */
#define EC_COORD_MAX 66
/* RSA moduli beyond this are not keys anyone uses (and bound the JWK). */
#define RSA_BITS_MAX 16384

struct alg_info;

struct cm_jws_signer {
    EVP_PKEY *key;
    const struct alg_info *ai;
    const char *alg;
    char *jwk;
    size_t jwk_len;
    char thumbprint[CM_JWS_THUMBPRINT_LEN + 1];
};

/* What a key signs with: alg name, digest, ECDSA coordinate size (0: RSA). */
struct alg_info {
    const char *alg;
    const char *crv; /* JWK "crv", NULL for RSA */
    const EVP_MD *(*md)(void);
    size_t coord;
};

static const struct alg_info ALG_ES256 = {"ES256", "P-256", EVP_sha256, 32};
static const struct alg_info ALG_ES384 = {"ES384", "P-384", EVP_sha384, 48};
static const struct alg_info ALG_ES512 = {"ES512", "P-521", EVP_sha512, 66};
static const struct alg_info ALG_RS256 = {"RS256", NULL, EVP_sha256, 0};

/* The algorithm for key, or NULL with res filled ("invalid"). */
static const struct alg_info *alg_of(const EVP_PKEY *key, struct cm_result *res)
{
    char type[16];
    if (cm_key_type(key, type, sizeof type, res) != CM_OK) return NULL;
    if (strcmp(type, "p256") == 0) return &ALG_ES256;
    if (strcmp(type, "p384") == 0) return &ALG_ES384;
    if (strcmp(type, "p521") == 0) return &ALG_ES512;
    if (strncmp(type, "rsa", 3) == 0) {
        int bits = EVP_PKEY_get_bits(key);
        if (bits < 2048 || bits > RSA_BITS_MAX) {
            cm_fail(res, "invalid", "jws: RSA key of %d bits (want 2048 to %d)", bits,
                    RSA_BITS_MAX);
            return NULL;
        }
        return &ALG_RS256;
    }
    cm_fail(res, "invalid", "jws: a %s key cannot sign ACME requests (want p256, p384, p521 "
                            "or RSA)", type);
    return NULL;
}

/* base64url of in[0..n) appended at *p (room checked by the caller). */
static void put_b64u(char **p, const void *in, size_t n)
{
    *p += cm_base64url_encode(in, n, *p);
}

static void put_str(char **p, const char *s)
{
    size_t n = strlen(s);
    memcpy(*p, s, n);
    *p += n;
}

/* A BIGNUM parameter of key as big-endian bytes into buf (cap bytes):
 * left-padded to `pad` bytes when pad > 0, else minimal.  *n gets the
 * length.  CM_ERR with "crypto". */
static int bn_param(const EVP_PKEY *key, const char *name, size_t pad, unsigned char *buf,
                    size_t cap, size_t *n, struct cm_result *res)
{
    BIGNUM *bn = NULL;
    int m, ret = CM_ERR;
    if (EVP_PKEY_get_bn_param(key, name, &bn) != 1 || !bn) {
        cm_fail_ssl(res, "crypto", "jwk: reading the key's %s failed", name);
        goto out;
    }
    if (pad) {
        if (pad > cap || BN_bn2binpad(bn, buf, (int)pad) != (int)pad) {
            cm_fail_ssl(res, "crypto", "jwk: the key's %s does not fit in %zu bytes", name, pad);
            goto out;
        }
        *n = pad;
    } else {
        if ((size_t)BN_num_bytes(bn) > cap) {
            cm_fail(res, "crypto", "jwk: the key's %s is too large", name);
            goto out;
        }
        m = BN_bn2bin(bn, buf);
        if (m < 0) {
            cm_fail_ssl(res, "crypto", "jwk: writing the key's %s failed", name);
            goto out;
        }
        *n = (size_t)m;
    }
    ret = CM_OK;
out:
    BN_free(bn);
    return ret;
}

int cm_jws_jwk_of_key(const struct evp_pkey_st *key, char **jwk, size_t *jwk_len,
                      const char **alg, struct cm_result *res)
{
    const struct alg_info *ai;
    unsigned char a[RSA_BITS_MAX / 8], b[EC_COORD_MAX];
    size_t an = 0, bn = 0, cap;
    char *s, *p;

    *jwk = NULL;
    if (jwk_len) *jwk_len = 0;
    if (!key) return cm_fail(res, "invalid", "jwk: no key");
    if (!(ai = alg_of(key, res))) return CM_ERR;
    if (ai->crv) {
        if (bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, ai->coord, a, sizeof a, &an, res) != CM_OK ||
            bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, ai->coord, b, sizeof b, &bn, res) != CM_OK)
            return CM_ERR;
    } else {
        if (bn_param(key, OSSL_PKEY_PARAM_RSA_N, 0, a, sizeof a, &an, res) != CM_OK ||
            bn_param(key, OSSL_PKEY_PARAM_RSA_E, 0, b, sizeof b, &bn, res) != CM_OK)
            return CM_ERR;
    }
    /* members in lexicographic order (RFC 7638 section 3.3) */
    cap = 64 + cm_base64_encoded_len(an, 0) + cm_base64_encoded_len(bn, 0);
    if (!(s = malloc(cap))) return cm_fail(res, "ENOMEM", "jwk: out of memory");
    p = s;
    if (ai->crv) {
        put_str(&p, "{\"crv\":\"");
        put_str(&p, ai->crv);
        put_str(&p, "\",\"kty\":\"EC\",\"x\":\"");
        put_b64u(&p, a, an);
        put_str(&p, "\",\"y\":\"");
        put_b64u(&p, b, bn);
        put_str(&p, "\"}");
    } else {
        put_str(&p, "{\"e\":\"");
        put_b64u(&p, b, bn);
        put_str(&p, "\",\"kty\":\"RSA\",\"n\":\"");
        put_b64u(&p, a, an);
        put_str(&p, "\"}");
    }
    *p = '\0';
    *jwk = s;
    if (jwk_len) *jwk_len = (size_t)(p - s);
    if (alg) *alg = ai->alg;
    return CM_OK;
}

int cm_jws_thumbprint(const char *jwk, size_t len, char out[CM_JWS_THUMBPRINT_LEN + 1],
                      struct cm_result *res)
{
    unsigned char md[CM_SHA256_LEN];
    out[0] = '\0';
    if (cm_crypto_sha256(jwk, len, md, res) != CM_OK) return CM_ERR;
    cm_base64url_encode(md, sizeof md, out);
    return CM_OK;
}

int cm_jws_signer_new(const char *pem, size_t len, struct cm_jws_signer **out,
                      struct cm_result *res)
{
    struct cm_jws_signer *s = NULL;
    EVP_PKEY *key = NULL;

    *out = NULL;
    if (cm_key_load_private(pem, len, &key, res) != CM_OK) return CM_ERR;
    if (!(s = calloc(1, sizeof *s))) {
        cm_key_free(key);
        return cm_fail(res, "ENOMEM", "jws signer: out of memory");
    }
    s->key = key;
    if (!(s->ai = alg_of(key, res)) ||
        cm_jws_jwk_of_key(key, &s->jwk, &s->jwk_len, &s->alg, res) != CM_OK ||
        cm_jws_thumbprint(s->jwk, s->jwk_len, s->thumbprint, res) != CM_OK ||
        /* once a signer: a damaged key would sign every request invalidly */
        cm_ssl_key_self_check(key, "jws signer key", res) != CM_OK) {
        cm_jws_signer_free(s);
        return CM_ERR;
    }
    *out = s;
    return CM_OK;
}

void cm_jws_signer_free(struct cm_jws_signer *s)
{
    if (!s) return;
    cm_key_free(s->key);
    free(s->jwk);
    free(s);
}

const char *cm_jws_signer_alg(const struct cm_jws_signer *s) { return s->alg; }

const char *cm_jws_signer_jwk(const struct cm_jws_signer *s, size_t *len)
{
    if (len) *len = s->jwk_len;
    return s->jwk;
}

const char *cm_jws_signer_thumbprint(const struct cm_jws_signer *s) { return s->thumbprint; }

/* ---- signing ------------------------------------------------------------ */

/* A flattened JWS under construction: the text with room for the signature,
 * and where its signing input (b64u(protected) "." b64u(payload)) lies. */
struct jws_text {
    char *text;
    size_t signing_off, signing_len; /* the input, copied in place of the last quote */
    char *sig_at;                    /* where the signature's base64url goes */
};

static const char PART_PROTECTED[] = "{\"protected\":\"";
static const char PART_PAYLOAD[] = "\",\"payload\":\"";
static const char PART_SIGNATURE[] = "\",\"signature\":\"";
static const char PART_END[] = "\"}";

/* Allocate and fill everything but the signature (sig_max bytes of it).
 * The signing input is built separately in *input (malloc'd). */
static int jws_begin(const char *protected_json, size_t plen, const char *payload, size_t len,
                     size_t sig_max, struct jws_text *j, char **input, size_t *input_len,
                     struct cm_result *res)
{
    size_t pe, ye, cap;
    char *p;

    j->text = NULL;
    *input = NULL;
    if (!protected_json || plen == 0)
        return cm_fail(res, "invalid", "jws: the protected header is empty");
    if (plen > CM_JWS_MAX_INPUT || len > CM_JWS_MAX_INPUT)
        return cm_fail(res, "toobig", "jws: %s of %zu bytes (at most %d)",
                       plen > CM_JWS_MAX_INPUT ? "protected header" : "payload",
                       plen > CM_JWS_MAX_INPUT ? plen : len, CM_JWS_MAX_INPUT);
    pe = cm_base64_encoded_len(plen, 0);
    ye = cm_base64_encoded_len(len, 0);
    *input_len = pe + 1 + ye;
    if (!(*input = malloc(*input_len + 1))) return cm_fail(res, "ENOMEM", "jws: out of memory");
    p = *input;
    put_b64u(&p, protected_json, plen);
    *p++ = '.';
    put_b64u(&p, payload ? payload : "", len);
    *p = '\0';
    cap = sizeof PART_PROTECTED + pe + sizeof PART_PAYLOAD + ye + sizeof PART_SIGNATURE +
          cm_base64_encoded_len(sig_max, 0) + sizeof PART_END + 1;
    if (!(j->text = malloc(cap))) {
        free(*input);
        *input = NULL;
        return cm_fail(res, "ENOMEM", "jws: out of memory");
    }
    p = j->text;
    put_str(&p, PART_PROTECTED);
    memcpy(p, *input, pe);
    p += pe;
    put_str(&p, PART_PAYLOAD);
    memcpy(p, *input + pe + 1, ye);
    p += ye;
    put_str(&p, PART_SIGNATURE);
    j->sig_at = p;
    return CM_OK;
}

/* Append the signature and the end; hand the text out. */
static void jws_finish(struct jws_text *j, const unsigned char *sig, size_t sig_len, char **out,
                       size_t *out_len)
{
    char *p = j->sig_at;
    put_b64u(&p, sig, sig_len);
    put_str(&p, PART_END);
    *p = '\0';
    *out = j->text;
    if (out_len) *out_len = (size_t)(p - j->text);
    j->text = NULL;
}

/* DER ECDSA-Sig-Value -> r||s, each left-padded to coord bytes. */
static int ecdsa_der_to_raw(const unsigned char *der, size_t der_len, size_t coord,
                            unsigned char *raw, struct cm_result *res)
{
    const unsigned char *p = der;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    int ret = CM_ERR;
    if (!sig || p != der + der_len) {
        cm_fail_ssl(res, "crypto", "jws: OpenSSL returned an unreadable ECDSA signature");
        goto out;
    }
    ECDSA_SIG_get0(sig, &r, &s);
    if (!r || !s || BN_bn2binpad(r, raw, (int)coord) != (int)coord ||
        BN_bn2binpad(s, raw + coord, (int)coord) != (int)coord) {
        cm_fail_ssl(res, "crypto", "jws: ECDSA signature does not fit in %zu bytes", 2 * coord);
        goto out;
    }
    ret = CM_OK;
out:
    ECDSA_SIG_free(sig);
    return ret;
}

/* r||s -> DER ECDSA-Sig-Value (malloc'd by OpenSSL into *der). */
static int ecdsa_raw_to_der(const unsigned char *raw, size_t coord, unsigned char **der,
                            size_t *der_len, struct cm_result *res)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)coord, NULL), *s = BN_bin2bn(raw + coord, (int)coord, NULL);
    int n, ret = CM_ERR;
    *der = NULL;
    if (!sig || !r || !s || ECDSA_SIG_set0(sig, r, s) != 1) {
        cm_fail_ssl(res, "ENOMEM", "jws: out of memory");
        BN_free(r);
        BN_free(s);
        goto out;
    }
    /* sig owns r and s now */
    if ((n = i2d_ECDSA_SIG(sig, der)) <= 0) {
        *der = NULL;
        cm_fail_ssl(res, "crypto", "jws: encoding the ECDSA signature failed");
        goto out;
    }
    *der_len = (size_t)n;
    ret = CM_OK;
out:
    ECDSA_SIG_free(sig);
    return ret;
}

int cm_jws_sign(const struct cm_jws_signer *s, const char *protected_json, size_t plen,
                const char *payload, size_t len, char **out, size_t *out_len,
                struct cm_result *res)
{
    const struct alg_info *ai;
    struct jws_text j = {0};
    EVP_MD_CTX *ctx = NULL;
    unsigned char *sig = NULL, raw[2 * EC_COORD_MAX];
    char *input = NULL;
    size_t input_len = 0, sig_len = 0, sig_max;
    int ret = CM_ERR;

    *out = NULL;
    if (out_len) *out_len = 0;
    ai = s->ai;
    sig_max = (size_t)EVP_PKEY_get_size(s->key);
    if (jws_begin(protected_json, plen, payload, len, sig_max, &j, &input, &input_len, res) !=
        CM_OK)
        goto out;
    if (!(ctx = EVP_MD_CTX_new()) || !(sig = malloc(sig_max))) {
        cm_fail(res, "ENOMEM", "jws: out of memory");
        goto out;
    }
    sig_len = sig_max;
    if (EVP_DigestSignInit(ctx, NULL, ai->md(), NULL, s->key) != 1 ||
        EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)input, input_len) != 1) {
        cm_fail_ssl(res, "crypto", "jws: %s signing failed", ai->alg);
        goto out;
    }
    if (ai->crv) {
        if (ecdsa_der_to_raw(sig, sig_len, ai->coord, raw, res) != CM_OK) goto out;
        jws_finish(&j, raw, 2 * ai->coord, out, out_len);
    } else {
        jws_finish(&j, sig, sig_len, out, out_len);
    }
    ret = CM_OK;
out:
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(input);
    free(j.text);
    return ret;
}

int cm_jws_hmac_sign(const char *key_b64u, size_t klen, const char *protected_json, size_t plen,
                     const char *payload, size_t len, char **out, size_t *out_len,
                     struct cm_result *res)
{
    unsigned char key[CM_JWS_MAX_MAC_KEY], mac[CM_SHA256_LEN];
    struct jws_text j = {0};
    char *input = NULL;
    size_t key_len = 0, mac_len = 0, input_len = 0;
    struct cm_result dec;
    int ret = CM_ERR;

    *out = NULL;
    if (out_len) *out_len = 0;
    if (!key_b64u || klen == 0)
        return cm_fail(res, "invalid", "jws_hmac: the MAC key is empty");
    if (klen > CM_JWS_MAX_MAC_KEY)
        return cm_fail(res, "invalid", "jws_hmac: the MAC key is %zu characters (at most %d)",
                       klen, CM_JWS_MAX_MAC_KEY);
    if (cm_base64url_decode(key_b64u, klen, key, &key_len, &dec) != CM_OK)
        return cm_fail(res, "invalid", "jws_hmac: the MAC key is not base64url without "
                                       "padding (%s)", dec.message);
    if (key_len == 0) return cm_fail(res, "invalid", "jws_hmac: the MAC key is empty");
    if (jws_begin(protected_json, plen, payload, len, sizeof mac, &j, &input, &input_len, res) !=
        CM_OK)
        goto out;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len,
                   (const unsigned char *)input, input_len, mac, sizeof mac, &mac_len) ||
        mac_len != sizeof mac) {
        cm_fail_ssl(res, "crypto", "jws_hmac: HMAC-SHA256 failed");
        goto out;
    }
    jws_finish(&j, mac, mac_len, out, out_len);
    ret = CM_OK;
out:
    OPENSSL_cleanse(key, sizeof key);
    free(input);
    free(j.text);
    return ret;
}

/* ---- verifying ---------------------------------------------------------- */

/* The base64url string member `name` of the JSON object o, decoded into a
 * malloc'd NUL-terminated *out. */
static int b64u_member(json_t *o, const char *name, unsigned char **out, size_t *out_len,
                       struct cm_result *res)
{
    json_t *v = json_object_get(o, name);
    const char *text;
    size_t n;
    struct cm_result dec;
    *out = NULL;
    if (!json_is_string(v)) return cm_fail(res, "parse", "jws: member \"%s\" is not a string",
                                           name);
    text = json_string_value(v);
    n = json_string_length(v);
    if (!(*out = malloc(cm_base64_decoded_max(n) + 1)))
        return cm_fail(res, "ENOMEM", "jws: out of memory");
    if (cm_base64url_decode(text, n, *out, out_len, &dec) != CM_OK) {
        free(*out);
        *out = NULL;
        return cm_fail(res, "parse", "jws: member \"%s\": %s", name, dec.message);
    }
    (*out)[*out_len] = '\0';
    return CM_OK;
}

int cm_jws_verify(const char *key_pem, size_t klen, const char *jws, size_t len,
                  char **protected_json, size_t *protected_len, char **payload,
                  size_t *payload_len, struct cm_result *res)
{
    EVP_PKEY *key = NULL;
    const struct alg_info *ai;
    json_t *doc = NULL, *hdr = NULL, *alg;
    json_error_t jerr;
    unsigned char *prot = NULL, *pay = NULL, *sig = NULL, *der = NULL;
    size_t prot_len = 0, pay_len = 0, sig_len = 0, der_len = 0;
    const unsigned char *check;
    size_t check_len;
    const char *ptext, *ytext;
    char *input = NULL;
    EVP_MD_CTX *ctx = NULL;
    int ret = CM_ERR;

    *protected_json = NULL;
    *payload = NULL;
    if (len > CM_JWS_MAX_INPUT)
        return cm_fail(res, "toobig", "jws: %zu bytes (at most %d)", len, CM_JWS_MAX_INPUT);
    if (cm_key_load_public(key_pem, klen, &key, res) != CM_OK) return CM_ERR;
    if (!(ai = alg_of(key, res))) goto out;
    if (!(doc = json_loadb(jws, len, JSON_REJECT_DUPLICATES, &jerr)) || !json_is_object(doc)) {
        cm_fail(res, "parse", "jws: not a JSON object (%s at offset %d)",
                doc ? "another JSON value" : jerr.text, doc ? 0 : jerr.position);
        goto out;
    }
    if (b64u_member(doc, "protected", &prot, &prot_len, res) != CM_OK ||
        b64u_member(doc, "payload", &pay, &pay_len, res) != CM_OK ||
        b64u_member(doc, "signature", &sig, &sig_len, res) != CM_OK)
        goto out;
    if (!(hdr = json_loadb((const char *)prot, prot_len, JSON_REJECT_DUPLICATES, &jerr)) ||
        !json_is_object(hdr)) {
        cm_fail(res, "parse", "jws: the protected header is not a JSON object");
        goto out;
    }
    alg = json_object_get(hdr, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), ai->alg) != 0) {
        cm_fail(res, "verify", "jws: protected header alg %s%.16s%s, the key signs %s",
                json_is_string(alg) ? "\"" : "", json_is_string(alg) ? json_string_value(alg) :
                "missing", json_is_string(alg) ? "\"" : "", ai->alg);
        goto out;
    }
    /* The signing input is the text as sent, not a re-encoding. */
    ptext = json_string_value(json_object_get(doc, "protected"));
    ytext = json_string_value(json_object_get(doc, "payload"));
    {
        size_t pl = strlen(ptext), yl = strlen(ytext);
        if (!(input = malloc(pl + yl + 2))) {
            cm_fail(res, "ENOMEM", "jws: out of memory");
            goto out;
        }
        memcpy(input, ptext, pl);
        input[pl] = '.';
        memcpy(input + pl + 1, ytext, yl);
        input[pl + 1 + yl] = '\0';
    }
    check = sig;
    check_len = sig_len;
    if (ai->crv) {
        if (sig_len != 2 * ai->coord) {
            cm_fail(res, "verify", "jws: %s signature of %zu bytes (want %zu)", ai->alg, sig_len,
                    2 * ai->coord);
            goto out;
        }
        if (ecdsa_raw_to_der(sig, ai->coord, &der, &der_len, res) != CM_OK) goto out;
        check = der;
        check_len = der_len;
    }
    if (!(ctx = EVP_MD_CTX_new())) {
        cm_fail(res, "ENOMEM", "jws: out of memory");
        goto out;
    }
    if (EVP_DigestVerifyInit(ctx, NULL, ai->md(), NULL, key) != 1) {
        cm_fail_ssl(res, "crypto", "jws: %s verification could not start", ai->alg);
        goto out;
    }
    if (EVP_DigestVerify(ctx, check, check_len, (const unsigned char *)input, strlen(input)) !=
        1) {
        ERR_clear_error();
        cm_fail(res, "verify", "jws: the %s signature does not verify", ai->alg);
        goto out;
    }
    *protected_json = (char *)prot;
    *payload = (char *)pay;
    if (protected_len) *protected_len = prot_len;
    if (payload_len) *payload_len = pay_len;
    prot = pay = NULL;
    ret = CM_OK;
out:
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    free(input);
    free(prot);
    free(pay);
    free(sig);
    json_decref(hdr);
    json_decref(doc);
    cm_key_free(key);
    return ret;
}
