/* ocsp_batch.c - many OCSP responses checked on worker threads (ocsp_batch.h). */
#include "ocsp_batch.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "der.h"
#include "fileio.h"
#include "ocsp_der.h"
#include "ocsp_ssl.h"
#include "x509_ssl.h"

#define CLAIM 32u /* items a worker claims at once: fewer atomic operations, one inversion for their signatures */

/* A distinct issuer of the batch, decoded once. */
struct issuer {
    const unsigned char *der; /* the cache's, valid during start only (dedup) */
    size_t len;
    X509 *x;                  /* NULL: it failed to load (err) */
    X509_STORE *store;        /* verify only */
    struct cm_ocsp_fast_issuer fast; /* verify only: the fast path for what it signed itself */
    struct cm_result err;
};

/* What start gathered for one item. */
struct prep {
    size_t leaf_off, leaf_len; /* into leaves: the serialNumber's DER (serial_only), else the
                                * whole leaf */
    int serial_only;
    long issuer;               /* index into issuers; -1: failed before (item res) */
};

struct cm_ocsp_batch {
    struct cm_ocsp_batch_opts o;
    struct cm_ocsp_batch_item *items;
    size_t n;
    struct prep *prep;
    unsigned char *leaves; /* the leaf DER of every item, back to back */
    struct issuer *issuers;
    size_t nissuers;
    pthread_t tid[CM_OCSP_BATCH_MAX_THREADS];
    unsigned started;
    atomic_size_t next; /* next item to claim */
    atomic_size_t done; /* items checked */
    atomic_int stop;
    int keep; /* items read from a file keep the bytes (keep_der, or to attach them) */
};

void cm_ocsp_batch_opts_init(struct cm_ocsp_batch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->skew = CM_OCSP_DEFAULT_SKEW;
    o->threads = 2;
    o->max_bytes = CM_OCSP_MAX_INPUT;
    o->verify = 1;
}

double cm_ocsp_refresh_time(double this_update, double next_update, double not_after)
{
    double stop = next_update;
    if (not_after < stop) stop = not_after;
    if (stop <= this_update) return this_update;
    return this_update + (stop - this_update) / 2;
}

/* An item between its decoding and its check (check_range). */
struct pending {
    OCSP_RESPONSE *resp;
    OCSP_BASICRESP *bs;
    ASN1_INTEGER *serial;
    const struct issuer *is;
    unsigned char *der;     /* a copy of a file's bytes, to keep (b->keep), or to hand to
                             * OpenSSL if the DER path's signature is refused */
    size_t der_len;
    unsigned char dgst[EVP_MAX_MD_SIZE];
    unsigned int dlen;
    struct cm_ecdsa_check sig; /* fast: its signature, for cm_ecdsa_fixed_verify_many */
    unsigned char memo_key[CM_OCSP_MEMO_KEY];
    int decoded, fast, memo_hit;
    int der_fast;              /* read by ocsp_der.h (no OpenSSL objects): dr holds the facts */
    struct cm_ocsp_der_result dr;
};

static void pending_clear(struct pending *pd)
{
    ASN1_INTEGER_free(pd->serial);
    OCSP_BASICRESP_free(pd->bs);
    OCSP_RESPONSE_free(pd->resp);
    free(pd->der);
    memset(pd, 0, sizeof *pd);
}

/* A copy of a file's bytes in pd (the read buffer serves the next item). */
static int copy_der(struct pending *pd, const unsigned char *der, size_t der_len, struct cm_result *res)
{
    if (pd->der) return CM_OK;
    if (!(pd->der = malloc(der_len ? der_len : 1)))
        return cm_fail(res, "ENOMEM", "out of memory for the OCSP response read");
    memcpy(pd->der, der, der_len);
    pd->der_len = der_len;
    return CM_OK;
}

/* Item i decoded by OpenSSL into *pd (its response, serial, issuer), as
 * cm_ocsp_response_parse does; CM_ERR with the item's res saying why. */
