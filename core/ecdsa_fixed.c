/* ecdsa_fixed.c - see ecdsa_fixed.h. */

/* EC_GROUP_precompute_mult and EC_POINT_get_Jprojective_coordinates_GFp are
 * deprecated in OpenSSL 3.0 with no replacement: the EVP interface has no
 * notion of a key used many times. */
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "ecdsa_fixed.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

/* Keys kept made: an OCSP pass sees one or two issuers, a fleet a few. */
#define CACHE_SLOTS 8
#define MAX_PUB 133 /* an uncompressed P-521 point */

struct cm_ecdsa_fixed {
    EC_GROUP *curve;      /* the curve, generator G (OpenSSL's own table) */
    EC_GROUP *at_q;       /* the same curve with generator Q, its table made */
    BIGNUM *p;            /* the field prime */
    BIGNUM *r_max;        /* p - n: an r below it may be x mod n for x = r + n */
    BN_MONT_CTX *mont_n;  /* Montgomery arithmetic modulo the order */
    unsigned char pub[MAX_PUB];
    size_t pub_len;
    int refs;             /* holders, under cache_lock */
    int cached;           /* in cache[] (else freed by its last release) */
    unsigned long used;   /* LRU clock, under cache_lock */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cm_ecdsa_fixed *cache[CACHE_SLOTS];
static unsigned long cache_clock;

static void fixed_free(struct cm_ecdsa_fixed *k)
{
    if (!k) return;
    EC_GROUP_free(k->curve);
    EC_GROUP_free(k->at_q);
    BN_free(k->p);
    BN_free(k->r_max);
    BN_MONT_CTX_free(k->mont_n);
    free(k);
}

/* Make the tables for the key whose curve is nid and point pub. */
static struct cm_ecdsa_fixed *fixed_new(int nid, const unsigned char *pub, size_t pub_len)
{
    struct cm_ecdsa_fixed *k = calloc(1, sizeof *k);
    EC_POINT *q = NULL;
    BN_CTX *ctx = BN_CTX_new();
    int ok = 0;

    if (!k || !ctx) goto out;
    memcpy(k->pub, pub, pub_len);
    k->pub_len = pub_len;
    if (!(k->curve = EC_GROUP_new_by_curve_name(nid)) ||
        EC_GROUP_get_field_type(k->curve) != NID_X9_62_prime_field)
        goto out;
    if (!(q = EC_POINT_new(k->curve)) || EC_POINT_oct2point(k->curve, q, pub, pub_len, ctx) != 1 ||
        EC_POINT_is_at_infinity(k->curve, q) || EC_POINT_is_on_curve(k->curve, q, ctx) != 1)
        goto out;
    /* Q's order is n (the cofactor of the prime curves OpenSSL names is 1
     * for every curve it gives this method, checked below) */
    if (!BN_is_one(EC_GROUP_get0_cofactor(k->curve))) goto out;
    if (!(k->at_q = EC_GROUP_dup(k->curve)) ||
        EC_GROUP_set_generator(k->at_q, q, EC_GROUP_get0_order(k->curve), BN_value_one()) != 1 ||
        EC_GROUP_precompute_mult(k->at_q, ctx) != 1)
        goto out;
    if (!(k->p = BN_new()) || !(k->r_max = BN_new()) ||
        EC_GROUP_get_curve(k->curve, k->p, NULL, NULL, ctx) != 1 ||
        !BN_sub(k->r_max, k->p, EC_GROUP_get0_order(k->curve)) || !(k->mont_n = BN_MONT_CTX_new()) ||
        !BN_MONT_CTX_set(k->mont_n, EC_GROUP_get0_order(k->curve), ctx))
        goto out;
    ok = 1;
out:
    EC_POINT_free(q);
    BN_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) {
        fixed_free(k);
        return NULL;
    }
    return k;
}

/* The cached key for the point pub, or NULL (under cache_lock). */
static struct cm_ecdsa_fixed *cached(const unsigned char *pub, size_t pub_len)
{
    size_t i;
    for (i = 0; i < CACHE_SLOTS; i++)
        if (cache[i] && cache[i]->pub_len == pub_len && memcmp(cache[i]->pub, pub, pub_len) == 0) return cache[i];
    return NULL;
}

struct cm_ecdsa_fixed *cm_ecdsa_fixed_get(EVP_PKEY *pkey)
{
    char group[64];
    unsigned char pub[MAX_PUB];
    size_t pub_len = 0, glen = 0, i;
    struct cm_ecdsa_fixed *k = NULL, *made;
    int nid, victim = -1;

