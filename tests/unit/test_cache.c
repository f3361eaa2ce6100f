/* test_cache.c - the certificate cache, fed with facts built by hand. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cache.h"
#include "key.h"
#include "localca.h"
#include "check.h"

/* A hand-made certificate: fake but well-formed DER (SEQUENCEs), a hash derived
 * from the seed, and the lists the cache copies.  Storage is inside the struct
 * so a test needs no frees. */
struct fake {
    struct cm_cert_facts f;
    char *names[8];
    char *ocsp[1];
    char *crl[1];
    unsigned char der[8];
    unsigned char chain[10];
};

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* names: up to 8, NULL-terminated array; ocsp: URL or NULL */
static void fake_make(struct fake *k, uint64_t seed, const char *const *names,
                      int64_t not_before, int64_t not_after, const char *ocsp)
{
    size_t i;
    uint64_t x = seed;
    memset(k, 0, sizeof *k);
    for (i = 0; i < 4; i++) {
        uint64_t v = splitmix(&x);
        memcpy(k->f.sha256 + 8 * i, &v, 8);
    }
    for (i = 0; names && names[i] && i < 8; i++) k->names[i] = (char *)names[i];
    k->f.names.items = i ? k->names : NULL;
    k->f.names.count = i;
    k->f.not_before = not_before;
    k->f.not_after = not_after;
    k->f.serial_hex = (char *)"0a1b";
    k->f.issuer = (char *)"CN=Test CA";
    k->f.subject = (char *)"CN=leaf";
    if (ocsp) {
        k->ocsp[0] = (char *)ocsp;
        k->f.ocsp_urls.items = k->ocsp;
        k->f.ocsp_urls.count = 1;
    }
    k->crl[0] = (char *)"http://crl.test/ca.crl";
    k->f.crl_urls.items = k->crl;
    k->f.crl_urls.count = 1;
    /* leaf: 30 06 <6 seed bytes>; chain: two certs 30 03 xx xx xx, 30 03 ... */
    k->der[0] = 0x30;
    k->der[1] = 0x06;
    memcpy(k->der + 2, &seed, 6);
    k->f.der = k->der;
    k->f.der_len = sizeof k->der;
    k->chain[0] = 0x30; k->chain[1] = 0x03; k->chain[2] = 1; k->chain[3] = 2; k->chain[4] = 3;
    k->chain[5] = 0x30; k->chain[6] = 0x03; k->chain[7] = 4; k->chain[8] = 5; k->chain[9] = 6;
    k->f.chain_der = k->chain;
    k->f.chain_der_len = sizeof k->chain;
    k->f.chain_count = 2;
}

static struct cm_cache_id add(struct cm_cache *c, struct fake *k, int managed,
                              double renew_at, double next_attempt, int *existed)
{
    struct cm_cache_add_opts o;
    struct cm_cache_id id;
    struct cm_result res;
    int ex = -1;
    cm_cache_add_opts_init(&o);
    o.managed = managed;
    o.renew_at = renew_at;
    o.next_attempt = next_attempt;
    memset(&id, 0, sizeof id);
    CHECK(cm_cache_add(c, &k->f, &o, &id, &ex, &res) == CM_OK);
    CHECK(memcmp(id.sha256, k->f.sha256, 32) == 0);
    if (existed) *existed = ex;
    return id;
}

static int id_eq(const struct cm_cache_id *a, const struct cm_cache_id *b)
{
    return memcmp(a->sha256, b->sha256, 32) == 0;
}

/* lookup(name) == *want (want NULL: not found) */
static int lookup_is(struct cm_cache *c, const char *name, const struct cm_cache_id *want)
{
    struct cm_cache_id got;
    int found = cm_cache_lookup(c, name, strlen(name), &got);
    if (!want) return !found;
    return found && id_eq(&got, want);
}

static int contains(const struct cm_cache_id *ids, size_t n, const struct cm_cache_id *id)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (id_eq(&ids[i], id)) return 1;
    return 0;
}

/* Number of ids a scan returns. */
enum kind { DUE, STAPLES, EXPIRED };
static size_t scan_n(struct cm_cache *c, enum kind kind, double now, double grace,
                     const struct cm_cache_id *must)
{
    struct cm_cache_id *ids = NULL;
    struct cm_result res;
    size_t n = 0;
    int rc = CM_ERR;
    if (kind == DUE) rc = cm_cache_scan_due(c, now, 0, &ids, &n, &res);
    if (kind == STAPLES) rc = cm_cache_scan_staples(c, now, 0, &ids, &n, &res);
    if (kind == EXPIRED) rc = cm_cache_scan_expired(c, now, grace, 0, &ids, &n, &res);
    CHECK(rc == CM_OK);
    if (must) CHECK(contains(ids, n, must));
    free(ids);
    return n;
}