static int decode_openssl(struct cm_ocsp_batch *b, size_t i, const unsigned char *der, size_t der_len,
                          struct pending *pd)
{
    struct cm_ocsp_batch_item *it = &b->items[i];
    const struct prep *p = &b->prep[i];
    if (cm_ssl_ocsp_decode(der, der_len, &pd->resp, &pd->bs, &it->res) != CM_OK) return CM_ERR;
    if (p->serial_only) {
        /* the INTEGER start took from the leaf: what the certificate template decodes */
        const unsigned char *q = b->leaves + p->leaf_off;
        if (!(pd->serial = d2i_ASN1_INTEGER(NULL, &q, (long)p->leaf_len)))
            return cm_fail_ssl(&it->res, "parse", "certificate: not a DER certificate");
    } else if (!(pd->serial = cm_ssl_cert_serial((const char *)b->leaves + p->leaf_off, p->leaf_len,
                                                 "certificate", &it->res))) {
        return CM_ERR;
    }
    pd->is = &b->issuers[p->issuer];
    if (!pd->is->x) {
        it->res = pd->is->err;
        return CM_ERR;
    }
    if (!it->der && b->keep && copy_der(pd, der, der_len, &it->res) != CM_OK) return CM_ERR;
    return CM_OK;
}

/* The memo's word on pd's signature (pd->sig set). */
static void memo_lookup(struct cm_ocsp_batch *b, struct cm_ocsp_batch_item *it, struct pending *pd)
{
    if (!b->o.memo) return;
    cm_ocsp_memo_key(pd->is->fast.key_sha256, pd->sig.dgst, pd->sig.dlen, pd->sig.sig, pd->sig.siglen,
                     pd->memo_key);
    /* checked good before, under this key: what verify_many would say again */
    pd->memo_hit = cm_ocsp_memo_has(b->o.memo, pd->memo_key);
    it->memo_hit = pd->memo_hit;
}

/* Read (a file's) and decode item i into *pd; on failure the item's res says
 * why and pd->decoded stays 0.  rd: the thread's read buffer. */
static void decode_item(struct cm_ocsp_batch *b, size_t i, struct cm_fileio_reader *rd, struct pending *pd)
{
    struct cm_ocsp_batch_item *it = &b->items[i];
    const struct prep *p = &b->prep[i];
    const unsigned char *der = it->der;
    size_t der_len = it->der_len;
    const struct issuer *is;

    memset(pd, 0, sizeof *pd);
    if (p->issuer < 0) return; /* start said why */
    if (!der && it->path) {
        size_t len = 0;
        /* the staples' folder held open: each read walks one component */
        if (cm_fileio_reader_read(rd, it->path, 1, b->o.max_bytes, &len, &it->res) != CM_OK) return;
        der = (const unsigned char *)rd->buf.data;
        der_len = len;
    }
    is = &b->issuers[p->issuer];
    /* the common case read on the bytes (ocsp_der.h): no decoding, no re-encoding */
    if (b->o.verify && p->serial_only && is->x && is->fast.key &&
        cm_ocsp_der_check(&is->fast, der, der_len, b->leaves + p->leaf_off, p->leaf_len, b->o.now, b->o.skew,
                          &pd->dr)) {
        if (!it->der && copy_der(pd, der, der_len, &it->res) != CM_OK) goto fail;
        pd->is = is;
        pd->der_fast = pd->decoded = pd->fast = 1;
        pd->sig.dgst = pd->dr.dgst;
        pd->sig.dlen = pd->dr.dlen;
        pd->sig.sig = pd->dr.sig;
        pd->sig.siglen = pd->dr.siglen;
        memo_lookup(b, it, pd);
        ERR_clear_error();
        return;
    }
    if (decode_openssl(b, i, der, der_len, pd) != CM_OK) goto fail;
    pd->decoded = 1;
    if (b->o.verify &&
        cm_ocsp_fast_prepare(&pd->is->fast, pd->bs, pd->dgst, &pd->dlen, &pd->sig.sig, &pd->sig.siglen)) {
        pd->sig.dgst = pd->dgst;
        pd->sig.dlen = pd->dlen;
        pd->fast = 1;
        memo_lookup(b, it, pd);
    }
    ERR_clear_error();
    return;
fail:
    ERR_clear_error();
    pending_clear(pd);
}

