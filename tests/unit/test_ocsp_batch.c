/* test_ocsp_batch.c - core/ocsp_batch.c against the OCSP fixtures
 * (tests/fixtures/ocsp/README.md): every item's outcome equals what
 * cm_ocsp_response_parse gives for the same response, leaf and issuer, with
 * 0 or 2 threads, from memory or files; attaching; what only a batch can
 * fail with (absent entry, no issuer, a file missing or too big). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "check.h"
#include "fileio.h"
#include "ocsp.h"
#include "ocsp_batch.h"
#include "x509.h"

#define T 1767225600LL /* the fixtures' thisUpdate */
#define NOW (T + 3600)
#define DAY 86400LL

static struct blob fixture(const char *name) { return check_fixture("ocsp", name); }

/* A cache entry for the chain leaf + issuer (fixture names); *pem_out gets
 * the leaf PEM (the caller frees). */
static struct cm_cache_id add_chain(struct cm_cache *c, const char *leaf, const char *issuer)
{
    struct blob l = fixture(leaf), i = fixture(issuer);
    size_t len = l.len + i.len;
    char *pem = malloc(len + 1);
    struct cm_cert_facts f;
    struct cm_result res;
    struct cm_cache_id id;
    int existed = 0;
    memcpy(pem, l.data, l.len);
    memcpy(pem + l.len, i.data, i.len);
    pem[len] = '\0';
    memset(&id, 0, sizeof id);
    CHECK(cm_x509_parse_chain(pem, len, &f, &res) == CM_OK);
    CHECK(cm_cache_add(c, &f, NULL, &id, &existed, &res) == CM_OK);
    cm_cert_facts_free(&f);
    free(pem);
    free(l.data);
    free(i.data);
    return id;
}

/* One case of the mixed batch: which response about which entry. */
struct tcase {
    const char *response; /* fixture, or NULL: a missing file */
    const char *leaf, *issuer;
    const char *code;     /* "" for success */
};