static void test_index_and_duplicates(void)
{
    static const char *const a_names[] = {"Example.COM", "www.example.com", "example.com", "", NULL};
    struct fake a;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_cert cert;
    struct cm_result res;
    struct cm_cache_id id, id2;
    int existed = -1;

    CHECK(c != NULL);
    CHECK(cm_cache_count(c) == 0);
    CHECK(lookup_is(c, "example.com", NULL));
    CHECK(scan_n(c, DUE, 1e12, 0, NULL) == 0);

    fake_make(&a, 1, a_names, 100, 1000, NULL);
    id = add(c, &a, 0, NAN, NAN, &existed);
    CHECK(existed == 0);
    CHECK(cm_cache_count(c) == 1);
    CHECK(cm_cache_has(c, &id));
    CHECK(lookup_is(c, "EXAMPLE.com", &id));
    CHECK(lookup_is(c, "www.Example.com", &id));
    CHECK(lookup_is(c, "", NULL));
    CHECK(lookup_is(c, "example.co", NULL));

    /* duplicate names dropped, lower-cased, empty one skipped */
    CHECK(cm_cache_get(c, &id, &cert, &res) == CM_OK);
    CHECK(cert.names.count == 2);
    if (cert.names.count == 2) {
        CHECK_STR(cert.names.items[0], "example.com");
        CHECK_STR(cert.names.items[1], "www.example.com");
    }
    CHECK(cert.flags == CM_CACHE_CRL_ONLY); /* a CRL point, no OCSP responder */
    CHECK(cert.not_before == 100 && cert.not_after == 1000);
    CHECK(cert.renew_at == 1000); /* default: at the latest at expiry */
    CHECK(cert.next_attempt == 0);
    CHECK_STR(cert.serial_hex, "0a1b");
    CHECK_STR(cert.issuer, "CN=Test CA");
    CHECK_STR(cert.subject, "CN=leaf");
    CHECK(cert.ocsp_urls.count == 0);
    CHECK(cert.crl_urls.count == 1 && strcmp(cert.crl_urls.items[0], "http://crl.test/ca.crl") == 0);
    CHECK(cert.der_len == 8 && memcmp(cert.der, a.der, 8) == 0);
    CHECK(cert.chain_der_len == 10 && memcmp(cert.chain_der, a.chain, 10) == 0);
    CHECK(cert.chain_count == 2);
    CHECK(cert.last_error == NULL);
    cm_cache_cert_free(&cert);
    CHECK(cert.mem_ == NULL);
    cm_cache_cert_free(&cert); /* idempotent */

    /* same hash again: nothing new, flags updated, unset fields kept */
    id2 = add(c, &a, 1, 500, NAN, &existed);
    CHECK(existed == 1);
    CHECK(id_eq(&id, &id2));
    CHECK(cm_cache_count(c) == 1);
    CHECK(cm_cache_get(c, &id, &cert, &res) == CM_OK);
    CHECK(cert.flags == (CM_CACHE_MANAGED | CM_CACHE_CRL_ONLY));
    CHECK(cert.renew_at == 500);
    cm_cache_cert_free(&cert);
    id2 = add(c, &a, -1, NAN, NAN, &existed);
    CHECK(existed == 1);
    CHECK(cm_cache_get(c, &id, &cert, &res) == CM_OK);
    CHECK(cert.flags == (CM_CACHE_MANAGED | CM_CACHE_CRL_ONLY) && cert.renew_at == 500);
    cm_cache_cert_free(&cert);

    /* add with NULL opts and NULL outs */
    CHECK(cm_cache_add(c, &a.f, NULL, NULL, NULL, &res) == CM_OK);
    CHECK(cm_cache_count(c) == 1);

    /* get on a missing id */
    memset(&id2, 0xee, sizeof id2);
    CHECK(cm_cache_get(c, &id2, &cert, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(cert.mem_ == NULL);
    CHECK(cm_cache_remove(c, &id2) == 0);

    /* no DER */
    a.f.der = NULL;
    a.f.sha256[0] ^= 1;
    CHECK(cm_cache_add(c, &a.f, NULL, NULL, NULL, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(cm_cache_count(c) == 1);
    cm_cache_free(c);
    cm_cache_free(NULL);
}

static void test_wildcard(void)
{
    static const char *const apex[] = {"example.com", "www.example.com", NULL};
    static const char *const wild[] = {"*.example.com", NULL};
    static const char *const deep[] = {"*.b.example.com", NULL};
    struct fake a, w, w2, d;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id ia, iw, iw2, id;

    fake_make(&a, 10, apex, 0, 5000, NULL);
    fake_make(&w, 11, wild, 0, 4000, NULL);
    fake_make(&d, 12, deep, 0, 4000, NULL);
    ia = add(c, &a, 1, NAN, NAN, NULL);
    iw = add(c, &w, 1, NAN, NAN, NULL);
    id = add(c, &d, 1, NAN, NAN, NULL);

    CHECK(lookup_is(c, "a.example.com", &iw));
    CHECK(lookup_is(c, "A.Example.COM", &iw));
    CHECK(lookup_is(c, "www.example.com", &ia)); /* exact wins over wildcard */
    CHECK(lookup_is(c, "example.com", &ia));
    CHECK(lookup_is(c, "*.example.com", &iw));
    CHECK(lookup_is(c, "x.b.example.com", &id));
    CHECK(lookup_is(c, "x.y.b.example.com", NULL));
    CHECK(lookup_is(c, "a.c.example.com", NULL)); /* one label only */
    CHECK(lookup_is(c, ".example.com", NULL));
    CHECK(lookup_is(c, "a.", NULL));
    CHECK(lookup_is(c, "example", NULL));

    /* the wildcard never serves the apex */
    CHECK(cm_cache_remove(c, &ia) == 1);
    CHECK(lookup_is(c, "example.com", NULL));
    CHECK(lookup_is(c, "www.example.com", &iw));

    /* two wildcards: the later not_after serves */
    fake_make(&w2, 13, wild, 0, 4500, NULL);
    iw2 = add(c, &w2, 1, NAN, NAN, NULL);
    CHECK(lookup_is(c, "q.example.com", &iw2));
    CHECK(cm_cache_remove(c, &iw2) == 1);
    CHECK(lookup_is(c, "q.example.com", &iw));

    /* a very long name (heap path) is just not found */
    {
        char longname[600];
        memset(longname, 'a', sizeof longname - 1);
        longname[sizeof longname - 1] = '\0';
        longname[300] = '.';
        CHECK(lookup_is(c, longname, NULL));
    }
    cm_cache_free(c);
}

static void test_shared_names(void)
{
    static const char *const nm[] = {"example.com", NULL};
    struct fake old, cur, mid;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id io, ic, im, *ids = NULL;
    struct cm_result res;
    size_t n = 0;

    fake_make(&old, 20, nm, 0, 1000, NULL);
    fake_make(&cur, 21, nm, 500, 3000, NULL);
    fake_make(&mid, 22, nm, 200, 2000, NULL);
    io = add(c, &old, 1, NAN, NAN, NULL);
    ic = add(c, &cur, 1, NAN, NAN, NULL);
    im = add(c, &mid, 1, NAN, NAN, NULL);
    CHECK(lookup_is(c, "example.com", &ic));
    CHECK(cm_cache_find(c, "EXAMPLE.COM", 11, &ids, &n, &res) == CM_OK);
    CHECK(n == 3);
    if (n == 3) CHECK(id_eq(&ids[0], &ic) && id_eq(&ids[1], &im) && id_eq(&ids[2], &io));
    free(ids); ids = NULL;
    CHECK(cm_cache_find(c, "a.example.com", 13, &ids, &n, &res) == CM_OK);
    CHECK(n == 0 && ids == NULL);

    CHECK(cm_cache_remove(c, &ic) == 1);
    CHECK(cm_cache_remove(c, &ic) == 0);
    CHECK(lookup_is(c, "example.com", &im));
    CHECK(cm_cache_find(c, "example.com", 11, &ids, &n, &res) == CM_OK);
    CHECK(n == 2 && !contains(ids, n, &ic));
    free(ids); ids = NULL;
    CHECK(cm_cache_remove(c, &im) == 1);
    CHECK(cm_cache_remove(c, &io) == 1);
    CHECK(lookup_is(c, "example.com", NULL));
    CHECK(cm_cache_count(c) == 0);

    /* ties on not_after: the later not_before serves */
    fake_make(&old, 23, nm, 100, 1000, NULL);
    fake_make(&cur, 24, nm, 200, 1000, NULL);
    io = add(c, &old, 0, NAN, NAN, NULL);
    ic = add(c, &cur, 0, NAN, NAN, NULL);
    CHECK(lookup_is(c, "example.com", &ic));
    cm_cache_free(c);
}

static void test_due(void)
{
    static const char *const nm[] = {"due.test", NULL};
    struct fake a, b;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id ia, ib, *ids = NULL;
    struct cm_cache_update u;
    struct cm_result res;
    size_t n;

    fake_make(&a, 30, nm, 0, 1000, NULL);
    fake_make(&b, 31, nm, 0, 1000, NULL);
    ia = add(c, &a, 1, 100, 0, NULL);
    ib = add(c, &b, 0, 50, 0, NULL); /* unmanaged: never due */
    CHECK(scan_n(c, DUE, 99.999, 0, NULL) == 0);
    CHECK(scan_n(c, DUE, 100, 0, &ia) == 1);
    CHECK(scan_n(c, DUE, 1e9, 0, &ia) == 1);

    /* back-off: next_attempt later than renew_at */
    memset(&u, 0, sizeof u);
    u.fields = CM_CACHE_SET_NEXT_ATTEMPT | CM_CACHE_SET_ATTEMPTS;
    u.next_attempt = 150;
    u.attempts = 2;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, DUE, 100, 0, NULL) == 0);
    CHECK(scan_n(c, DUE, 149.5, 0, NULL) == 0);
    CHECK(scan_n(c, DUE, 150, 0, &ia) == 1);

    /* managed off and on, via set */
    u.fields = CM_CACHE_SET_MANAGED;
    u.managed = 0;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, DUE, 1e9, 0, NULL) == 0);
    u.managed = 1;
    CHECK(cm_cache_set(c, &ib, &u, &res) == CM_OK);
    CHECK(scan_n(c, DUE, 50, 0, &ib) == 1);
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, DUE, 150, 0, NULL) == 2);

    /* renew_at = +inf: never due; limit */
    u.fields = CM_CACHE_SET_RENEW_AT;
    u.renew_at = INFINITY;
    CHECK(cm_cache_set(c, &ib, &u, &res) == CM_OK);
    CHECK(scan_n(c, DUE, 1e300, 0, &ia) == 1);
    u.renew_at = 0;
    CHECK(cm_cache_set(c, &ib, &u, &res) == CM_OK);
    CHECK(cm_cache_scan_due(c, 1e9, 1, &ids, &n, &res) == CM_OK);
    CHECK(n == 1);
    free(ids); ids = NULL;

    /* bad input */
    u.renew_at = NAN;
    CHECK(cm_cache_set(c, &ib, &u, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    u.renew_at = 1;
    memset(&ib, 0x55, sizeof ib);
    CHECK(cm_cache_set(c, &ib, &u, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");

    /* ids() filter */
    CHECK(cm_cache_ids(c, -1, &ids, &n, &res) == CM_OK && n == 2);
    free(ids); ids = NULL;
    u.fields = CM_CACHE_SET_MANAGED;
    u.managed = 0;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(cm_cache_ids(c, 1, &ids, &n, &res) == CM_OK && n == 1 && !contains(ids, n, &ia));
    free(ids); ids = NULL;
    CHECK(cm_cache_ids(c, 0, &ids, &n, &res) == CM_OK && n == 1 && contains(ids, n, &ia));
    free(ids); ids = NULL;
    cm_cache_free(c);
}

static void test_staples(void)
{
    static const char *const nm[] = {"ocsp.test", NULL};
    static const unsigned char der[] = {0x30, 0x03, 0x0a, 0x01, 0x00};
    struct fake a, nourl, gone;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id ia, *ids = NULL;
    struct cm_cache_update u;
    struct cm_cache_staple st;
    struct cm_cache_cert cert;
    struct cm_result res;
    size_t n;

    fake_make(&a, 40, nm, 0, 10000, "http://ocsp.test");
    fake_make(&nourl, 41, nm, 0, 10000, NULL);
    fake_make(&gone, 42, nm, 0, 100, "http://ocsp.test");
    ia = add(c, &a, 1, NAN, NAN, NULL);
    add(c, &nourl, 1, NAN, NAN, NULL);
    add(c, &gone, 1, NAN, NAN, NULL);

    /* no staple yet: due, except the expired one and the one without a URL */
    CHECK(scan_n(c, STAPLES, 50, 0, NULL) == 2);
    CHECK(scan_n(c, STAPLES, 100, 0, &ia) == 1);

    memset(&u, 0, sizeof u);
    memset(&st, 0, sizeof st);
    st.status = CM_OCSP_GOOD;
    st.this_update = 1000;
    st.next_update = 2000;
    st.refresh_at = NAN; /* default: half-way */
    st.der = der;
    st.der_len = sizeof der;
    u.fields = CM_CACHE_SET_OCSP;
    u.ocsp = &st;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, STAPLES, 1499, 0, NULL) == 0);
    CHECK(scan_n(c, STAPLES, 1500, 0, &ia) == 1);
    CHECK(scan_n(c, STAPLES, 10000, 0, NULL) == 0); /* expired now */
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK(cert.flags == (CM_CACHE_MANAGED | CM_CACHE_HAS_STAPLE));
    CHECK(cert.staple.status == CM_OCSP_GOOD);
    CHECK(cert.staple.this_update == 1000 && cert.staple.next_update == 2000);
    CHECK(cert.staple.refresh_at == 1500);
    CHECK(cert.staple.der_len == sizeof der && memcmp(cert.staple.der, der, sizeof der) == 0);
    cm_cache_cert_free(&cert);

    st.refresh_at = 1200;
    st.status = CM_OCSP_REVOKED;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, STAPLES, 1199, 0, NULL) == 0);
    CHECK(scan_n(c, STAPLES, 1200, 0, &ia) == 1);
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK(cert.staple.status == CM_OCSP_REVOKED && cert.staple.refresh_at == 1200);
    cm_cache_cert_free(&cert);

    /* clearing makes it due again */
    u.ocsp = NULL;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(scan_n(c, STAPLES, 1000, 0, &ia) == 1);
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK(!(cert.flags & CM_CACHE_HAS_STAPLE));
    cm_cache_cert_free(&cert);

    /* too big, bad status */
    u.ocsp = &st;
    st.der_len = (size_t)CM_CACHE_MAX_STAPLE + 1;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    st.der_len = sizeof der;
    st.status = (enum cm_ocsp_cert_status)7;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_ERR);
    CHECK_STR(res.code, "invalid");
    CHECK(scan_n(c, STAPLES, 1000, 0, &ia) == 1); /* unchanged */
    CHECK(cm_cache_scan_staples(c, 50, 1, &ids, &n, &res) == CM_OK && n == 1);
    free(ids);
    cm_cache_free(c);
}