/* The rest of item i's check, its signature known good when signed. */
static void check_decoded(struct cm_ocsp_batch *b, size_t i, struct pending *pd, int signed_ok)
{
    struct cm_ocsp_batch_item *it = &b->items[i];
    if (!pd->decoded) return;
    if (pd->der_fast) {
        if (signed_ok) {
            it->info = pd->dr.info;
            goto good;
        }
        /* a signature the fast check refused: OpenSSL decodes it and says why */
        if (decode_openssl(b, i, it->der ? it->der : pd->der, it->der ? it->der_len : pd->der_len, pd) != CM_OK)
            goto out;
    }
    if (cm_ssl_ocsp_check(pd->bs, pd->serial, pd->is->x, pd->is->store, signed_ok, b->o.verify, b->o.now,
                          b->o.skew, &it->info, &it->res) != CM_OK)
        goto out;
good:
    it->ok = 1;
    if (pd->der && b->keep) {
        it->file_der = pd->der;
        it->file_der_len = pd->der_len;
        pd->der = NULL;
    }
    cm_result_clear(&it->res);
out:
    ERR_clear_error();
    pending_clear(pd);
}

/* Items [first, last) (at most CLAIM): decoded, the signatures of those an
 * issuer signed itself checked together (one inversion for all), then the
 * rest of each check. */
static void check_range(struct cm_ocsp_batch *b, size_t first, size_t last, struct cm_fileio_reader *rd)
{
    struct pending pd[CLAIM];
    struct cm_ecdsa_check sigs[CLAIM];
    size_t i, j, k, n = last - first, m;
    for (i = 0; i < n; i++) decode_item(b, first + i, rd, &pd[i]);
    /* one verify_many a key (a batch has one or two issuers) */
    for (i = 0; i < n; i++)
        if (pd[i].memo_hit) pd[i].sig.ok = -1; /* done: fast stays 1 */
    for (i = 0; i < n; i++) {
        const struct cm_ecdsa_fixed *key;
        if (!pd[i].fast || pd[i].sig.ok == -1) continue;
        key = pd[i].is->fast.key;
        for (j = i, m = 0; j < n; j++)
            if (pd[j].fast && pd[j].sig.ok != -1 && pd[j].is->fast.key == key) sigs[m++] = pd[j].sig;
        cm_ecdsa_fixed_verify_many(key, sigs, m);
        for (j = i, k = 0; j < n; j++)
            if (pd[j].fast && pd[j].sig.ok != -1 && pd[j].is->fast.key == key) {
                pd[j].sig.ok = sigs[k++].ok ? 1 : 0;
                pd[j].fast = pd[j].sig.ok; /* a signature it refused: OpenSSL says why */
                pd[j].sig.ok = -1;         /* done */
                if (pd[j].fast && b->o.memo) {
                    b->items[first + j].memo_new = 1;
                    memcpy(b->items[first + j].memo_key, pd[j].memo_key, CM_OCSP_MEMO_KEY);
                }
            }
    }
    for (i = 0; i < n; i++) check_decoded(b, first + i, &pd[i], pd[i].fast);
}

static void *worker(void *arg)
{
    struct cm_ocsp_batch *b = arg;
    struct cm_fileio_reader rd;
    cm_fileio_reader_init(&rd);
    for (;;) {
        size_t first, last;
        if (atomic_load_explicit(&b->stop, memory_order_relaxed)) break;
        first = atomic_fetch_add_explicit(&b->next, CLAIM, memory_order_relaxed);
        if (first >= b->n) break;
        last = first + CLAIM < b->n ? first + CLAIM : b->n;
        check_range(b, first, last, &rd);
        atomic_fetch_add_explicit(&b->done, last - first, memory_order_release);
    }
    cm_fileio_reader_free(&rd);
    /* OpenSSL's per-thread error queue and caches */
    OPENSSL_thread_stop();
    return NULL;
}

static void batch_free(struct cm_ocsp_batch *b)
{
    size_t k;
    unsigned t;
    if (!b) return;
    atomic_store(&b->stop, 1);
    for (t = 0; t < b->started; t++) pthread_join(b->tid[t], NULL);
    b->started = 0;
    for (k = 0; k < b->nissuers; k++) {
        cm_ocsp_fast_issuer_clear(&b->issuers[k].fast);
        X509_STORE_free(b->issuers[k].store);
        X509_free(b->issuers[k].x);
    }
    free(b->issuers);
    free(b->leaves);
    free(b->prep);
    free(b);
}