    if (!pkey || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC) return NULL;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) != 1 ||
        EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, sizeof pub, &pub_len) != 1 ||
        (nid = OBJ_sn2nid(group)) == NID_undef) {
        ERR_clear_error();
        return NULL;
    }
    pthread_mutex_lock(&cache_lock);
    if ((k = cached(pub, pub_len))) {
        k->refs++;
        k->used = ++cache_clock;
    }
    pthread_mutex_unlock(&cache_lock);
    if (k) return k;

    if (!(made = fixed_new(nid, pub, pub_len))) return NULL;
    pthread_mutex_lock(&cache_lock);
    if (!(k = cached(pub, pub_len))) { /* (else another thread made it meanwhile) */
        /* a free slot, else the least recently used one nobody holds */
        for (i = 0; i < CACHE_SLOTS; i++) {
            if (!cache[i]) { victim = (int)i; break; }
            if (cache[i]->refs == 0 && (victim < 0 || cache[i]->used < cache[victim]->used)) victim = (int)i;
        }
        k = made;
        made = NULL;
        if (victim >= 0) {
            fixed_free(cache[victim]);
            cache[victim] = k;
            k->cached = 1;
        }
    }
    k->refs++;
    k->used = ++cache_clock;
    pthread_mutex_unlock(&cache_lock);
    fixed_free(made);
    return k;
}

void cm_ecdsa_fixed_release(struct cm_ecdsa_fixed *k)
{
    int gone;
    if (!k) return;
    pthread_mutex_lock(&cache_lock);
    gone = --k->refs == 0 && !k->cached;
    pthread_mutex_unlock(&cache_lock);
    if (gone) fixed_free(k);
}

/* The leftmost bits of the digest as an integer below 2^bits(n) (SEC 1 4.1.4
 * step 5: a longer digest is truncated, not reduced). */
static BIGNUM *digest_int(const unsigned char *dgst, size_t dlen, int order_bits)
{
    size_t take = ((size_t)order_bits + 7) / 8;
    BIGNUM *e;
    if (take > dlen) take = dlen;
    if (!(e = BN_bin2bn(dgst, (int)take, NULL))) return NULL;
    if (take * 8 > (size_t)order_bits && !BN_rshift(e, e, (int)(take * 8) - order_bits)) {
        BN_free(e);
        return NULL;
    }
    return e;
}

/* x(R) == r mod n for R = (X : Y : Z) in Jacobian coordinates, without the
 * field inversion of going affine: X == r * Z^2 (mod p), or, when r + n is
 * still below p, X == (r + n) * Z^2. */
static int x_matches(const struct cm_ecdsa_fixed *k, const EC_POINT *R, const BIGNUM *r, const BIGNUM *n,
                     BN_CTX *ctx)
{
    BIGNUM *X, *Y, *Z, *t;
    int ok = 0;
    BN_CTX_start(ctx);
    X = BN_CTX_get(ctx);
    Y = BN_CTX_get(ctx);
    Z = BN_CTX_get(ctx);
    t = BN_CTX_get(ctx);
    if (!t || EC_POINT_get_Jprojective_coordinates_GFp(k->curve, R, X, Y, Z, ctx) != 1) goto out;
    if (BN_is_zero(Z)) goto out; /* the point at infinity */
    if (!BN_mod_sqr(Z, Z, k->p, ctx) || !BN_mod_mul(t, r, Z, k->p, ctx)) goto out;
    if (BN_cmp(t, X) == 0) {
        ok = 1;
        goto out;
    }
    if (BN_cmp(r, k->r_max) < 0) {
        if (!BN_add(t, r, n) || !BN_mod_mul(t, t, Z, k->p, ctx)) goto out;
        ok = BN_cmp(t, X) == 0;
    }
out:
    BN_CTX_end(ctx);
    return ok;
}

/* One signature's values, decoded: r, s in [1, n - 1] and e, or 0. */
static int decode_check(const struct cm_ecdsa_fixed *k, const struct cm_ecdsa_check *c, BIGNUM *r, BIGNUM *s,
                        BIGNUM *e, BN_CTX *ctx)
{
    const unsigned char *p = c->sig;
    unsigned char *again = NULL;
    ECDSA_SIG *sig = NULL;
    const BIGNUM *sr, *ss, *n = EC_GROUP_get0_order(k->curve);
    BIGNUM *de = NULL;
    int ok = 0, len;

    if (!c->dgst || !c->sig || c->siglen == 0 || c->siglen > 256) return 0;
    /* strict DER only, as OpenSSL's verification demands: decode, re-encode, compare */
    if (!(sig = d2i_ECDSA_SIG(NULL, &p, (long)c->siglen)) || p != c->sig + c->siglen) goto out;
    if ((len = i2d_ECDSA_SIG(sig, &again)) < 0 || (size_t)len != c->siglen || memcmp(again, c->sig, c->siglen) != 0)
        goto out;
    ECDSA_SIG_get0(sig, &sr, &ss);
    /* SEC 1 4.1.4 step 1: r and s in [1, n - 1] */
    if (BN_is_zero(sr) || BN_is_negative(sr) || BN_cmp(sr, n) >= 0 || BN_is_zero(ss) || BN_is_negative(ss) ||
        BN_cmp(ss, n) >= 0)
        goto out;
    /* e reduced mod n: the Montgomery products below need their inputs below n */
    if (!BN_copy(r, sr) || !BN_copy(s, ss) || !(de = digest_int(c->dgst, c->dlen, BN_num_bits(n))) ||
        !BN_nnmod(e, de, n, ctx))
        goto out;
    ok = 1;
out:
    BN_free(de);
    OPENSSL_free(again);
    ECDSA_SIG_free(sig);
    return ok;
}