static const struct tcase cases[] = {
    {"ocsp_good.der", "leaf.pem", "ca.pem", ""},
    {"ocsp_revoked_1.der", "leaf.pem", "ca.pem", ""},
    {"ocsp_unknown.der", "leaf.pem", "ca.pem", ""},
    {"ocsp_delegated.der", "leaf.pem", "ca.pem", ""},
    {"ocsp_good_no_next.der", "leaf.pem", "ca.pem", ""},
    {"ocsp_good.der", "leaf_must_staple.pem", "other_ca.pem", "verify"}, /* wrong issuer */
    {"ocsp_good.der", "leaf_crl_only.pem", "ca.pem", "mismatch"},        /* not about it */
    {"ocsp_wrong_key.der", "leaf.pem", "ca.pem", "verify"},              /* bad signature */
    {"ocsp_delegated_no_eku.der", "leaf.pem", "ca.pem", "verify"},
    {"ocsp_truncated.der", "leaf.pem", "ca.pem", "parse"},
    {"ocsp_trailing.der", "leaf.pem", "ca.pem", "parse"},
    {"ocsp_garbage.der", "leaf.pem", "ca.pem", "parse"},
    {"ocsp_stale.der", "leaf.pem", "ca.pem", "stale"},
    {"ocsp_notyet.der", "leaf.pem", "ca.pem", "notyet"},
    {"ocsp_status_tryLater.der", "leaf.pem", "ca.pem", "ocsp:tryLater"},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define REPEAT 7 /* the cases over and over: more items than threads claim at once */

static struct blob responses[NCASES];
static struct cm_cache_id ids[NCASES];
static struct cm_ocsp_info want_info[NCASES];
static struct cm_result want_res[NCASES];
static char dir[] = "/tmp/test_ocsp_batch.XXXXXX";
static char paths[NCASES][256];

static void expect_same(const struct cm_ocsp_batch_item *it, size_t k)
{
    if (cases[k].code[0]) {
        CHECK(!it->ok);
        CHECK_STR(it->res.code, cases[k].code);
        CHECK_STR(it->res.code, want_res[k].code);
        /* the message too (OpenSSL's queue appended), as the single call's */
        CHECK_STR(it->res.message, want_res[k].message);
    } else {
        if (!it->ok) fprintf(stderr, "case %zu: %s (%s)\n", k, it->res.code, it->res.message);
        CHECK(it->ok);
        CHECK(memcmp(&it->info, &want_info[k], sizeof it->info) == 0);
    }
}

/* The mixed batch (REPEAT times the cases) with `threads`, from memory or
 * from files: every outcome is the single call's. */
static void test_mixed(struct cm_cache *c, unsigned threads, int files)
{
    size_t n = NCASES * REPEAT, i;
    struct cm_ocsp_batch_item *items = calloc(n, sizeof *items);
    struct cm_ocsp_batch_opts o;
    struct cm_result res;

    for (i = 0; i < n; i++) {
        size_t k = i % NCASES;
        items[i].id = ids[k];
        if (files) items[i].path = paths[k];
        else {
            items[i].der = (const unsigned char *)responses[k].data;
            items[i].der_len = responses[k].len;
        }
    }
    cm_ocsp_batch_opts_init(&o);
    o.now = NOW;
    o.threads = threads;
    o.keep_der = files;
    CHECK(cm_ocsp_verify_many(c, items, n, &o, &res) == CM_OK);
    for (i = 0; i < n; i++) {
        size_t k = i % NCASES;
        expect_same(&items[i], k);
        CHECK(!items[i].attached);
        if (files && items[i].ok) {
            CHECK(items[i].file_der_len == responses[k].len &&
                  memcmp(items[i].file_der, responses[k].data, responses[k].len) == 0);
        } else {
            CHECK(items[i].file_der == NULL);
        }
        /* refresh_at: half-way through this..next (certificates outlive the responses) */
        if (items[i].ok && items[i].info.next_update)
            CHECK(items[i].refresh_at == (double)T + 3.5 * DAY);
    }
    cm_ocsp_batch_items_free(items, n);
    free(items);
}

/* Two-step with threads: ready never blocks, finish gives the same; a
 * batch freed unfinished joins its threads and attaches nothing. */
static void test_two_step(struct cm_cache *c)
{
    size_t n = NCASES * REPEAT, i;
    struct cm_ocsp_batch_item *items = calloc(n, sizeof *items);
    struct cm_ocsp_batch_opts o;
    struct cm_ocsp_batch *b = NULL;
    struct cm_result res;

    for (i = 0; i < n; i++) {
        items[i].id = ids[i % NCASES];
        items[i].der = (const unsigned char *)responses[i % NCASES].data;
        items[i].der_len = responses[i % NCASES].len;
    }
    cm_ocsp_batch_opts_init(&o);
    o.now = NOW;
    o.threads = 2;
    CHECK(cm_ocsp_batch_start(&b, c, items, n, &o, &res) == CM_OK && b);
    while (!cm_ocsp_batch_ready(b)) usleep(1000);
    cm_ocsp_batch_finish(c, b);
    for (i = 0; i < n; i++) expect_same(&items[i], i % NCASES);

    o.attach = 1;
    CHECK(cm_ocsp_batch_start(&b, c, items, n, &o, &res) == CM_OK && b);
    cm_ocsp_batch_free(b);
    for (i = 0; i < NCASES; i++) {
        struct cm_cache_view v;
        CHECK(cm_cache_view(c, &ids[i], &v) == 1);
        CHECK(!(v.flags & CM_CACHE_HAS_STAPLE));
    }
    /* options out of range: nothing started */
    o.threads = CM_OCSP_BATCH_MAX_THREADS + 1;
    CHECK(cm_ocsp_batch_start(&b, c, items, n, &o, &res) == CM_ERR && !b);
    CHECK_STR(res.code, "invalid");
    free(items);
}

/* What only the batch fails with: the entry or its issuer missing, the file. */
static void test_batch_failures(struct cm_cache *c)
{
    struct cm_ocsp_batch_item items[4];
    struct cm_ocsp_batch_opts o;
    struct cm_result res;
    struct cm_cache_id lonely;
    struct blob l = fixture("rogue_responder.pem");
    struct cm_cert_facts f;
    char missing[300];
    int existed;

    /* an entry without the rest of its chain */
    CHECK(cm_x509_parse_chain(l.data, l.len, &f, &res) == CM_OK);
    CHECK(cm_cache_add(c, &f, NULL, &lonely, &existed, &res) == CM_OK);
    cm_cert_facts_free(&f);
    free(l.data);
    snprintf(missing, sizeof missing, "%s/nothing-here.der", dir);
    memset(items, 0, sizeof items);
    memset(items[0].id.sha256, 0xab, 32); /* no such entry */
    items[0].der = (const unsigned char *)responses[0].data;
    items[0].der_len = responses[0].len;
    items[1].id = lonely;
    items[1].der = items[0].der;
    items[1].der_len = items[0].der_len;
    items[2].id = ids[0];
    items[2].path = missing;
    items[3].id = ids[0];
    items[3].path = paths[0]; /* larger than max_bytes below */
    cm_ocsp_batch_opts_init(&o);
    o.now = NOW;
    o.max_bytes = responses[0].len - 1;
    CHECK(cm_ocsp_verify_many(c, items, 4, &o, &res) == CM_OK);
    CHECK(!items[0].ok);
    CHECK_STR(items[0].res.code, "absent");
    CHECK(!items[1].ok);
    CHECK_STR(items[1].res.code, "chain");
    CHECK(!items[2].ok);
    CHECK_STR(items[2].res.code, "ENOENT");
    CHECK(!items[3].ok);
    CHECK_STR(items[3].res.code, "toobig");
    cm_cache_remove(c, &lonely);
}

/* verify = 0: a response signed by a responder without authority parses; the other checks stay. */
static void test_parse_only(struct cm_cache *c)
{
    struct cm_ocsp_batch_item items[3];
    struct cm_ocsp_batch_opts o;
    struct cm_result res;
    static const char *const names[3] = {"ocsp_delegated_no_eku.der", "ocsp_stale.der", "ocsp_good.der"};
    size_t i;
    memset(items, 0, sizeof items);
    for (i = 0; i < 3; i++) {
        items[i].id = ids[0];
        items[i].der = (const unsigned char *)responses[0].data;
        items[i].der_len = responses[0].len;
    }
    for (i = 0; i < NCASES; i++) {
        if (strcmp(cases[i].response, names[0]) == 0) items[0].der = (const unsigned char *)responses[i].data, items[0].der_len = responses[i].len;
        if (strcmp(cases[i].response, names[1]) == 0) items[1].der = (const unsigned char *)responses[i].data, items[1].der_len = responses[i].len;
    }
    items[2].id = ids[6]; /* leaf_crl_only: not what ocsp_good is about */
    cm_ocsp_batch_opts_init(&o);
    o.now = NOW;
    o.verify = 0;
    o.threads = 0;
    CHECK(cm_ocsp_verify_many(c, items, 3, &o, &res) == CM_OK);
    CHECK(items[0].ok && items[0].info.status == CM_OCSP_GOOD);
    CHECK(!items[1].ok);
    CHECK_STR(items[1].res.code, "stale");
    CHECK(!items[2].ok);
    CHECK_STR(items[2].res.code, "mismatch");
}

/* Index of the case with response fixture name. */
static size_t case_of(const char *name)
{
    size_t k;
    for (k = 0; k < NCASES; k++)
        if (strcmp(cases[k].response, name) == 0 && strcmp(cases[k].leaf, "leaf.pem") == 0) return k;
    fprintf(stderr, "no case %s\n", name);
    exit(2);
}

/* One batch of one response (case k) about leaf.pem with attach = 1: was it attached? */
static int attach_one(struct cm_cache *c, size_t k, int files)
{
    struct cm_ocsp_batch_item it;
    struct cm_ocsp_batch_opts o;
    struct cm_result res;
    memset(&it, 0, sizeof it);
    it.id = ids[k];
    if (files) it.path = paths[k];
    else {
        it.der = (const unsigned char *)responses[k].data;
        it.der_len = responses[k].len;
    }
    cm_ocsp_batch_opts_init(&o);
    o.now = NOW;
    o.attach = 1;
    o.threads = files ? 2 : 0;
    CHECK(cm_ocsp_verify_many(c, &it, 1, &o, &res) == CM_OK);
    expect_same(&it, k);
    CHECK(it.file_der == NULL); /* kept for attaching only */
    CHECK(!it.attach_failed);
    return it.attached;
}

static void clear_staple(struct cm_cache *c, const struct cm_cache_id *id)
{
    struct cm_cache_update u;
    struct cm_result res;
    memset(&u, 0, sizeof u);
    u.fields = CM_CACHE_SET_OCSP; /* ocsp NULL: clear */
    CHECK(cm_cache_set(c, id, &u, &res) == CM_OK);
}

/* attach = 1 takes what the OCSP pass takes from storage: good or revoked
 * with a nextUpdate, onto an entry with no staple or an older one. */
static void test_attach(struct cm_cache *c, int files)
{
    size_t good = case_of("ocsp_good.der"), revoked = case_of("ocsp_revoked_1.der");
    struct cm_cache_view v;
    clear_staple(c, &ids[good]);
    CHECK(!attach_one(c, case_of("ocsp_unknown.der"), files));
    CHECK(!attach_one(c, case_of("ocsp_good_no_next.der"), files));
    CHECK(!attach_one(c, case_of("ocsp_wrong_key.der"), files));
    CHECK(!attach_one(c, case_of("ocsp_stale.der"), files));
    CHECK(cm_cache_view(c, &ids[good], &v) == 1 && !(v.flags & CM_CACHE_HAS_STAPLE));
    CHECK(attach_one(c, revoked, files));
    CHECK(cm_cache_view(c, &ids[good], &v) == 1 && (v.flags & CM_CACHE_HAS_STAPLE));
    CHECK(v.staple.status == CM_OCSP_REVOKED);
    CHECK(v.staple.this_update == (double)T && v.staple.next_update == (double)(T + 7 * DAY));
    CHECK(v.staple.refresh_at == (double)T + 3.5 * DAY);
    CHECK(v.staple.der_len == responses[revoked].len &&
          memcmp(v.staple.der, responses[revoked].data, v.staple.der_len) == 0);
    /* the same thisUpdate is not newer: the staple stays */
    CHECK(!attach_one(c, good, files));
    CHECK(cm_cache_view(c, &ids[good], &v) == 1 && v.staple.status == CM_OCSP_REVOKED);
    clear_staple(c, &ids[good]);
    CHECK(attach_one(c, good, files));
    CHECK(cm_cache_view(c, &ids[good], &v) == 1 && v.staple.status == CM_OCSP_GOOD);
    clear_staple(c, &ids[good]);
}

int main(void)
{
    struct cm_cache *c;
    struct cm_result res;
    struct blob ca = fixture("ca.pem");
    size_t k;

    CHECK(mkdtemp(dir) != NULL);
    CHECK((c = cm_cache_new(&res)) != NULL);
    for (k = 0; k < NCASES; k++) {
        struct blob cert = fixture(cases[k].leaf), issuer = fixture(cases[k].issuer);
        responses[k] = fixture(cases[k].response);
        ids[k] = add_chain(c, cases[k].leaf, cases[k].issuer);
        snprintf(paths[k], sizeof paths[k], "%s/%zu.der", dir, k);
        CHECK(cm_fileio_write_atomic(paths[k], responses[k].data, responses[k].len, 0600, &res) == CM_OK);
        /* what the single call says is what every batch must say */
        cm_result_clear(&want_res[k]);
        cm_ocsp_response_parse((const unsigned char *)responses[k].data, responses[k].len,
                               cert.data, cert.len, issuer.data, issuer.len, NOW,
                               CM_OCSP_DEFAULT_SKEW, &want_info[k], &want_res[k]);
        CHECK_STR(want_res[k].code, cases[k].code);
        free(cert.data);
        free(issuer.data);
    }
    /* case 3 (delegated) shares leaf.pem's entry with case 0: attached once */
    CHECK(memcmp(&ids[0], &ids[3], sizeof ids[0]) == 0);
    test_mixed(c, 0, 0);
    test_mixed(c, 2, 0);
    test_mixed(c, 0, 1);
    test_mixed(c, 2, 1);
    test_two_step(c);
    test_batch_failures(c);
    test_parse_only(c);
    test_attach(c, 0);
    test_attach(c, 1);
    for (k = 0; k < NCASES; k++) {
        unlink(paths[k]);
        free(responses[k].data);
    }
    rmdir(dir);
    cm_cache_free(c);
    free(ca.data);
    return CHECK_DONE();
}