/* The DER of the first certificate of a chain (the issuer): its first element. */
static size_t first_cert_len(const unsigned char *chain, size_t len)
{
    struct cm_der d = cm_der_init(chain, len);
    struct cm_der_elem e;
    if (cm_der_next(&d, &e) != CM_OK) return len; /* the loader reports it */
    return (size_t)(d.p - chain);
}

/* The serialNumber element (tag, length, contents) of a DER certificate,
 * read strictly: SEQUENCE { SEQUENCE { [0] version OPTIONAL, INTEGER, ... }
 * ... }.  0 when it does not read so (the worker then decodes the whole
 * leaf, as cm_ocsp_response_parse does).  Only the serial is needed of the
 * certificate an OCSP response is about; a decode of the leaf was a fifth of
 * an RSA check. */
static int serial_element(const unsigned char *der, size_t len, const unsigned char **at,
                          size_t *n)
{
    struct cm_der d = cm_der_init(der, len), tbs;
    struct cm_der_elem cert, tbs_e, e;
    int present;
    const unsigned char *start;
    if (cm_der_expect(&d, CM_DER_SEQUENCE, &cert) != CM_OK) return 0;
    d = cm_der_inside(&cert);
    if (cm_der_expect(&d, CM_DER_SEQUENCE, &tbs_e) != CM_OK) return 0;
    tbs = cm_der_inside(&tbs_e);
    if (cm_der_optional(&tbs, CM_DER_CONTEXT_CONS(0), &e, &present) != CM_OK) return 0;
    start = tbs.p;
    if (cm_der_expect(&tbs, CM_DER_INTEGER, &e) != CM_OK) return 0;
    if (cm_der_integer_ok(e.body, e.len) != CM_OK) return 0;
    *at = start;
    *n = (size_t)(tbs.p - start);
    return 1;
}

/* Small open-addressing index of the distinct issuers, keyed by length and
 * the certificate's last bytes (its signature: as good as random). */
struct issuer_index {
    long *slot; /* issuer index, -1 empty */
    size_t mask;
};

static uint64_t issuer_key(const unsigned char *der, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ len;
    size_t k, from = len > 16 ? len - 16 : 0;
    for (k = from; k < len; k++) h = (h ^ der[k]) * 1099511628211ull;
    return h;
}

/* The issuer index for der (adding and loading it when new); -1 out of memory. */
static long issuer_of(struct cm_ocsp_batch *b, struct issuer_index *ix, size_t *cap,
                      const unsigned char *der, size_t len)
{
    size_t h = (size_t)issuer_key(der, len) & ix->mask;
    struct issuer *is;
    while (ix->slot[h] >= 0) {
        is = &b->issuers[ix->slot[h]];
        if (is->len == len && memcmp(is->der, der, len) == 0) return ix->slot[h];
        h = (h + 1) & ix->mask;
    }
    if (b->nissuers >= ix->mask) return -1; /* never with the table at 2n slots, n < 2^19 */
    if (b->nissuers == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct issuer *grown = realloc(b->issuers, ncap * sizeof *grown);
        if (!grown) return -1;
        b->issuers = grown;
        *cap = ncap;
    }
    is = &b->issuers[b->nissuers];
    memset(is, 0, sizeof *is);
    is->der = der;
    is->len = len;
    if ((is->x = cm_ssl_load_issuer((const char *)der, len, "issuer certificate", &is->err)) &&
        b->o.verify && !(is->store = cm_ssl_ocsp_trust(is->x, b->o.now, &is->err))) {
        X509_free(is->x);
        is->x = NULL;
    }
    if (is->store) cm_ocsp_fast_issuer_init(&is->fast, is->x, is->store);
    ERR_clear_error();
    ix->slot[h] = (long)b->nissuers;
    return (long)b->nissuers++;
}