/* R = u1 G + u2 Q, each by its own table, and x(R) == r. */
static int equation_holds(const struct cm_ecdsa_fixed *k, const BIGNUM *u1, const BIGNUM *u2, const BIGNUM *r,
                          BN_CTX *ctx)
{
    EC_POINT *a = EC_POINT_new(k->curve), *b = EC_POINT_new(k->curve);
    int ok = a && b && EC_POINT_mul(k->curve, a, u1, NULL, NULL, ctx) == 1 &&
             EC_POINT_mul(k->at_q, b, u2, NULL, NULL, ctx) == 1 && EC_POINT_add(k->curve, a, a, b, ctx) == 1 &&
             x_matches(k, a, r, EC_GROUP_get0_order(k->curve), ctx);
    EC_POINT_free(a);
    EC_POINT_free(b);
    return ok;
}

void cm_ecdsa_fixed_verify_many(const struct cm_ecdsa_fixed *k, struct cm_ecdsa_check *c, size_t n)
{
    BIGNUM **r = NULL, **s = NULL, **e = NULL, **prefix = NULL;
    BIGNUM *inv = NULL, *t = NULL, *u1 = NULL, *u2 = NULL, *w = NULL;
    const BIGNUM *order;
    BN_CTX *ctx = NULL;
    size_t i, m = 0, *at = NULL;

    for (i = 0; i < n; i++) c[i].ok = 0;
    if (!k || n == 0) return;
    order = EC_GROUP_get0_order(k->curve);
    if (!(ctx = BN_CTX_new()) || !(r = calloc(n, sizeof *r)) || !(s = calloc(n, sizeof *s)) ||
        !(e = calloc(n, sizeof *e)) || !(prefix = calloc(n, sizeof *prefix)) || !(at = calloc(n, sizeof *at)) ||
        !(inv = BN_new()) || !(t = BN_new()) || !(u1 = BN_new()) || !(u2 = BN_new()) || !(w = BN_new()))
        goto out;
    /* the well-formed ones, s in Montgomery form, and the running products */
    for (i = 0; i < n; i++) {
        /* (slot m is reused when c[i] is malformed) */
        if ((!r[m] && !(r[m] = BN_new())) || (!s[m] && !(s[m] = BN_new())) || (!e[m] && !(e[m] = BN_new())) ||
            (!prefix[m] && !(prefix[m] = BN_new())))
            goto out;
        if (!decode_check(k, &c[i], r[m], s[m], e[m], ctx)) continue;
        if (!BN_to_montgomery(s[m], s[m], k->mont_n, ctx) ||
            !(m == 0 ? BN_copy(prefix[m], s[m]) != NULL
                     : BN_mod_mul_montgomery(prefix[m], prefix[m - 1], s[m], k->mont_n, ctx)))
            goto out;
        at[m++] = i;
    }
    if (m == 0) goto out;
    /* the inverse of the product (Montgomery form in, Montgomery form out) */
    if (!BN_from_montgomery(t, prefix[m - 1], k->mont_n, ctx) || !BN_mod_inverse(inv, t, order, ctx) ||
        !BN_to_montgomery(inv, inv, k->mont_n, ctx))
        goto out;
    for (i = m; i-- > 0;) {
        /* w = s_i^-1 (Montgomery form): the inverse so far times the product before i */
        if (i > 0) {
            if (!BN_mod_mul_montgomery(w, inv, prefix[i - 1], k->mont_n, ctx) ||
                !BN_mod_mul_montgomery(inv, inv, s[i], k->mont_n, ctx))
                goto out;
        } else if (!BN_copy(w, inv)) {
            goto out;
        }
        /* u1 = e w, u2 = r w mod n (a Montgomery product with one factor in Montgomery form is plain) */
        if (!BN_mod_mul_montgomery(u1, e[i], w, k->mont_n, ctx) || !BN_mod_mul_montgomery(u2, r[i], w, k->mont_n, ctx))
            goto out;
        c[at[i]].ok = equation_holds(k, u1, u2, r[i], ctx);
    }
out:
    ERR_clear_error();
    for (i = 0; i < n; i++) {
        if (r) BN_free(r[i]);
        if (s) BN_free(s[i]);
        if (e) BN_free(e[i]);
        if (prefix) BN_free(prefix[i]);
    }
    free(r);
    free(s);
    free(e);
    free(prefix);
    free(at);
    BN_free(inv);
    BN_free(t);
    BN_free(u1);
    BN_free(u2);
    BN_free(w);
    BN_CTX_free(ctx);
}

int cm_ecdsa_fixed_verify(const struct cm_ecdsa_fixed *k, const unsigned char *dgst, size_t dlen,
                          const unsigned char *sig, size_t siglen)
{
    struct cm_ecdsa_check c;
    c.dgst = dgst;
    c.dlen = dlen;
    c.sig = sig;
    c.siglen = siglen;
    cm_ecdsa_fixed_verify_many(k, &c, 1);
    return c.ok;
}
