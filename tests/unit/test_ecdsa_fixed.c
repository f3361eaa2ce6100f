/* test_ecdsa_fixed.c - the fixed-key ECDSA verifier against OpenSSL's own:
 * every signature OpenSSL makes verifies, every change to digest, r or s,
 * every non-DER encoding and out-of-range value is refused; P-256 and
 * P-384 (the OCSP issuers of Let's Encrypt's kind), SHA-256/384/512 digests. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "check.h"
#include "ecdsa_fixed.h"

static EVP_PKEY *ec_key(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

/* OpenSSL's signature of dgst under key (DER), into sig. */
static size_t sign(EVP_PKEY *key, const unsigned char *dgst, size_t dlen, unsigned char *sig, size_t cap)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    size_t len = cap;
    if (!c || EVP_PKEY_sign_init(c) != 1 || EVP_PKEY_sign(c, sig, &len, dgst, dlen) != 1) len = 0;
    EVP_PKEY_CTX_free(c);
    return len;
}

static int openssl_verify(EVP_PKEY *key, const unsigned char *dgst, size_t dlen, const unsigned char *sig,
                          size_t siglen)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(key, NULL);
    int ok = c && EVP_PKEY_verify_init(c) == 1 && EVP_PKEY_verify(c, sig, siglen, dgst, dlen) == 1;
    EVP_PKEY_CTX_free(c);
    return ok;
}

/* sig re-encoded with r and s replaced (NULL: kept). */
static size_t with_values(const unsigned char *sig, size_t siglen, const BIGNUM *r2, const BIGNUM *s2,
                          unsigned char *out)
{
    const unsigned char *p = sig;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
    const BIGNUM *r, *sv;
    unsigned char *q = out;
    int len;
    ECDSA_SIG_get0(s, &r, &sv);
    ECDSA_SIG_set0(s, BN_dup(r2 ? r2 : r), BN_dup(s2 ? s2 : sv));
    len = i2d_ECDSA_SIG(s, &q);
    ECDSA_SIG_free(s);
    return len < 0 ? 0 : (size_t)len;
}

static void curve_cases(const char *curve, int order_bits)
{
    EVP_PKEY *key = ec_key(curve), *other = ec_key(curve);
    struct cm_ecdsa_fixed *k = cm_ecdsa_fixed_get(key), *again = cm_ecdsa_fixed_get(key);
    const size_t dlens[] = {32, 48, 64};
    unsigned char dgst[64], sig[160], bad[170];
    size_t i, d, len, blen;
    int agree = 1, accepted = 0;
    EC_GROUP *g = EC_GROUP_new_by_curve_name(OBJ_sn2nid(curve));
    const BIGNUM *n = EC_GROUP_get0_order(g);
    BIGNUM *t = BN_new();

    CHECK(key && other && k);
    CHECK(again == k); /* one set of tables a key */
    cm_ecdsa_fixed_release(again);
    for (d = 0; d < 3; d++) {
        for (i = 0; i < 40; i++) {
            RAND_bytes(dgst, sizeof dgst);
            len = sign(key, dgst, dlens[d], sig, sizeof sig);
            CHECK(len > 0);
            accepted += cm_ecdsa_fixed_verify(k, dgst, dlens[d], sig, len);
            if (cm_ecdsa_fixed_verify(k, dgst, dlens[d], sig, len) != openssl_verify(key, dgst, dlens[d], sig, len))
                agree = 0;
            /* another digest (in the bits that count: a digest longer than
             * the order is truncated, its tail signs nothing) */
            {
                size_t used = dlens[d] < (size_t)(order_bits / 8) ? dlens[d] : (size_t)(order_bits / 8);
                dgst[i % used] ^= 0x01;
                CHECK(!cm_ecdsa_fixed_verify(k, dgst, dlens[d], sig, len));
                dgst[i % used] ^= 0x01;
                if (dlens[d] > used) { /* and the tail indeed signs nothing, for OpenSSL too */
                    dgst[dlens[d] - 1] ^= 0x01;
                    CHECK(cm_ecdsa_fixed_verify(k, dgst, dlens[d], sig, len) == 1);
                    CHECK(openssl_verify(key, dgst, dlens[d], sig, len) == 1);
                    dgst[dlens[d] - 1] ^= 0x01;
                }
            }
            /* another key's signature */
            blen = sign(other, dgst, dlens[d], bad, sizeof bad);
            CHECK(!cm_ecdsa_fixed_verify(k, dgst, dlens[d], bad, blen));
            /* a bit flipped anywhere in the signature */
            memcpy(bad, sig, len);
            bad[(i * 7) % len] ^= (unsigned char)(1u << (i % 8));
            if (cm_ecdsa_fixed_verify(k, dgst, dlens[d], bad, len) != openssl_verify(key, dgst, dlens[d], bad, len))
                agree = 0;
            CHECK(!cm_ecdsa_fixed_verify(k, dgst, dlens[d], bad, len));
        }
    }
    CHECK(accepted == 120);
    CHECK(agree);

    RAND_bytes(dgst, 32);
    len = sign(key, dgst, 32, sig, sizeof sig);
    /* s and n - s both verify (ECDSA's malleability; OpenSSL accepts both) */
    {
        const unsigned char *p = sig;
        ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)len);
        const BIGNUM *r, *sv;
        ECDSA_SIG_get0(s, &r, &sv);
        BN_sub(t, n, sv);
        blen = with_values(sig, len, NULL, t, bad);
        CHECK(cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen) == openssl_verify(key, dgst, 32, bad, blen));
        CHECK(cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen) == 1);
        /* r or s zero, n, n + r: out of range */
        BN_zero(t);
        blen = with_values(sig, len, t, NULL, bad);
        CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen));
        blen = with_values(sig, len, NULL, t, bad);
        CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen));
        blen = with_values(sig, len, n, NULL, bad);
        CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen));
        BN_add(t, n, r);
        blen = with_values(sig, len, t, NULL, bad);
        CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, blen));
        ECDSA_SIG_free(s);
    }
    /* not strict DER: a long-form length, trailing bytes, truncation, nothing */
    memcpy(bad, sig, len);
    bad[len] = 0x00;
    CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, len + 1));
    CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, sig, len - 1));
    CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, sig, 0));
    CHECK(!cm_ecdsa_fixed_verify(NULL, dgst, 32, sig, len));
    if (sig[1] < 0x80) {
        bad[0] = 0x30;
        bad[1] = 0x81;
        bad[2] = sig[1];
        memcpy(bad + 3, sig + 2, len - 2);
        CHECK(!cm_ecdsa_fixed_verify(k, dgst, 32, bad, len + 1));
    }
    BN_free(t);
    EC_GROUP_free(g);
    cm_ecdsa_fixed_release(k);
    EVP_PKEY_free(other);
    EVP_PKEY_free(key);
}