int cm_ocsp_batch_start(struct cm_ocsp_batch **out, struct cm_cache *c,
                        struct cm_ocsp_batch_item *items, size_t n,
                        const struct cm_ocsp_batch_opts *opts, struct cm_result *res)
{
    struct cm_ocsp_batch *b = NULL;
    struct issuer_index ix = {NULL, 0};
    struct cm_cache_view v;
    size_t i, total = 0, at = 0, cap = 0, want;
    unsigned t, nthreads;

    *out = NULL;
    if (!(b = calloc(1, sizeof *b))) goto nomem;
    if (opts) b->o = *opts;
    else cm_ocsp_batch_opts_init(&b->o);
    if (b->o.now < 0 || b->o.skew < 0 || b->o.max_bytes == 0 || n >= (1u << 19) ||
        b->o.max_bytes > CM_OCSP_MAX_INPUT || b->o.threads > CM_OCSP_BATCH_MAX_THREADS) {
        batch_free(b);
        return cm_fail(res, "invalid",
                       "ocsp batch: now, skew, max_bytes, threads or the item count out of range");
    }
    b->items = items;
    b->n = n;
    b->keep = b->o.keep_der || b->o.attach;
    atomic_init(&b->next, 0);
    atomic_init(&b->done, 0);
    atomic_init(&b->stop, 0);
    if (n == 0) {
        *out = b;
        return CM_OK;
    }
    if (!(b->prep = calloc(n, sizeof *b->prep))) goto nomem;
    for (want = 16; want < 2 * n && want < (1u << 20); want *= 2) {}
    /* distinct issuers are few; the table is sized for the worst case anyway */
    if (!(ix.slot = malloc(want * sizeof *ix.slot))) goto nomem;
    ix.mask = want - 1;
    for (i = 0; i < want; i++) ix.slot[i] = -1;
    for (i = 0; i < n; i++) {
        struct cm_ocsp_batch_item *it = &items[i];
        it->ok = it->attached = it->attach_failed = 0;
        it->memo_hit = it->memo_new = 0;
        memset(&it->info, 0, sizeof it->info);
        it->refresh_at = NAN;
        it->file_der = NULL;
        it->file_der_len = 0;
        cm_result_clear(&it->res);
        b->prep[i].issuer = -1;
        if (!cm_cache_view(c, &it->id, &v)) {
            cm_fail(&it->res, "absent", "no certificate with this id in the cache");
        } else if (!v.chain_der || v.chain_count == 0) {
            cm_fail(&it->res, "chain", "the chain holds no issuer certificate to verify a response with");
        } else if (!it->der && !it->path) {
            cm_fail(&it->res, "invalid", "no OCSP response and no file to read it from");
        } else {
            long k = issuer_of(b, &ix, &cap, v.chain_der, first_cert_len(v.chain_der, v.chain_der_len));
            if (k < 0) goto nomem;
            const unsigned char *ser;
            size_t ser_len;
            b->prep[i].issuer = k;
            b->prep[i].serial_only = serial_element(v.der, v.der_len, &ser, &ser_len);
            b->prep[i].leaf_len = b->prep[i].serial_only ? ser_len : v.der_len;
            total += b->prep[i].leaf_len;
        }
    }
    free(ix.slot); ix.slot = NULL;
    if (!(b->leaves = malloc(total ? total : 1))) goto nomem;
    for (i = 0; i < n; i++) {
        if (b->prep[i].issuer < 0) continue;
        const unsigned char *from;
        size_t len;
        cm_cache_view(c, &items[i].id, &v); /* the same cache, unchanged since the pass above */
        from = v.der;
        if (!b->prep[i].serial_only || !serial_element(v.der, v.der_len, &from, &len)) from = v.der;
        memcpy(b->leaves + at, from, b->prep[i].leaf_len);
        b->prep[i].leaf_off = at;
        at += b->prep[i].leaf_len;
    }
    /* the cache's bytes are not ours to keep: only the decoded issuers stay */
    for (i = 0; i < b->nissuers; i++) b->issuers[i].der = NULL;
    nthreads = b->o.threads;
    if ((size_t)nthreads > (n + CLAIM - 1) / CLAIM) nthreads = (unsigned)((n + CLAIM - 1) / CLAIM);
    /* a thread that cannot be made is only less parallelism (finish does the rest) */
    for (t = 0; t < nthreads; t++) {
        if (pthread_create(&b->tid[t], NULL, worker, b) != 0) break;
        b->started++;
    }
    *out = b;
    return CM_OK;
nomem:
    free(ix.slot);
    batch_free(b);
    return cm_fail(res, "ENOMEM", "ocsp batch: out of memory");
}