static void test_expired(void)
{
    static const char *const nm[] = {"exp.test", NULL};
    struct fake a, b;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id ia;

    fake_make(&a, 50, nm, 0, 1000, NULL);
    fake_make(&b, 51, nm, 0, 5000, NULL);
    ia = add(c, &a, 0, NAN, NAN, NULL);
    add(c, &b, 1, NAN, NAN, NULL);
    CHECK(scan_n(c, EXPIRED, 999, 0, NULL) == 0);
    CHECK(scan_n(c, EXPIRED, 1000, 0, &ia) == 1);
    CHECK(scan_n(c, EXPIRED, 1000, 10, NULL) == 0);
    CHECK(scan_n(c, EXPIRED, 1009, 10, NULL) == 0);
    CHECK(scan_n(c, EXPIRED, 1010, 10, &ia) == 1);
    CHECK(scan_n(c, EXPIRED, 5000, 0, NULL) == 2);
    CHECK(cm_cache_remove(c, &ia) == 1);
    CHECK(scan_n(c, EXPIRED, 1010, 10, NULL) == 0);
    CHECK(scan_n(c, EXPIRED, 5000, 0, NULL) == 1);
    cm_cache_free(c);
}

static void test_errors_and_pem(void)
{
    static const char *const nm[] = {"err.test", NULL};
    struct fake a;
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id ia, back;
    struct cm_cache_update u;
    struct cm_cache_cert cert;
    struct cm_result res;
    char hex[65], big[CM_CACHE_MAX_ERROR + 100], *pem = NULL, *p;
    unsigned char dec[64];
    size_t len = 0, blocks = 0;
    size_t before;

    fake_make(&a, 60, nm, 0, 1000, NULL);
    ia = add(c, &a, 1, NAN, NAN, NULL);
    before = cm_cache_memory(c, NULL);
    memset(&u, 0, sizeof u);
    u.fields = CM_CACHE_SET_LAST_ERROR;
    u.last_error = "acme: rateLimited";
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(cm_cache_memory(c, NULL) == before + strlen(u.last_error) + 1);
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK_STR(cert.last_error, "acme: rateLimited");
    cm_cache_cert_free(&cert);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    u.last_error = big;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK(cert.last_error && strlen(cert.last_error) == CM_CACHE_MAX_ERROR);
    cm_cache_cert_free(&cert);
    u.last_error = NULL;
    CHECK(cm_cache_set(c, &ia, &u, &res) == CM_OK);
    CHECK(cm_cache_memory(c, NULL) == before);
    CHECK(cm_cache_get(c, &ia, &cert, &res) == CM_OK);
    CHECK(cert.last_error == NULL);

    /* PEM: leaf then both chain certificates */
    CHECK(cm_cache_cert_pem(&cert, &pem, &len, &res) == CM_OK);
    CHECK(pem && strlen(pem) == len);
    for (p = pem; p && (p = strstr(p, "-----BEGIN CERTIFICATE-----\n")); p++) blocks++;
    CHECK(blocks == 3);
    if (pem) {
        char *b = pem + strlen("-----BEGIN CERTIFICATE-----\n");
        char *e = strchr(b, '\n');
        int dn;
        CHECK(e != NULL);
        if (e) {
            *e = '\0';
            dn = EVP_DecodeBlock(dec, (const unsigned char *)b, (int)strlen(b));
            CHECK(dn >= 8 && memcmp(dec, a.der, 8) == 0);
        }
    }
    free(pem); pem = NULL;
    /* a chain that does not split is refused */
    cert.chain_der_len = 4;
    CHECK(cm_cache_cert_pem(&cert, &pem, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "parse");
    CHECK(pem == NULL);
    cm_cache_cert_free(&cert);

    /* ids as hex */
    cm_cache_id_hex(&ia, hex);
    CHECK(strlen(hex) == 64);
    CHECK(cm_cache_id_parse(hex, 64, &back) == CM_OK && id_eq(&ia, &back));
    hex[0] = (char)(hex[0] >= 'a' ? hex[0] - 'a' + 'A' : hex[0]);
    CHECK(cm_cache_id_parse(hex, 64, &back) == CM_OK && id_eq(&ia, &back));
    hex[5] = 'g';
    CHECK(cm_cache_id_parse(hex, 64, &back) == CM_ERR);
    CHECK(cm_cache_id_parse(hex, 63, &back) == CM_ERR);
    cm_cache_free(c);
}

/* Enough entries to rehash both tables many times, then remove half and check
 * that every lookup and scan still agrees with what is left. */
static void test_many(void)
{
    enum { N = 20000 };
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_id *ids = NULL, *all = malloc(N * sizeof *all);
    struct cm_result res;
    struct fake k;
    char n1[64], n2[64];
    const char *names[3];
    size_t i, n, der = 0, bad = 0;

    CHECK(all != NULL);
    if (!all) return;
    for (i = 0; i < N; i++) {
        snprintf(n1, sizeof n1, "host%zu.example.net", i);
        snprintf(n2, sizeof n2, "*.site%zu.example.net", i);
        names[0] = n1;
        names[1] = n2;
        names[2] = NULL;
        fake_make(&k, 1000 + i, names, 0, 10000 + (int64_t)i, NULL);
        /* even entries due at 100, odd ones at 200 */
        all[i] = add(c, &k, 1, i % 2 ? 200 : 100, 0, NULL);
        der += 18;
    }
    CHECK(cm_cache_count(c) == N);
    {
        size_t d = 0, total = cm_cache_memory(c, &d);
        CHECK(d == der);
        CHECK(total > d);
    }
    for (i = 0; i < N; i++) {
        snprintf(n1, sizeof n1, "HOST%zu.example.net", i);
        snprintf(n2, sizeof n2, "x.site%zu.example.net", i);
        if (!lookup_is(c, n1, &all[i]) || !lookup_is(c, n2, &all[i])) bad++;
    }
    CHECK(bad == 0);
    CHECK(scan_n(c, DUE, 100, 0, NULL) == N / 2);
    CHECK(scan_n(c, DUE, 200, 0, NULL) == N);

    /* remove the even ones: swap-removal moves odd entries around */
    for (i = 0; i < N; i += 2) CHECK(cm_cache_remove(c, &all[i]) == 1);
    CHECK(cm_cache_count(c) == N / 2);
    bad = 0;
    for (i = 0; i < N; i++) {
        snprintf(n1, sizeof n1, "host%zu.example.net", i);
        snprintf(n2, sizeof n2, "y.site%zu.example.net", i);
        if (!lookup_is(c, n1, i % 2 ? &all[i] : NULL)) bad++;
        if (!lookup_is(c, n2, i % 2 ? &all[i] : NULL)) bad++;
        if (cm_cache_has(c, &all[i]) != (int)(i % 2)) bad++;
    }
    CHECK(bad == 0);
    CHECK(scan_n(c, DUE, 100, 0, NULL) == 0);
    CHECK(scan_n(c, DUE, 200, 0, NULL) == N / 2);
    CHECK(cm_cache_scan_due(c, 200, 0, &ids, &n, &res) == CM_OK);
    bad = 0;
    for (i = 0; i < n; i++) {
        struct cm_cache_cert cert;
        if (cm_cache_get(c, &ids[i], &cert, &res) != CM_OK) {
            bad++;
            continue;
        }
        if ((cert.not_after - 10000) % 2 != 1 || cert.renew_at != 200) bad++;
        cm_cache_cert_free(&cert);
    }
    CHECK(bad == 0);
    free(ids); ids = NULL;
    {
        size_t d = 0;
        cm_cache_memory(c, &d);
        CHECK(d == der / 2);
    }
    /* remove the rest; the cache is empty and still works */
    for (i = 1; i < N; i += 2) CHECK(cm_cache_remove(c, &all[i]) == 1);
    CHECK(cm_cache_count(c) == 0);
    CHECK(scan_n(c, DUE, 1e9, 0, NULL) == 0);
    CHECK(lookup_is(c, "host1.example.net", NULL));
    fake_make(&k, 7, NULL, 0, 1, NULL);
    add(c, &k, 1, NAN, NAN, NULL); /* no names at all is allowed */
    CHECK(cm_cache_count(c) == 1);
    CHECK(scan_n(c, EXPIRED, 1, 0, NULL) == 1);
    free(all);
    cm_cache_free(c);
}

/* ---- add_many and views, on real certificates ------------------------- */

static char *ca_key, *ca_pem, *leaf_key;

static void pki_init(void)
{
    struct cm_issue_opts io;
    struct cm_result res;
    CHECK(cm_key_generate("p256", &ca_key, &res) == CM_OK);
    CHECK(cm_key_generate("p256", &leaf_key, &res) == CM_OK);
    memset(&io, 0, sizeof io);
    io.issuer_key = ca_key;
    io.cn = "Cache Test CA";
    io.not_before = 1767225600 - 86400;
    io.not_after = 1767225600 + 3650 * 86400LL;
    io.is_ca = 1;
    io.path_len = 0;
    CHECK(cm_cert_issue(&io, &ca_pem, NULL, &res) == CM_OK);
}

/* A chain PEM (leaf + CA) for names, valid [nb, na]; caller frees. */
static char *issue_pem(const char *const *names, size_t n, int64_t nb, int64_t na)
{
    struct cm_issue_opts io;
    struct cm_result res;
    char *leaf = NULL, *chain;
    size_t ll, lc;
    memset(&io, 0, sizeof io);
    io.subject_key = leaf_key;
    io.issuer_key = ca_key;
    io.issuer_cert = ca_pem;
    io.names = names;
    io.names_count = n;
    io.not_before = nb;
    io.not_after = na;
    io.path_len = -1;
    io.ocsp_url = "http://ocsp.cache.test/";
    if (cm_cert_issue(&io, &leaf, NULL, &res) != CM_OK) {
        fprintf(stderr, "issue: %s\n", res.message);
        return NULL;
    }
    ll = strlen(leaf);
    lc = strlen(ca_pem);
    chain = malloc(ll + lc + 1);
    if (chain) {
        memcpy(chain, leaf, ll);
        memcpy(chain + ll, ca_pem, lc + 1);
    }
    free(leaf);
    return chain;
}

#define T0 1767225600LL
#define NMANY 700

static void set_item(struct cm_cache_item *it, const char *pem)
{
    memset(it, 0, sizeof *it);
    it->pem = pem;
    it->pem_len = pem ? strlen(pem) : 0;
}

static void test_add_many(void)
{
    static char *pems[NMANY];
    static struct cm_cache_item items[NMANY], again[NMANY];
    static char namebuf[NMANY][32];
    const char *nm[1], *want_two[2] = {"TWO.many.test", "one.many.test"},
                                *want_one[1] = {"one.many.test"};
    struct cm_cache_many_opts mo;
    struct cm_renewal_opts ro;
    struct cm_result res;
    struct cm_cache_view v;
    struct cm_cache_id id;
    struct cm_cache *c = cm_cache_new(NULL), *d;
    unsigned threads;
    size_t i;
    const char *garbage = "-----BEGIN CERTIFICATE-----\nnope!\n-----END CERTIFICATE-----\n";
    char *two;

    CHECK(c != NULL);
    for (i = 0; i < NMANY; i++) {
        snprintf(namebuf[i], sizeof namebuf[i], "m%zu.many.test", i);
        nm[0] = namebuf[i];
        pems[i] = issue_pem(nm, 1, T0, T0 + 90 * 86400LL);
        CHECK(pems[i] != NULL);
    }
    /* an empty batch does nothing */
    cm_cache_many_opts_init(&mo);
    CHECK(mo.managed == 1 && mo.threads == 2 && mo.renew == NULL);
    CHECK(cm_cache_add_many(c, items, 0, &mo, &res) == CM_OK);
    CHECK(cm_cache_count(c) == 0);

    /* every thread count gives the same outcome; garbage in the middle */
    cm_renewal_opts_init(&ro);
    for (threads = 0; threads <= 4; threads++) {
        d = cm_cache_new(NULL);
        for (i = 0; i < NMANY; i++) {
            set_item(&items[i], pems[i]);
            nm[0] = namebuf[i];
            items[i].on_demand = (i % 3 == 0);
        }
        set_item(&items[300], garbage);
        set_item(&items[301], NULL);
        set_item(&items[302], "");
        mo.threads = threads;
        mo.renew = &ro;
        mo.first_index = 1;
        CHECK(cm_cache_add_many(d, items, NMANY, &mo, &res) == CM_OK);
        CHECK(cm_cache_count(d) == NMANY - 3);
        for (i = 0; i < NMANY; i++) {
            if (i >= 300 && i <= 302) {
                char want[32];
                snprintf(want, sizeof want, "item %zu: ", i + 1);
                CHECK(items[i].state == CM_CACHE_ITEM_ERROR);
                CHECK(strncmp(items[i].res.message, want, strlen(want)) == 0);
                CHECK(strcmp(items[i].res.code, i == 301 ? "invalid" : "parse") == 0);
                CHECK(isnan(items[i].renew_at));
                continue;
            }
            CHECK(items[i].state == CM_CACHE_ITEM_OK && !items[i].existed);
            CHECK(items[i].not_before == T0 && items[i].not_after == T0 + 90 * 86400LL);
            CHECK(items[i].renew_at == (double)(T0 + 60 * 86400LL));
            CHECK(cm_cache_lookup(d, namebuf[i], strlen(namebuf[i]), &id) == 1);
            CHECK(memcmp(id.sha256, items[i].id.sha256, 32) == 0);
            CHECK(cm_cache_view(d, &items[i].id, &v) == 1);
            CHECK(v.flags == (CM_CACHE_MANAGED | (i % 3 == 0 ? CM_CACHE_ON_DEMAND : 0u)));
            CHECK(v.renew_at == (double)(T0 + 60 * 86400LL) && v.next_attempt == 0);
        }
        /* the scan takes an entry at its renew_at (renew_at <= now) */
        {
            struct cm_cache_id *ids = NULL;
            size_t n = 0;
            CHECK(cm_cache_scan_due(d, (double)(T0 + 60 * 86400LL - 1), 0, &ids, &n, &res) == CM_OK &&
                  n == 0);
            free(ids); ids = NULL;
            CHECK(cm_cache_scan_due(d, (double)(T0 + 60 * 86400LL), 0, &ids, &n, &res) == CM_OK &&
                  n == NMANY - 3);
            free(ids); ids = NULL;
        }
        if (threads == 2) {
            /* the same batch again: all held already, unmanaged now */
            for (i = 0; i < NMANY; i++) set_item(&again[i], pems[i]);
            mo.managed = 0;
            mo.renew = NULL;
            CHECK(cm_cache_add_many(d, again, NMANY, &mo, &res) == CM_OK);
            CHECK(cm_cache_count(d) == NMANY);
            CHECK(again[300].existed == 0 && again[0].existed == 1);
            CHECK(cm_cache_view(d, &again[5].id, &v) == 1 && v.flags == 0);
            CHECK(again[5].renew_at == (double)(T0 + 60 * 86400LL)); /* kept */
            mo.managed = 1;
        }
        cm_cache_free(d);
    }

    /* a batch of duplicates is one entry */
    for (i = 0; i < NMANY; i++) set_item(&items[i], pems[7]);
    mo.threads = 2;
    mo.renew = NULL;
    mo.first_index = 0;
    CHECK(cm_cache_add_many(c, items, NMANY, &mo, &res) == CM_OK);
    CHECK(cm_cache_count(c) == 1);
    CHECK(items[0].existed == 0 && items[NMANY - 1].existed == 1);
    CHECK(items[0].renew_at == (double)(T0 + 90 * 86400LL)); /* no renew: not_after */
    for (i = 1; i < NMANY; i++)
        CHECK(items[i].state == CM_CACHE_ITEM_OK &&
              memcmp(items[i].id.sha256, items[0].id.sha256, 32) == 0);

    /* names compared as sets, case-insensitively; a mismatch is cached anyway */
    nm[0] = "one.many.test";
    {
        const char *both[2] = {"one.many.test", "two.many.test"};
        two = issue_pem(both, 2, T0, T0 + 86400);
    }
    set_item(&items[0], two);
    items[0].names = want_two;
    items[0].names_count = 2;
    set_item(&items[1], two);
    items[1].names = want_one;
    items[1].names_count = 1;
    set_item(&items[2], two);
    items[2].names = want_two;
    items[2].names_count = 0; /* expects no names at all */
    CHECK(cm_cache_add_many(c, items, 3, &mo, &res) == CM_OK);
    CHECK(items[0].state == CM_CACHE_ITEM_OK);
    CHECK(items[1].state == CM_CACHE_ITEM_NAMES_CHANGED);
    CHECK(items[2].state == CM_CACHE_ITEM_NAMES_CHANGED);
    CHECK(cm_cache_count(c) == 2);
    CHECK(cm_cache_lookup(c, "two.many.test", 13, &id) == 1);

    /* bad renew options: nothing is done */
    set_item(&items[0], pems[8]);
    ro.ratio = 1.5;
    mo.renew = &ro;
    CHECK(cm_cache_add_many(c, items, 1, &mo, &res) == CM_ERR && strcmp(res.code, "invalid") == 0);
    CHECK(cm_cache_count(c) == 2);
    /* NULL options are the defaults */
    CHECK(cm_cache_add_many(c, items, 1, NULL, &res) == CM_OK && cm_cache_count(c) == 3);

    free(two);
    for (i = 0; i < NMANY; i++) free(pems[i]);
    cm_cache_free(c);
}

static void test_view(void)
{
    const char *names[2] = {"View.Test", "www.view.test"};
    struct cm_cache *c = cm_cache_new(NULL);
    struct cm_cache_item it;
    struct cm_cache_view v;
    struct cm_cache_cert cert;
    struct cm_cache_update u;
    struct cm_cache_staple st;
    struct cm_cache_id none;
    struct cm_result res;
    static const unsigned char der[] = {0x30, 0x03, 1, 2, 3};
    char *pem = issue_pem(names, 2, T0, T0 + 86400), *back = NULL;
    size_t len = 0, blen = 0;
    const char *s;

    set_item(&it, pem);
    CHECK(cm_cache_add_many(c, &it, 1, NULL, &res) == CM_OK && it.state == CM_CACHE_ITEM_OK);
    memset(&u, 0, sizeof u);
    memset(&st, 0, sizeof st);
    st.status = CM_OCSP_GOOD;
    st.this_update = (double)T0;
    st.next_update = (double)T0 + 4 * 86400;
    st.refresh_at = NAN;
    st.der = der;
    st.der_len = sizeof der;
    u.fields = CM_CACHE_SET_LAST_ERROR | CM_CACHE_SET_OCSP | CM_CACHE_SET_ATTEMPTS;
    u.last_error = "boom";
    u.ocsp = &st;
    u.attempts = 3;
    CHECK(cm_cache_set(c, &it.id, &u, &res) == CM_OK);

    CHECK(cm_cache_view(c, &it.id, &v) == 1);
    CHECK(cm_cache_get(c, &it.id, &cert, &res) == CM_OK);
    CHECK(v.not_before == cert.not_before && v.not_after == cert.not_after);
    CHECK(v.names_count == 2 && v.ocsp_count == 1 && v.crl_count == 0);
    s = cm_cache_view_item(&v, CM_CACHE_NAMES, 0, &len);
    CHECK(s && len == 9 && strcmp(s, "view.test") == 0);
    CHECK_STR(cm_cache_view_item(&v, CM_CACHE_NAMES, 1, NULL), "www.view.test");
    CHECK(cm_cache_view_item(&v, CM_CACHE_NAMES, 2, NULL) == NULL);
    CHECK_STR(cm_cache_view_item(&v, CM_CACHE_OCSP_URLS, 0, NULL), "http://ocsp.cache.test/");
    CHECK(cm_cache_view_item(&v, CM_CACHE_OCSP_URLS, 1, NULL) == NULL);
    CHECK(cm_cache_view_item(&v, CM_CACHE_CRL_URLS, 0, NULL) == NULL);
    CHECK_STR(v.serial_hex, cert.serial_hex);
    CHECK_STR(v.issuer, cert.issuer);
    CHECK_STR(v.subject, cert.subject);
    CHECK_STR(v.last_error, "boom");
    CHECK(v.attempts == 3 && (v.flags & CM_CACHE_HAS_STAPLE));
    CHECK(v.staple.der_len == sizeof der && memcmp(v.staple.der, der, sizeof der) == 0);
    CHECK(v.staple.refresh_at == (double)T0 + 2 * 86400);
    CHECK(v.der_len == cert.der_len && memcmp(v.der, cert.der, v.der_len) == 0);
    CHECK(v.chain_count == 1 && v.chain_der_len == cert.chain_der_len);
    /* the PEM comes back from the viewed DER, byte for byte */
    CHECK(cm_x509_chain_pem(v.der, v.der_len, v.chain_der, v.chain_der_len, &back, &blen, &res) ==
          CM_OK);
    CHECK(back && blen == strlen(pem) && strcmp(back, pem) == 0);
    memset(&none, 0, sizeof none);
    CHECK(cm_cache_view(c, &none, &v) == 0 && v.names_count == 0);
    free(back);
    cm_cache_cert_free(&cert);
    free(pem);
    cm_cache_free(c);
}

/* ---- cm_cache_batch: parsed ahead, inserted at finish ------------------ */

#define NBATCH 300

static void test_batch(void)
{
    static char *pems[NBATCH];
    static struct cm_cache_item want[NBATCH], one[NBATCH / 2], two[NBATCH - NBATCH / 2],
        dropped[NBATCH];
    static char namebuf[NBATCH][32];
    const char *nm[1];
    const char *garbage = "-----BEGIN CERTIFICATE-----\nnope!\n-----END CERTIFICATE-----\n";
    struct cm_cache_many_opts mo;
    struct cm_renewal_opts ro;
    struct cm_result res;
    struct cm_cache *c = cm_cache_new(NULL), *d = cm_cache_new(NULL);
    struct cm_cache_batch *b1 = NULL, *b2 = NULL, *b3 = NULL;
    size_t i, h = NBATCH / 2;

    CHECK(c != NULL && d != NULL);
    for (i = 0; i < NBATCH; i++) {
        snprintf(namebuf[i], sizeof namebuf[i], "b%zu.batch.test", i);
        nm[0] = namebuf[i];
        pems[i] = issue_pem(nm, 1, T0, T0 + 90 * 86400LL);
        CHECK(pems[i] != NULL);
    }
    cm_cache_many_opts_init(&mo);
    cm_renewal_opts_init(&ro);
    mo.threads = 4;
    mo.renew = &ro;
    mo.first_index = 1;
    for (i = 0; i < NBATCH; i++) set_item(&want[i], pems[i]);
    set_item(&want[h - 1], garbage); /* errors in the middle, and at the seam */
    set_item(&want[h + 7], NULL);
    set_item(&want[h + 20], pems[3]); /* a second copy, in the other batch */
    CHECK(cm_cache_add_many(c, want, NBATCH, &mo, &res) == CM_OK);

    /* the same in two batches in flight at once, finished in order */
    for (i = 0; i < NBATCH; i++) {
        struct cm_cache_item *it = i < h ? &one[i] : &two[i - h];
        set_item(it, want[i].pem);
    }
    CHECK(cm_cache_batch_start(&b1, one, h, &mo, &res) == CM_OK && b1 != NULL);
    mo.first_index = h + 1;
    CHECK(cm_cache_batch_start(&b2, two, NBATCH - h, &mo, &res) == CM_OK && b2 != NULL);
    mo.first_index = 1;
    CHECK(cm_cache_count(d) == 0); /* nothing inserted before finish */
    cm_cache_batch_finish(d, b1);
    cm_cache_batch_finish(d, b2);
    CHECK(cm_cache_count(d) == cm_cache_count(c));
    CHECK(cm_cache_count(d) == NBATCH - 3);
    for (i = 0; i < NBATCH; i++) {
        const struct cm_cache_item *it = i < h ? &one[i] : &two[i - h];
        CHECK(it->state == want[i].state);
        CHECK(it->existed == want[i].existed);
        CHECK(strcmp(it->res.message, want[i].res.message) == 0);
        if (it->state == CM_CACHE_ITEM_OK) {
            CHECK(memcmp(it->id.sha256, want[i].id.sha256, 32) == 0);
            CHECK(it->renew_at == want[i].renew_at);
        }
    }
    CHECK(two[20].existed == 1);

    /* dropped unfinished, at once and after some parsing: nothing inserted */
    for (i = 0; i < NBATCH; i++) set_item(&dropped[i], pems[i]);
    cm_cache_free(d);
    d = cm_cache_new(NULL);
    CHECK(cm_cache_batch_start(&b3, dropped, NBATCH, &mo, &res) == CM_OK);
    cm_cache_batch_free(b3);
    CHECK(cm_cache_batch_start(&b3, dropped, NBATCH, &mo, &res) == CM_OK);
    nm[0] = "busy.batch.test"; /* some work of this thread while they parse */
    free(issue_pem(nm, 1, T0, T0 + 86400));
    cm_cache_batch_free(b3);
    cm_cache_batch_free(NULL);
    CHECK(cm_cache_count(d) == 0);

    /* bad renew options: the start says nothing, finish fails every item */
    ro.ratio = 2;
    CHECK(cm_cache_batch_start(&b3, dropped, 3, &mo, &res) == CM_OK && b3 != NULL);
    cm_cache_batch_finish(d, b3);
    for (i = 0; i < 3; i++) {
        CHECK(dropped[i].state == CM_CACHE_ITEM_ERROR && strcmp(dropped[i].res.code, "invalid") == 0);
        CHECK(strncmp(dropped[i].res.message, "item ", 5) == 0);
    }
    CHECK(cm_cache_count(d) == 0);
    /* an empty batch */
    CHECK(cm_cache_batch_start(&b3, dropped, 0, NULL, &res) == CM_OK);
    cm_cache_batch_finish(d, b3);
    CHECK(cm_cache_count(d) == 0);

    for (i = 0; i < NBATCH; i++) free(pems[i]);
    cm_cache_free(d);
    cm_cache_free(c);
}

int main(void)
{
    test_index_and_duplicates();
    test_wildcard();
    test_shared_names();
    test_due();
    test_staples();
    test_expired();
    test_errors_and_pem();
    test_many();
    pki_init();
    test_add_many();
    test_batch();
    test_view();
    free(ca_key);
    free(ca_pem);
    free(leaf_key);
    return CHECK_DONE();
}