/* A batch mixing good and bad signatures, each judged as alone (and as
 * OpenSSL judges it): the shared inversion must not let one item's values
 * leak into another's verdict. */
static void batch_cases(void)
{
    EVP_PKEY *key = ec_key("prime256v1");
    struct cm_ecdsa_fixed *k = cm_ecdsa_fixed_get(key);
    enum { N = 37 };
    unsigned char dgst[N][32], sig[N][80];
    struct cm_ecdsa_check c[N];
    size_t i;
    int agree = 1, good = 0;
    for (i = 0; i < N; i++) {
        RAND_bytes(dgst[i], 32);
        c[i].dgst = dgst[i];
        c[i].dlen = 32;
        c[i].sig = sig[i];
        c[i].siglen = sign(key, dgst[i], 32, sig[i], sizeof sig[i]);
        if (i % 3 == 1) dgst[i][5] ^= 0x40;                     /* wrong digest */
        if (i % 7 == 3) sig[i][c[i].siglen - 1] ^= 0x01;        /* s changed */
        if (i % 5 == 2) c[i].siglen = 0;                        /* no signature */
    }
    cm_ecdsa_fixed_verify_many(k, c, N);
    for (i = 0; i < N; i++) {
        int alone = cm_ecdsa_fixed_verify(k, dgst[i], 32, sig[i], c[i].siglen);
        if (c[i].ok != alone || alone != openssl_verify(key, dgst[i], 32, sig[i], c[i].siglen)) agree = 0;
        good += c[i].ok;
    }
    CHECK(agree);
    CHECK(good > 10 && good < N);
    cm_ecdsa_fixed_verify_many(k, c, 0); /* nothing: fine */
    cm_ecdsa_fixed_release(k);
    EVP_PKEY_free(key);
}

int main(void)
{
    batch_cases();
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    curve_cases("prime256v1", 256);
    curve_cases("secp384r1", 384);
    curve_cases("secp521r1", 521);
    /* not an EC key: no tables, the caller verifies the usual way */
    CHECK(cm_ecdsa_fixed_get(rsa) == NULL);
    CHECK(cm_ecdsa_fixed_get(NULL) == NULL);
    EVP_PKEY_free(rsa);
    /* more keys than cache slots: each still verifies (made, used, freed) */
    {
        int i, ok = 1;
        for (i = 0; i < 12; i++) {
            EVP_PKEY *key = ec_key("prime256v1");
            struct cm_ecdsa_fixed *k = cm_ecdsa_fixed_get(key);
            unsigned char dgst[32] = {(unsigned char)i}, sig[80];
            size_t len = sign(key, dgst, 32, sig, sizeof sig);
            if (!k || cm_ecdsa_fixed_verify(k, dgst, 32, sig, len) != 1) ok = 0;
            cm_ecdsa_fixed_release(k);
            EVP_PKEY_free(key);
        }
        CHECK(ok);
    }
    return CHECK_DONE();
}