int cm_ocsp_batch_ready(struct cm_ocsp_batch *b)
{
    if (!b || b->started == 0) return 1;
    return atomic_load_explicit(&b->done, memory_order_acquire) >= b->n;
}

/* Attach item it as its entry's staple when the OCSP pass would take it. */
static void attach(struct cm_cache *c, const struct cm_ocsp_batch_opts *o,
                   struct cm_ocsp_batch_item *it)
{
    struct cm_cache_view v;
    struct cm_cache_staple st;
    struct cm_cache_update u;
    struct cm_result r;

    if (!cm_cache_view(c, &it->id, &v)) return; /* gone meanwhile */
    it->refresh_at = cm_ocsp_refresh_time((double)it->info.this_update,
                                          (double)it->info.next_update, (double)v.not_after);
    if (!o->attach || !o->verify || o->now <= 0) return;
    if (it->info.status == CM_OCSP_UNKNOWN || it->info.next_update == 0) return;
    if (o->attach_good_only && it->info.status != CM_OCSP_GOOD) return;
    if (!(it->refresh_at > (double)o->now)) return;
    if ((v.flags & CM_CACHE_HAS_STAPLE) && !((double)it->info.this_update > v.staple.this_update))
        return;
    memset(&st, 0, sizeof st);
    st.status = it->info.status;
    st.this_update = (double)it->info.this_update;
    st.next_update = (double)it->info.next_update;
    st.refresh_at = it->refresh_at;
    st.der = it->der ? it->der : it->file_der;
    st.der_len = it->der ? it->der_len : it->file_der_len;
    memset(&u, 0, sizeof u);
    u.fields = CM_CACHE_SET_OCSP;
    u.ocsp = &st;
    if (cm_cache_set(c, &it->id, &u, &r) != CM_OK) {
        it->attach_failed = 1;
        it->res = r;
        return;
    }
    it->attached = 1;
}

void cm_ocsp_batch_finish(struct cm_cache *c, struct cm_ocsp_batch *b)
{
    size_t i;
    unsigned t;
    int drop_der;
    if (!b) return;
    for (t = 0; t < b->started; t++) pthread_join(b->tid[t], NULL);
    b->started = 0;
    /* what no thread claimed (none ran, or some could not be made) */
    if (atomic_load(&b->next) < b->n) {
        struct cm_fileio_reader rd;
        cm_fileio_reader_init(&rd);
        for (i = atomic_load(&b->next); i < b->n; i += CLAIM)
            check_range(b, i, i + CLAIM < b->n ? i + CLAIM : b->n, &rd);
        cm_fileio_reader_free(&rd);
    }
    /* attaching a file's response needs its bytes: kept for it, then
     * dropped unless the caller asked for them */
    drop_der = !b->o.keep_der;
    for (i = 0; i < b->n; i++) {
        struct cm_ocsp_batch_item *it = &b->items[i];
        if (it->ok) attach(c, &b->o, it);
        /* a memo out of memory only checks that signature again next time */
        if (it->ok && it->memo_new) (void)cm_ocsp_memo_add(b->o.memo, it->memo_key, NULL);
        if (drop_der) {
            free(it->file_der);
            it->file_der = NULL;
            it->file_der_len = 0;
        }
    }
    batch_free(b);
}

void cm_ocsp_batch_free(struct cm_ocsp_batch *b)
{
    batch_free(b);
}

void cm_ocsp_batch_items_free(struct cm_ocsp_batch_item *items, size_t n)
{
    size_t i;
    for (i = 0; items && i < n; i++) {
        free(items[i].file_der);
        items[i].file_der = NULL;
        items[i].file_der_len = 0;
    }
}

int cm_ocsp_verify_many(struct cm_cache *c, struct cm_ocsp_batch_item *items, size_t n,
                        const struct cm_ocsp_batch_opts *opts, struct cm_result *res)
{
    struct cm_ocsp_batch *b = NULL;
    if (cm_ocsp_batch_start(&b, c, items, n, opts, res) != CM_OK) return CM_ERR;
    cm_ocsp_batch_finish(c, b);
    return CM_OK;
}
