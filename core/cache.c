/* cache.c - the certificate cache (see cache.h for the layout and the contract).
 *
 * Slots 0..n-1 are dense.  Slot i has its hot facts in the parallel arrays
 * (due_at[i], staple_at[i], not_after[i], flags[i]) and its cold facts in
 * ent[i].  The hot times are precomputed so a scan is one comparison a slot:
 *
 *   due_at    = managed ? max(renew_at, next_attempt) : +inf
 *   staple_at = no OCSP URL ? +inf : no staple ? -inf : staple refresh_at
 *
 * Each entry's immutable facts are packed into one allocation (the blob):
 *
 *   sha256 | strings, NUL-terminated | pad to 4 | uint32 off[nstr + 1] | leaf DER | chain DER
 *
 * with strings in the order names..., serial, issuer, subject, ocsp..., crl...
 * and off[k] the offset (from the blob's start) of string k, off[nstr] the end
 * of the strings, so a string's length is off[k+1] - off[k] - 1.  The names
 * follow the id directly: a lookup hit reads both from one place.
 *
 * The name table's buckets point at their name inside the blob (blobs never
 * move), so a probe compares names without touching the entry array.
 */
#include "cache.h"
#include "encoding.h"
#include "fileio.h"
#include "renewal.h"
#include "x509.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EMPTY UINT32_MAX
#define MIN_SLOTS 16u
#define MIN_BUCKETS 32u
#define NAME_STACK 256 /* names up to this long are lower-cased on the stack */

struct id_bucket {
    uint32_t tag; /* low 32 bits of the id's hash: home bucket = tag & mask */
    uint32_t slot;
};

struct name_bucket {
    uint32_t tag; /* low 32 bits of the name's hash */
    uint32_t slot;
    const unsigned char *blob;   /* the entry's blob: id at 0, ... */
    uint32_t name_off, name_len; /* ... the name at name_off */
};

struct entry {
    unsigned char sha256[32];
    unsigned char *blob;
    char *last_error;
    unsigned char *staple_der;
    double renew_at, next_attempt;
    double staple_this, staple_next, staple_refresh;
    int64_t not_before, not_after;
    uint32_t blob_len, off_off, der_off, der_len, chain_len, chain_count;
    uint32_t staple_len, attempts;
    uint16_t nnames, nocsp, ncrl;
    uint8_t staple_status;
    uint8_t fixed_flags; /* CM_CACHE_MUST_STAPLE, CM_CACHE_CRL_ONLY: facts of the certificate */
    uint8_t pem_fnv_ok;  /* pem_fnv holds FNV-1a 32 of the chain's PEM (certmagic's staple key) */
    uint32_t pem_fnv;    /* made with the entry (on the load's threads): the OCSP pass needs it of each */
};

struct cm_cache {
    /* hot, parallel, capacity `cap` */
    double *due_at, *staple_at, *not_after;
    uint8_t *flags;
    /* cold */
    struct entry *ent;
    uint32_t n, cap;
    /* indexes */
    struct id_bucket *idt;
    uint32_t id_mask;
    struct name_bucket *nt;
    uint32_t name_mask, name_count;
    /* accounting */
    size_t blob_bytes, der_bytes, extra_bytes;
};

/* ---- small helpers ------------------------------------------------------ */

static uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Hash of an already lower-cased name, a word at a time: names are hashed on
 * every lookup, so this is on the hot path of the TLS handshake. */
static uint32_t name_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n, w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    return (uint32_t)mix64(h);
}

static char lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

#define BLOB_SHA 32 /* the blob starts with the leaf hash */

static const uint32_t *blob_off(const struct entry *e)
{
    return (const uint32_t *)(const void *)(e->blob + e->off_off);
}

static const char *blob_str(const struct entry *e, uint32_t k, uint32_t *len)
{
    const uint32_t *off = blob_off(e);
    if (len) *len = off[k + 1] - off[k] - 1;
    return (const char *)e->blob + off[k];
}

static void hot_update(struct cm_cache *c, uint32_t i)
{
    const struct entry *e = &c->ent[i];
    uint8_t fl = c->flags[i];
    c->due_at[i] = (fl & CM_CACHE_MANAGED)
                       ? (e->renew_at > e->next_attempt ? e->renew_at : e->next_attempt)
                       : INFINITY;
    if (e->nocsp == 0) c->staple_at[i] = INFINITY;
    else if (!(fl & CM_CACHE_HAS_STAPLE)) c->staple_at[i] = -INFINITY;
    else c->staple_at[i] = e->staple_refresh;
    c->not_after[i] = (double)e->not_after;
}

/* ---- the id table ------------------------------------------------------- */

static uint32_t id_tag(const unsigned char *sha) { return (uint32_t)load64(sha); }

/* Slot holding sha (and its bucket in *bucket), or EMPTY. */
static uint32_t id_find(const struct cm_cache *c, const unsigned char *sha, uint32_t *bucket)
{
    uint32_t tag = id_tag(sha), i = tag & c->id_mask;
    for (;; i = (i + 1) & c->id_mask) {
        const struct id_bucket *b = &c->idt[i];
        if (b->slot == EMPTY) return EMPTY;
        if (b->tag == tag && memcmp(c->ent[b->slot].sha256, sha, 32) == 0) {
            if (bucket) *bucket = i;
            return b->slot;
        }
    }
}

static void id_put(struct id_bucket *t, uint32_t mask, uint32_t tag, uint32_t slot)
{
    uint32_t i = tag & mask;
    while (t[i].slot != EMPTY) i = (i + 1) & mask;
    t[i].tag = tag;
    t[i].slot = slot;
}

/* Linear-probing deletion by backward shift: later members of the cluster
 * whose home is not cyclically in (hole, j] move into the hole, so probes
 * never need tombstones. */
#define BACKSHIFT(table, mask, hole)                                              \
    do {                                                                          \
        uint32_t j_ = (hole);                                                     \
        for (;;) {                                                                \
            uint32_t home_;                                                       \
            j_ = (j_ + 1) & (mask);                                               \
            if ((table)[j_].slot == EMPTY) break;                                 \
            home_ = (table)[j_].tag & (mask);                                     \
            if ((j_ > (hole)) ? (home_ <= (hole) || home_ > j_)                   \
                              : (home_ <= (hole) && home_ > j_)) {                \
                (table)[hole] = (table)[j_];                                      \
                (hole) = j_;                                                      \
            }                                                                     \
        }                                                                         \
        (table)[hole].slot = EMPTY;                                               \
    } while (0)

static void id_delete_at(struct cm_cache *c, uint32_t hole)
{
    BACKSHIFT(c->idt, c->id_mask, hole);
}

/* Make room for `want` ids at load <= 1/2.  CM_ERR on allocation failure
 * (the table is then unchanged). */
static int id_reserve(struct cm_cache *c, uint32_t want)
{
    uint32_t cap = c->idt ? c->id_mask + 1 : 0, ncap, i;
    struct id_bucket *t;
    if ((uint64_t)want * 2 <= cap) return CM_OK;
    ncap = cap ? cap : MIN_BUCKETS;
    while ((uint64_t)want * 2 > ncap) {
        if (ncap >= (1u << 31)) return CM_ERR;
        ncap *= 2;
    }
    t = malloc((size_t)ncap * sizeof *t);
    if (!t) return CM_ERR;
    for (i = 0; i < ncap; i++) t[i].slot = EMPTY;
    for (i = 0; i < cap; i++)
        if (c->idt[i].slot != EMPTY) id_put(t, ncap - 1, c->idt[i].tag, c->idt[i].slot);
    free(c->idt);
    c->idt = t;
    c->id_mask = ncap - 1;
    return CM_OK;
}

/* ---- the name table ----------------------------------------------------- */

static void name_put(struct name_bucket *t, uint32_t mask, uint32_t tag, uint32_t slot,
                     const unsigned char *blob, uint32_t name_off, uint32_t name_len)
{
    uint32_t i = tag & mask;
    while (t[i].slot != EMPTY) i = (i + 1) & mask;
    t[i].tag = tag;
    t[i].slot = slot;
    t[i].blob = blob;
    t[i].name_off = name_off;
    t[i].name_len = name_len;
}

static int name_reserve(struct cm_cache *c, uint64_t want)
{
    uint32_t cap = c->nt ? c->name_mask + 1 : 0, ncap, i;
    struct name_bucket *t;
    if (want * 2 <= cap) return CM_OK;
    ncap = cap ? cap : MIN_BUCKETS;
    while (want * 2 > ncap) {
        if (ncap >= (1u << 31)) return CM_ERR;
        ncap *= 2;
    }
    t = malloc((size_t)ncap * sizeof *t);
    if (!t) return CM_ERR;
    for (i = 0; i < ncap; i++) t[i].slot = EMPTY;
    for (i = 0; i < cap; i++)
        if (c->nt[i].slot != EMPTY)
            name_put(t, ncap - 1, c->nt[i].tag, c->nt[i].slot, c->nt[i].blob,
                     c->nt[i].name_off, c->nt[i].name_len);
    free(c->nt);
    c->nt = t;
    c->name_mask = ncap - 1;
    return CM_OK;
}

/* The bucket indexing name nidx of `slot`, or EMPTY (never, if consistent). */
static uint32_t name_bucket_of(const struct cm_cache *c, uint32_t slot, uint32_t nidx)
{
    uint32_t len, tag, i;
    const char *s = blob_str(&c->ent[slot], nidx, &len);
    tag = name_hash(s, len);
    for (i = tag & c->name_mask;; i = (i + 1) & c->name_mask) {
        const struct name_bucket *b = &c->nt[i];
        if (b->slot == EMPTY) return EMPTY;
        if (b->blob + b->name_off == (const unsigned char *)s) return i;
    }
}

/* Visit every bucket indexing exactly the lower-cased name q (qlen bytes).
 * Calls fn(c, bucket, arg) for each. */
static void name_each(const struct cm_cache *c, const char *q, size_t qlen,
                      void (*fn)(const struct cm_cache *, const struct name_bucket *, void *),
                      void *arg)
{
    uint32_t tag, i;
    if (!c->nt || c->name_count == 0) return;
    tag = name_hash(q, qlen);
    for (i = tag & c->name_mask;; i = (i + 1) & c->name_mask) {
        const struct name_bucket *b = &c->nt[i];
        if (b->slot == EMPTY) return;
        if (b->tag == tag && b->name_len == qlen && memcmp(b->blob + b->name_off, q, qlen) == 0)
            fn(c, b, arg);
    }
}

/* ---- entries ------------------------------------------------------------ */

static int slots_reserve(struct cm_cache *c, uint32_t want)
{
    uint32_t ncap;
    void *p;
    if (want <= c->cap) return CM_OK;
    ncap = c->cap ? c->cap : MIN_SLOTS;
    while (ncap < want) {
        if (ncap >= (1u << 30)) return CM_ERR;
        ncap *= 2;
    }
    /* Each array is grown in turn; one that grew before a later failure just
     * stays bigger than cap, which is harmless. */
    if (!(p = realloc(c->due_at, (size_t)ncap * sizeof *c->due_at))) return CM_ERR;
    c->due_at = p;
    if (!(p = realloc(c->staple_at, (size_t)ncap * sizeof *c->staple_at))) return CM_ERR;
    c->staple_at = p;
    if (!(p = realloc(c->not_after, (size_t)ncap * sizeof *c->not_after))) return CM_ERR;
    c->not_after = p;
    if (!(p = realloc(c->flags, (size_t)ncap * sizeof *c->flags))) return CM_ERR;
    c->flags = p;
    if (!(p = realloc(c->ent, (size_t)ncap * sizeof *c->ent))) return CM_ERR;
    c->ent = p;
    c->cap = ncap;
    return CM_OK;
}

static void entry_release(struct cm_cache *c, struct entry *e)
{
    c->blob_bytes -= e->blob_len;
    c->der_bytes -= (size_t)e->der_len + e->chain_len;
    if (e->last_error) c->extra_bytes -= strlen(e->last_error) + 1;
    c->extra_bytes -= e->staple_len;
    free(e->blob); e->blob = NULL;
    free(e->last_error); e->last_error = NULL;
    free(e->staple_der); e->staple_der = NULL;
}

/* Take slot s out: drop its index entries, free it, move the last slot in. */
static void slot_remove(struct cm_cache *c, uint32_t s, uint32_t id_bucket)
{
    uint32_t last = c->n - 1, k, b;
    struct entry *e = &c->ent[s];

    id_delete_at(c, id_bucket);
    for (k = 0; k < e->nnames; k++) {
        b = name_bucket_of(c, s, k);
        if (b != EMPTY) {
            BACKSHIFT(c->nt, c->name_mask, b);
            c->name_count--;
        }
    }
    entry_release(c, e);
    if (s != last) {
        struct entry *m = &c->ent[last];
        if (id_find(c, m->sha256, &b) != EMPTY) c->idt[b].slot = s;
        for (k = 0; k < m->nnames; k++) {
            b = name_bucket_of(c, last, k);
            if (b != EMPTY) c->nt[b].slot = s;
        }
        c->ent[s] = *m;
        c->due_at[s] = c->due_at[last];
        c->staple_at[s] = c->staple_at[last];
        c->not_after[s] = c->not_after[last];
        c->flags[s] = c->flags[last];
    }
    c->n--;
}

/* A NUL-terminated copy of at most max bytes of s. */
static char *dup_bounded(const char *s, size_t max)
{
    size_t len = strnlen(s, max);
    char *d = malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* ---- building an entry from facts (outside the lock) -------------------- */

struct built {
    struct entry e;
    uint32_t *keep; /* indices (into f->names) of distinct, non-empty names */
};

static int list_ok(const struct cm_strlist *l)
{
    return l->count <= CM_CACHE_MAX_LIST && (l->count == 0 || l->items != NULL);
}

static size_t item_len(const struct cm_strlist *l, size_t i)
{
    return l->items[i] ? strlen(l->items[i]) : 0;
}

/* Is lower-cased name i of f equal to an earlier kept one? */
static int name_dup(const struct cm_cert_facts *f, const uint32_t *keep, uint32_t nkeep,
                    size_t i)
{
    const char *a = f->names.items[i];
    size_t la = strlen(a), k;
    for (k = 0; k < nkeep; k++) {
        const char *b = f->names.items[keep[k]];
        size_t j;
        if (strlen(b) != la) continue;
        for (j = 0; j < la && lower(a[j]) == lower(b[j]); j++) {}
        if (j == la) return 1;
    }
    return 0;
}

static int build_entry(const struct cm_cert_facts *f, struct built *out, struct cm_result *res)
{
    uint64_t strbytes = 0, total, offs_at;
    uint32_t nkeep = 0, nstr, k, *off;
    size_t i, pos;
    const char *fixed[3];
    unsigned char *blob;

    memset(out, 0, sizeof *out);
    if (!f->der || f->der_len == 0)
        return cm_fail(res, "invalid", "cache add: the certificate has no DER");
    if (!list_ok(&f->names) || !list_ok(&f->ocsp_urls) || !list_ok(&f->crl_urls))
        return cm_fail(res, "toobig", "cache add: more than %d names or URLs",
                       CM_CACHE_MAX_LIST);
    if (f->chain_der_len && !f->chain_der)
        return cm_fail(res, "invalid", "cache add: chain length without chain DER");
    if (f->names.count) {
        out->keep = malloc(f->names.count * sizeof *out->keep);
        if (!out->keep) return cm_fail(res, "ENOMEM", "cache add: out of memory");
    }
    for (i = 0; i < f->names.count; i++) {
        if (!f->names.items[i] || !f->names.items[i][0]) continue;
        if (name_dup(f, out->keep, nkeep, i)) continue;
        out->keep[nkeep++] = (uint32_t)i;
        strbytes += strlen(f->names.items[i]) + 1;
    }
    fixed[0] = f->serial_hex ? f->serial_hex : "";
    fixed[1] = f->issuer ? f->issuer : "";
    fixed[2] = f->subject ? f->subject : "";
    for (k = 0; k < 3; k++) strbytes += strlen(fixed[k]) + 1;
    for (i = 0; i < f->ocsp_urls.count; i++) strbytes += item_len(&f->ocsp_urls, i) + 1;
    for (i = 0; i < f->crl_urls.count; i++) strbytes += item_len(&f->crl_urls, i) + 1;
    nstr = nkeep + 3u + (uint32_t)f->ocsp_urls.count + (uint32_t)f->crl_urls.count;
    /* sha | strings | pad to 4 | offsets | DER: the names sit right after
     * the id, so a lookup reads both from one place */
    offs_at = (BLOB_SHA + strbytes + 3) & ~(uint64_t)3;
    total = offs_at + (uint64_t)(nstr + 1) * sizeof(uint32_t) + f->der_len + f->chain_der_len;
    if (total > UINT32_MAX || f->chain_count > UINT32_MAX) {
        free(out->keep); out->keep = NULL;
        return cm_fail(res, "toobig", "cache add: certificate data over 4 GiB");
    }
    blob = malloc((size_t)total);
    if (!blob) {
        free(out->keep); out->keep = NULL;
        return cm_fail(res, "ENOMEM", "cache add: out of memory");
    }
    memcpy(blob, f->sha256, BLOB_SHA);
    off = (uint32_t *)(void *)(blob + offs_at);
    pos = BLOB_SHA;
    k = 0;
#define PUT_STR(s, lower_it)                                                     \
    do {                                                                         \
        const char *s_ = (s) ? (s) : "";                                         \
        size_t l_ = strlen(s_), j_;                                              \
        off[k++] = (uint32_t)pos;                                                \
        for (j_ = 0; j_ < l_; j_++)                                              \
            blob[pos + j_] = (unsigned char)((lower_it) ? lower(s_[j_]) : s_[j_]); \
        blob[pos + l_] = '\0';                                                   \
        pos += l_ + 1;                                                           \
    } while (0)
    for (i = 0; i < nkeep; i++) PUT_STR(f->names.items[out->keep[i]], 1);
    for (i = 0; i < 3; i++) PUT_STR(fixed[i], 0);
    for (i = 0; i < f->ocsp_urls.count; i++) PUT_STR(f->ocsp_urls.items[i], 0);
    for (i = 0; i < f->crl_urls.count; i++) PUT_STR(f->crl_urls.items[i], 0);
#undef PUT_STR
    off[k] = (uint32_t)pos;
    while (pos < offs_at) blob[pos++] = 0;
    pos += (size_t)(nstr + 1) * sizeof(uint32_t);
    out->e.off_off = (uint32_t)offs_at;
    out->e.der_off = (uint32_t)pos;
    memcpy(blob + pos, f->der, f->der_len);
    pos += f->der_len;
    if (f->chain_der_len) memcpy(blob + pos, f->chain_der, f->chain_der_len);

    memcpy(out->e.sha256, f->sha256, 32);
    out->e.blob = blob;
    out->e.blob_len = (uint32_t)total;
    out->e.der_len = (uint32_t)f->der_len;
    out->e.chain_len = (uint32_t)f->chain_der_len;
    out->e.chain_count = (uint32_t)f->chain_count;
    out->e.nnames = (uint16_t)nkeep;
    out->e.nocsp = (uint16_t)f->ocsp_urls.count;
    out->e.ncrl = (uint16_t)f->crl_urls.count;
    out->e.fixed_flags = (uint8_t)((f->must_staple ? CM_CACHE_MUST_STAPLE : 0) |
                                   (f->crl_urls.count && !f->ocsp_urls.count ? CM_CACHE_CRL_ONLY : 0));
    out->e.not_before = f->not_before;
    out->e.not_after = f->not_after;
    out->e.renew_at = (double)f->not_after;
    out->e.next_attempt = 0;
    if (f->ocsp_urls.count) { /* only a certificate naming a responder gets a staple key */
        /* a PEM that cannot be made leaves the key to be made (and fail) where it is used */
        struct cm_result ignored;
        if (cm_x509_chain_pem_fnv1a32(f->der, f->der_len, f->chain_der, f->chain_der_len, &out->e.pem_fnv,
                                      &ignored) == CM_OK)
            out->e.pem_fnv_ok = 1;
    }
    free(out->keep); out->keep = NULL;
    return CM_OK;
}

/* ---- public API --------------------------------------------------------- */

struct cm_cache *cm_cache_new(struct cm_result *res)
{
    struct cm_cache *c = calloc(1, sizeof *c);
    if (!c) {
        cm_fail(res, "ENOMEM", "cache: out of memory");
        return NULL;
    }
    return c;
}

void cm_cache_free(struct cm_cache *c)
{
    uint32_t i;
    if (!c) return;
    for (i = 0; i < c->n; i++) {
        free(c->ent[i].blob); c->ent[i].blob = NULL;
        free(c->ent[i].last_error); c->ent[i].last_error = NULL;
        free(c->ent[i].staple_der); c->ent[i].staple_der = NULL;
    }
    free(c->due_at); c->due_at = NULL;
    free(c->staple_at); c->staple_at = NULL;
    free(c->not_after); c->not_after = NULL;
    free(c->flags); c->flags = NULL;
    free(c->ent); c->ent = NULL;
    free(c->idt); c->idt = NULL;
    free(c->nt); c->nt = NULL;
    free(c);
}

void cm_cache_add_opts_init(struct cm_cache_add_opts *o)
{
    o->managed = -1;
    o->on_demand = -1;
    o->renew_at = NAN;
    o->next_attempt = NAN;
}

static void apply_opts(struct cm_cache *c, uint32_t s, const struct cm_cache_add_opts *o)
{
    if (o->managed >= 0)
        c->flags[s] = (uint8_t)(o->managed ? c->flags[s] | CM_CACHE_MANAGED
                                           : c->flags[s] & ~CM_CACHE_MANAGED);
    if (o->on_demand >= 0)
        c->flags[s] = (uint8_t)(o->on_demand ? c->flags[s] | CM_CACHE_ON_DEMAND
                                             : c->flags[s] & ~CM_CACHE_ON_DEMAND);
    if (!isnan(o->renew_at)) c->ent[s].renew_at = o->renew_at;
    if (!isnan(o->next_attempt)) c->ent[s].next_attempt = o->next_attempt;
    hot_update(c, s);
}

/* Put a built entry into a fresh slot.  Takes the blob from *b on success;
 * on failure (ENOMEM) the cache is unchanged and *b still owns it. */
static int insert_built(struct cm_cache *c, struct built *b, uint32_t *slot,
                        struct cm_result *res)
{
    uint32_t s, k;
    if (slots_reserve(c, c->n + 1) != CM_OK || id_reserve(c, c->n + 1) != CM_OK ||
        name_reserve(c, (uint64_t)c->name_count + b->e.nnames) != CM_OK)
        return cm_fail(res, "ENOMEM", "cache add: out of memory");
    s = c->n++;
    c->ent[s] = b->e;
    b->e.blob = NULL; /* owned by the cache now */
    c->flags[s] = c->ent[s].fixed_flags;
    id_put(c->idt, c->id_mask, id_tag(c->ent[s].sha256), s);
    for (k = 0; k < c->ent[s].nnames; k++) {
        uint32_t len;
        const char *nm = blob_str(&c->ent[s], k, &len);
        name_put(c->nt, c->name_mask, name_hash(nm, len), s, c->ent[s].blob,
                 (uint32_t)((const unsigned char *)nm - c->ent[s].blob), len);
    }
    c->name_count += c->ent[s].nnames;
    c->blob_bytes += c->ent[s].blob_len;
    c->der_bytes += (size_t)c->ent[s].der_len + c->ent[s].chain_len;
    *slot = s;
    return CM_OK;
}

int cm_cache_add(struct cm_cache *c, const struct cm_cert_facts *f,
                 const struct cm_cache_add_opts *opts, struct cm_cache_id *id,
                 int *existed, struct cm_result *res)
{
    struct cm_cache_add_opts none;
    struct built b;
    uint32_t s;

    if (!opts) {
        cm_cache_add_opts_init(&none);
        opts = &none;
    }
    if (existed) *existed = 0;
    if (id) memcpy(id->sha256, f->sha256, 32);

    /* Cheap path for a certificate we already hold (a reload). */
    if (c->n && (s = id_find(c, f->sha256, NULL)) != EMPTY) {
        apply_opts(c, s, opts);
        if (existed) *existed = 1;
        return CM_OK;
    }
    if (build_entry(f, &b, res) != CM_OK) return CM_ERR;
    if (insert_built(c, &b, &s, res) != CM_OK) {
        free(b.e.blob); b.e.blob = NULL;
        return CM_ERR;
    }
    apply_opts(c, s, opts);
    return CM_OK;
}

/* ---- many at once ------------------------------------------------------- */

void cm_cache_many_opts_init(struct cm_cache_many_opts *o)
{
    o->managed = 1;
    o->renew = NULL;
    o->threads = 2;
    o->first_index = 0;
    o->max_bytes = CM_CACHE_MAX_FILE;
}

/* Case-insensitive equality of two NUL-terminated names. */
static int name_eq(const char *a, const char *b)
{
    for (; *a && lower(*a) == lower(*b); a++, b++) {}
    return *a == '\0' && *b == '\0';
}

static int name_in(const char *name, const char *const *list, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (list[i] && name_eq(name, list[i])) return 1;
    return 0;
}

/* The certificate's names and the expected ones, compared as sets (empty
 * certificate names are ignored, as the cache ignores them). */
static int names_match(const struct cm_strlist *have, const char *const *want, size_t nwant)
{
    size_t i;
    for (i = 0; i < have->count; i++) {
        const char *h = have->items[i];
        if (h && h[0] && !name_in(h, want, nwant)) return 0;
    }
    for (i = 0; i < nwant; i++) {
        size_t j;
        int found = 0;
        if (!want[i]) continue;
        for (j = 0; j < have->count && !found; j++)
            found = have->items[j] && name_eq(want[i], have->items[j]);
        if (!found) return 0;
    }
    return 1;
}

/* Say in item->res that item i failed with code, keeping the cause's text. */
static void item_fail(struct cm_cache_item *it, size_t num, const char *code, const char *why)
{
    char msg[sizeof it->res.message];
    snprintf(msg, sizeof msg, "%s", why);
    cm_fail(&it->res, code, "item %zu: %s", num, msg);
    it->state = CM_CACHE_ITEM_ERROR;
}

/* What one parse thread keeps between items (fileio.h): its read buffer,
 * and its certificates folder (".../certificates/<issuer>/", the part of an
 * item's path before "<site>/<file>") held open. */
#define SITE_DEPTH 2u

/* The parse stage of one item, touching nothing but the item, *b and the
 * thread's reader (this runs on the parse threads): parse once, compare
 * names, compute renew_at, pack the entry. */
static void many_prepare(const struct cm_cache_many_opts *o, struct cm_cache_item *it,
                         size_t i, struct built *b, struct cm_fileio_reader *rd)
{
    struct cm_cert_facts f;
    struct cm_result r;
    size_t num = o->first_index + i;
    char *file = NULL;
    size_t file_len = 0;
    struct stat st;

    memset(b, 0, sizeof *b);
    cm_result_clear(&it->res);
    it->state = CM_CACHE_ITEM_ERROR;
    it->existed = 0;
    it->not_before = it->not_after = 0;
    it->renew_at = NAN;
    if (!it->pem && it->path) {
        /* read here, on the parse threads: the file system's latency overlaps too */
        const char *rel;
        int dirfd = cm_fileio_reader_dir(rd, it->path, SITE_DEPTH, &rel);
        if (cm_fileio_read_into_at(dirfd, rel, it->path, o->max_bytes, &rd->buf, &file_len, &r) !=
            CM_OK) {
            item_fail(it, num, r.code, r.message);
            if (strcmp(r.code, "ENOENT") == 0) it->state = CM_CACHE_ITEM_MISSING;
            return;
        }
        file = rd->buf.data; /* the reader's: valid until its next read */
    }
    if (it->companion) {
        /* a directory is no private key: EISDIR, as the generic
         * load_into_cache (storage.common) reports it */
        const char *rel;
        int dirfd = cm_fileio_reader_dir(rd, it->companion, SITE_DEPTH, &rel);
        int err = fstatat(dirfd, rel, &st, 0) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
        if (err) {
            char why[sizeof it->res.message];
            snprintf(why, sizeof why, "%s: %s", it->companion, strerror(err));
            item_fail(it, num, err == ENOENT ? "ENOENT" : err == EISDIR ? "EISDIR" : "EIO", why);
            return;
        }
    }
    if (!it->pem && !file) {
        item_fail(it, num, "invalid", "no PEM");
        return;
    }
    if (cm_x509_parse_chain(file ? file : it->pem, file ? file_len : it->pem_len, &f, &r) != CM_OK) {
        item_fail(it, num, r.code, r.message);
        return;
    }
    memcpy(it->id.sha256, f.sha256, 32);
    it->not_before = f.not_before;
    it->not_after = f.not_after;
    it->renew_at = o->renew ? cm_renewal_at((double)f.not_before, (double)f.not_after, NAN,
                                            o->renew, NULL)
                            : (double)f.not_after;
    it->state = (it->names && !names_match(&f.names, it->names, it->names_count))
                    ? CM_CACHE_ITEM_NAMES_CHANGED
                    : CM_CACHE_ITEM_OK;
    if (build_entry(&f, b, &r) != CM_OK) item_fail(it, num, r.code, r.message);
    cm_cert_facts_free(&f);
}

/* The insert stage, in the calling thread, in item order. */
static void many_insert(struct cm_cache *c, const struct cm_cache_many_opts *o,
                        struct cm_cache_item *it, size_t i, struct built *b)
{
    struct cm_cache_add_opts ao;
    struct cm_result r;
    uint32_t s;

    if (it->state == CM_CACHE_ITEM_ERROR || it->state == CM_CACHE_ITEM_MISSING) goto out;
    cm_cache_add_opts_init(&ao);
    ao.managed = o->managed ? 1 : 0;
    ao.on_demand = it->on_demand ? 1 : 0;
    if (o->renew) ao.renew_at = it->renew_at;
    if (c->n && (s = id_find(c, it->id.sha256, NULL)) != EMPTY) {
        /* held already (a reload, or twice in this batch) */
        it->existed = 1;
        apply_opts(c, s, &ao);
        it->renew_at = c->ent[s].renew_at;
        goto out;
    }
    if (insert_built(c, b, &s, &r) != CM_OK) {
        item_fail(it, o->first_index + i, r.code, r.message);
        goto out;
    }
    apply_opts(c, s, &ao);
out:
    free(b->e.blob); b->e.blob = NULL;
}

#define MANY_WINDOW 256u    /* items cm_cache_add_many parses ahead of its inserts, at most */
#define MANY_MAX_THREADS 16u

/* A batch being parsed: the parse threads claim items in order and fill
 * ring[i % window]; the inserter (the caller's thread) takes them in order.
 * Everything below mu is shared and read or written only under it; an item
 * and its ring slot belong to the thread that claimed it until done[] says
 * it is ready (set under mu), then to the inserter. */
struct cm_cache_batch {
    struct cm_cache_many_opts o; /* copies: the caller's may go away */
    struct cm_renewal_opts renew;
    struct cm_cache_item *items;
    size_t n, window;
    struct built *ring;       /* window slots */
    size_t *done;             /* i + 1 once ring[i % window] holds item i */
    int failed;               /* start failed: finish reports start_res on every item */
    struct cm_result start_res;
    pthread_t tid[MANY_MAX_THREADS];
    unsigned started;         /* parse threads running (to join) */
    int sync;                 /* mu, ready, space were made */
    size_t next, limit;       /* next item to claim; claims stay below limit */
    size_t awaited;           /* i + 1 while the inserter waits for item i, else 0 */
    unsigned idle;            /* parse threads waiting for room */
    pthread_mutex_t mu;
    pthread_cond_t ready, space;
};

static void *many_worker(void *arg)
{
    struct cm_cache_batch *m = arg;
    struct cm_fileio_reader rd;
    cm_fileio_reader_init(&rd);
    for (;;) {
        size_t i;
        pthread_mutex_lock(&m->mu);
        while (m->next < m->n && m->next >= m->limit) {
            m->idle++;
            pthread_cond_wait(&m->space, &m->mu);
            m->idle--;
        }
        if (m->next >= m->n) {
            pthread_mutex_unlock(&m->mu);
            cm_fileio_reader_free(&rd);
            return NULL;
        }
        i = m->next++;
        pthread_mutex_unlock(&m->mu);
        many_prepare(&m->o, &m->items[i], i, &m->ring[i % m->window], &rd);
        pthread_mutex_lock(&m->mu);
        m->done[i % m->window] = i + 1;
        if (m->awaited == i + 1) pthread_cond_signal(&m->ready);
        pthread_mutex_unlock(&m->mu);
    }
}

/* Stop the parse threads (no new claims; each ends its current item), join
 * them, free what is left and the batch. */
static void batch_free(struct cm_cache_batch *m)
{
    size_t i;
    unsigned t;
    if (!m) return;
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->n = m->next; /* nothing more to claim */
        pthread_cond_broadcast(&m->space);
        pthread_mutex_unlock(&m->mu);
        for (t = 0; t < m->started; t++) pthread_join(m->tid[t], NULL);
        m->started = 0;
    }
    if (m->sync) {
        pthread_cond_destroy(&m->space);
        pthread_cond_destroy(&m->ready);
        pthread_mutex_destroy(&m->mu);
    }
    /* entries parsed but never inserted (an insert frees and clears its own) */
    if (m->ring)
        for (i = 0; i < m->window; i++) free(m->ring[i].e.blob);
    free(m->ring);
    free(m->done);
    free(m);
}

/* Make the batch and start its parse threads; window bounds how far they run
 * ahead of the inserts.  On failure *out is a batch whose finish reports the
 * failure on every item (so callers have one path), or NULL when even that
 * could not be made ("ENOMEM"). */
static int batch_start(struct cm_cache_batch **out, struct cm_cache_item *items, size_t n,
                       const struct cm_cache_many_opts *opts, size_t window,
                       struct cm_result *res)
{
    struct cm_cache_batch *m;
    unsigned want, t;

    *out = NULL;
    if (!(m = calloc(1, sizeof *m))) return cm_fail(res, "ENOMEM", "cache add_many: out of memory");
    *out = m;
    m->items = items;
    m->n = n;
    if (opts) m->o = *opts;
    else cm_cache_many_opts_init(&m->o);
    if (m->o.renew) {
        if (cm_renewal_opts_check(m->o.renew, res) != CM_OK) goto fail;
        m->renew = *m->o.renew;
        m->o.renew = &m->renew;
    }
    m->window = window < n ? window : n;
    if (m->window == 0) return CM_OK;
    if (!(m->ring = calloc(m->window, sizeof *m->ring)) ||
        !(m->done = calloc(m->window, sizeof *m->done))) {
        cm_fail(res, "ENOMEM", "cache add_many: out of memory");
        goto fail;
    }
    m->limit = m->window;
    want = m->o.threads > MANY_MAX_THREADS ? MANY_MAX_THREADS : m->o.threads;
    if (want < 2 || n < 2 * (size_t)want) return CM_OK; /* one thread: no gain over inline */
    if (pthread_mutex_init(&m->mu, NULL) != 0) return CM_OK;
    if (pthread_cond_init(&m->ready, NULL) != 0) {
        pthread_mutex_destroy(&m->mu);
        return CM_OK;
    }
    if (pthread_cond_init(&m->space, NULL) != 0) {
        pthread_cond_destroy(&m->ready);
        pthread_mutex_destroy(&m->mu);
        return CM_OK;
    }
    m->sync = 1;
    /* a thread that cannot be made is only less parallelism */
    for (t = 0; t < want; t++) {
        if (pthread_create(&m->tid[t], NULL, many_worker, m) != 0) break;
        m->started++;
    }
    return CM_OK;
fail:
    m->failed = 1;
    m->start_res = *res;
    return CM_ERR;
}

/* Insert every item of m in order (parsing inline when no thread runs), then
 * free m. */
static void batch_finish(struct cm_cache *c, struct cm_cache_batch *m)
{
    size_t i;
    if (m->failed) {
        /* nothing was done: say so on each item */
        for (i = 0; i < m->n; i++) {
            m->items[i].state = CM_CACHE_ITEM_ERROR;
            cm_fail(&m->items[i].res, m->start_res.code, "item %zu: %s",
                    m->o.first_index + i, m->start_res.message);
        }
    } else if (m->started == 0) {
        struct cm_fileio_reader rd;
        cm_fileio_reader_init(&rd);
        for (i = 0; i < m->n; i++) {
            struct built *b = &m->ring[i % m->window];
            many_prepare(&m->o, &m->items[i], i, b, &rd);
            many_insert(c, &m->o, &m->items[i], i, b);
        }
        cm_fileio_reader_free(&rd);
    } else {
        for (i = 0; i < m->n; i++) {
            struct built *b = &m->ring[i % m->window];
            pthread_mutex_lock(&m->mu);
            while (m->done[i % m->window] != i + 1) {
                m->awaited = i + 1;
                pthread_cond_wait(&m->ready, &m->mu);
            }
            m->awaited = 0;
            pthread_mutex_unlock(&m->mu);
            many_insert(c, &m->o, &m->items[i], i, b);
            pthread_mutex_lock(&m->mu);
            m->limit = i + 1 + m->window;
            if (m->idle) pthread_cond_broadcast(&m->space);
            pthread_mutex_unlock(&m->mu);
        }
    }
    batch_free(m);
}

int cm_cache_add_many(struct cm_cache *c, struct cm_cache_item *items, size_t n,
                      const struct cm_cache_many_opts *opts, struct cm_result *res)
{
    struct cm_cache_batch *m = NULL;
    if (opts && opts->renew && cm_renewal_opts_check(opts->renew, res) != CM_OK) return CM_ERR;
    if (n == 0) return CM_OK;
    if (batch_start(&m, items, n, opts, MANY_WINDOW, res) != CM_OK) {
        batch_free(m);
        return CM_ERR;
    }
    batch_finish(c, m);
    return CM_OK;
}

int cm_cache_batch_start(struct cm_cache_batch **out, struct cm_cache_item *items, size_t n,
                         const struct cm_cache_many_opts *opts, struct cm_result *res)
{
    /* the whole batch may be parsed before the first insert */
    int rc = batch_start(out, items, n, opts, n, res);
    if (rc != CM_OK && *out) rc = CM_OK; /* reported by finish, item by item */
    return rc;
}

void cm_cache_batch_finish(struct cm_cache *c, struct cm_cache_batch *b)
{
    if (b) batch_finish(c, b);
}

void cm_cache_batch_free(struct cm_cache_batch *b)
{
    batch_free(b);
}

int cm_cache_remove(struct cm_cache *c, const struct cm_cache_id *id)
{
    uint32_t s, bucket = 0;
    int found = 0;
    if (c->n && (s = id_find(c, id->sha256, &bucket)) != EMPTY) {
        slot_remove(c, s, bucket);
        found = 1;
    }
    return found;
}

int cm_cache_has(struct cm_cache *c, const struct cm_cache_id *id)
{
    int found;
    found = c->n && id_find(c, id->sha256, NULL) != EMPTY;
    return found;
}

void cm_cache_cert_free(struct cm_cache_cert *cert)
{
    if (!cert) return;
    free(cert->mem_); cert->mem_ = NULL;
    memset(cert, 0, sizeof *cert);
}

/* Point a strlist at strings first..first+count-1 of the copied blob. */
static void fill_list(struct cm_strlist *l, char **ptrs, const struct entry *e,
                      const unsigned char *blob, uint32_t first, uint32_t count)
{
    const uint32_t *off = blob_off(e);
    uint32_t k;
    l->items = count ? ptrs : NULL;
    l->count = count;
    for (k = 0; k < count; k++) ptrs[k] = (char *)blob + off[first + k];
}

int cm_cache_get(struct cm_cache *c, const struct cm_cache_id *id,
                 struct cm_cache_cert *out, struct cm_result *res)
{
    const struct entry *e;
    const uint32_t *off;
    uint32_t s, nptr, nn;
    size_t errlen, size;
    unsigned char *mem = NULL, *blob, *p;
    char **ptrs;
    int rc = CM_ERR;

    memset(out, 0, sizeof *out);
    if (!c->n || (s = id_find(c, id->sha256, NULL)) == EMPTY) {
        cm_fail(res, "ENOENT", "cache: no such certificate");
        goto out;
    }
    e = &c->ent[s];
    nn = e->nnames;
    nptr = nn + e->nocsp + e->ncrl;
    errlen = e->last_error ? strlen(e->last_error) + 1 : 0;
    size = (size_t)nptr * sizeof(char *) + e->blob_len + errlen + e->staple_len;
    mem = malloc(size ? size : 1);
    if (!mem) {
        cm_fail(res, "ENOMEM", "cache get: out of memory");
        goto out;
    }
    ptrs = (char **)(void *)mem;
    blob = mem + (size_t)nptr * sizeof(char *);
    memcpy(blob, e->blob, e->blob_len);
    p = blob + e->blob_len;
    off = blob_off(e);

    out->id = *id;
    out->flags = c->flags[s];
    out->not_before = e->not_before;
    out->not_after = e->not_after;
    out->renew_at = e->renew_at;
    out->next_attempt = e->next_attempt;
    out->attempts = e->attempts;
    fill_list(&out->names, ptrs, e, blob, 0, nn);
    out->serial_hex = (const char *)blob + off[nn];
    out->issuer = (const char *)blob + off[nn + 1];
    out->subject = (const char *)blob + off[nn + 2];
    fill_list(&out->ocsp_urls, ptrs + nn, e, blob, nn + 3, e->nocsp);
    fill_list(&out->crl_urls, ptrs + nn + e->nocsp, e, blob, nn + 3u + e->nocsp, e->ncrl);
    out->der = blob + e->der_off;
    out->der_len = e->der_len;
    out->chain_der = e->chain_len ? blob + e->der_off + e->der_len : NULL;
    out->chain_der_len = e->chain_len;
    out->chain_count = e->chain_count;
    if (e->last_error) {
        memcpy(p, e->last_error, errlen);
        out->last_error = (const char *)p;
        p += errlen;
    }
    if (c->flags[s] & CM_CACHE_HAS_STAPLE) {
        out->staple.status = (enum cm_ocsp_cert_status)e->staple_status;
        out->staple.this_update = e->staple_this;
        out->staple.next_update = e->staple_next;
        out->staple.refresh_at = e->staple_refresh;
        if (e->staple_len) memcpy(p, e->staple_der, e->staple_len);
        out->staple.der = p;
        out->staple.der_len = e->staple_len;
    }
    out->mem_ = mem;
    mem = NULL;
    rc = CM_OK;
out:
    free(mem); mem = NULL;
    return rc;
}

int cm_cache_view(const struct cm_cache *c, const struct cm_cache_id *id,
                  struct cm_cache_view *v)
{
    const struct entry *e;
    const uint32_t *off;
    uint32_t s, nn;

    memset(v, 0, sizeof *v);
    if (!c->n || (s = id_find(c, id->sha256, NULL)) == EMPTY) return 0;
    e = &c->ent[s];
    nn = e->nnames;
    off = blob_off(e);
    v->id = *id;
    v->flags = c->flags[s];
    v->not_before = e->not_before;
    v->not_after = e->not_after;
    v->renew_at = e->renew_at;
    v->next_attempt = e->next_attempt;
    v->attempts = e->attempts;
    v->names_count = nn;
    v->ocsp_count = e->nocsp;
    v->crl_count = e->ncrl;
    v->serial_hex = (const char *)e->blob + off[nn];
    v->issuer = (const char *)e->blob + off[nn + 1];
    v->subject = (const char *)e->blob + off[nn + 2];
    v->last_error = e->last_error;
    v->der = e->blob + e->der_off;
    v->der_len = e->der_len;
    v->chain_der = e->chain_len ? e->blob + e->der_off + e->der_len : NULL;
    v->chain_der_len = e->chain_len;
    v->chain_count = e->chain_count;
    v->pem_fnv_ok = e->pem_fnv_ok;
    v->pem_fnv = e->pem_fnv;
    if (c->flags[s] & CM_CACHE_HAS_STAPLE) {
        v->staple.status = (enum cm_ocsp_cert_status)e->staple_status;
        v->staple.this_update = e->staple_this;
        v->staple.next_update = e->staple_next;
        v->staple.refresh_at = e->staple_refresh;
        v->staple.der = e->staple_der;
        v->staple.der_len = e->staple_len;
    }
    v->blob_ = e->blob;
    v->off_ = off;
    return 1;
}

const char *cm_cache_view_item(const struct cm_cache_view *v, enum cm_cache_list list,
                               size_t i, size_t *len)
{
    size_t k;
    switch (list) {
    case CM_CACHE_NAMES:
        if (i >= v->names_count) return NULL;
        k = i;
        break;
    case CM_CACHE_OCSP_URLS:
        if (i >= v->ocsp_count) return NULL;
        k = v->names_count + 3 + i;
        break;
    case CM_CACHE_CRL_URLS:
        if (i >= v->crl_count) return NULL;
        k = v->names_count + 3 + v->ocsp_count + i;
        break;
    default:
        return NULL;
    }
    if (len) *len = v->off_[k + 1] - v->off_[k] - 1;
    return (const char *)v->blob_ + v->off_[k];
}

int cm_cache_cert_pem(const struct cm_cache_cert *cert, char **pem, size_t *len,
                      struct cm_result *res)
{
    size_t l = 0;
    int rc = cm_x509_chain_pem(cert->der, cert->der_len, cert->chain_der, cert->chain_der_len,
                               pem, &l, res);
    if (len) *len = l;
    return rc;
}

int cm_cache_set(struct cm_cache *c, const struct cm_cache_id *id,
                 const struct cm_cache_update *u, struct cm_result *res)
{
    char *err = NULL;
    unsigned char *sd = NULL;
    struct cm_cache_staple st;
    struct entry *e;
    uint32_t s;
    int rc = CM_ERR;

    memset(&st, 0, sizeof st);
    if (((u->fields & CM_CACHE_SET_RENEW_AT) && isnan(u->renew_at)) ||
        ((u->fields & CM_CACHE_SET_NEXT_ATTEMPT) && isnan(u->next_attempt)))
        return cm_fail(res, "invalid", "cache set: a time is NaN");
    if ((u->fields & CM_CACHE_SET_OCSP) && u->ocsp) {
        st = *u->ocsp;
        if (isnan(st.this_update) || isnan(st.next_update))
            return cm_fail(res, "invalid", "cache set: a staple time is NaN");
        if (st.der_len > CM_CACHE_MAX_STAPLE)
            return cm_fail(res, "toobig", "cache set: staple of %zu bytes (limit %d)",
                           st.der_len, CM_CACHE_MAX_STAPLE);
        if (st.status != CM_OCSP_GOOD && st.status != CM_OCSP_REVOKED &&
            st.status != CM_OCSP_UNKNOWN)
            return cm_fail(res, "invalid", "cache set: bad staple status");
        /* fresh until half its validity has passed (DESIGN: OCSP) */
        if (isnan(st.refresh_at))
            st.refresh_at = st.this_update + (st.next_update - st.this_update) / 2;
        if (st.der_len) {
            if (!st.der) return cm_fail(res, "invalid", "cache set: staple without bytes");
            if (!(sd = malloc(st.der_len))) return cm_fail(res, "ENOMEM", "cache set: out of memory");
            memcpy(sd, st.der, st.der_len);
        }
    }
    if ((u->fields & CM_CACHE_SET_LAST_ERROR) && u->last_error) {
        if (!(err = dup_bounded(u->last_error, CM_CACHE_MAX_ERROR))) {
            cm_fail(res, "ENOMEM", "cache set: out of memory");
            goto out_nolock;
        }
    }

    if (!c->n || (s = id_find(c, id->sha256, NULL)) == EMPTY) {
        cm_fail(res, "ENOENT", "cache: no such certificate");
        goto out;
    }
    e = &c->ent[s];
    if (u->fields & CM_CACHE_SET_MANAGED)
        c->flags[s] = (uint8_t)(u->managed ? c->flags[s] | CM_CACHE_MANAGED
                                           : c->flags[s] & ~CM_CACHE_MANAGED);
    if (u->fields & CM_CACHE_SET_ON_DEMAND)
        c->flags[s] = (uint8_t)(u->on_demand ? c->flags[s] | CM_CACHE_ON_DEMAND
                                             : c->flags[s] & ~CM_CACHE_ON_DEMAND);
    if (u->fields & CM_CACHE_SET_RENEW_AT) e->renew_at = u->renew_at;
    if (u->fields & CM_CACHE_SET_NEXT_ATTEMPT) e->next_attempt = u->next_attempt;
    if (u->fields & CM_CACHE_SET_ATTEMPTS) e->attempts = u->attempts;
    if (u->fields & CM_CACHE_SET_LAST_ERROR) {
        if (e->last_error) c->extra_bytes -= strlen(e->last_error) + 1;
        free(e->last_error);
        e->last_error = err;
        err = NULL;
        if (e->last_error) c->extra_bytes += strlen(e->last_error) + 1;
    }
    if (u->fields & CM_CACHE_SET_OCSP) {
        c->extra_bytes -= e->staple_len;
        free(e->staple_der);
        e->staple_der = NULL;
        e->staple_len = 0;
        if (u->ocsp) {
            e->staple_der = sd;
            sd = NULL;
            e->staple_len = (uint32_t)st.der_len;
            e->staple_status = (uint8_t)st.status;
            e->staple_this = st.this_update;
            e->staple_next = st.next_update;
            e->staple_refresh = st.refresh_at;
            c->flags[s] |= CM_CACHE_HAS_STAPLE;
            c->extra_bytes += e->staple_len;
        } else {
            c->flags[s] = (uint8_t)(c->flags[s] & ~CM_CACHE_HAS_STAPLE);
        }
    }
    hot_update(c, s);
    rc = CM_OK;
out:
out_nolock:
    free(err); err = NULL;
    free(sd); sd = NULL;
    return rc;
}

/* ---- lookups ------------------------------------------------------------ */

struct best {
    uint32_t slot;
    const unsigned char *blob;
};

/* The only candidate is taken without reading anything more (the common
 * case); several are compared on not_after, then not_before. */
static void pick_best(const struct cm_cache *c, const struct name_bucket *nb, void *arg)
{
    struct best *b = arg;
    uint32_t slot = nb->slot;
    if (b->slot == EMPTY || c->not_after[slot] > c->not_after[b->slot] ||
        (c->not_after[slot] == c->not_after[b->slot] &&
         c->ent[slot].not_before > c->ent[b->slot].not_before)) {
        b->slot = slot;
        b->blob = nb->blob;
    }
}

/* Lower-case name into buf (or a malloc'ed buffer when longer than its size);
 * returns the buffer, NULL on allocation failure. */
static char *lower_copy(const char *name, size_t len, char *buf, size_t bufsize)
{
    char *d = len < bufsize ? buf : malloc(len + 1);
    size_t i;
    if (!d) return NULL;
    for (i = 0; i < len; i++) d[i] = lower(name[i]);
    d[len] = '\0';
    return d;
}

int cm_cache_lookup(struct cm_cache *c, const char *name, size_t len, struct cm_cache_id *id)
{
    char stack[NAME_STACK], *q;
    struct best b = {EMPTY, NULL};
    const char *dot;

    if (len == 0 || memchr(name, '\0', len)) return 0; /* no name holds a NUL */
    if (!(q = lower_copy(name, len, stack, sizeof stack))) return 0;
    name_each(c, q, len, pick_best, &b);
    if (b.slot == EMPTY) {
        /* `*.` + everything after the first label; that label must be there */
        dot = memchr(q, '.', len);
        if (dot && dot > q && (size_t)(dot - q) + 1 < len) {
            char *w = (char *)dot - 1;
            *w = '*';
            name_each(c, w, len - (size_t)(w - q), pick_best, &b);
        }
    }
    if (b.slot != EMPTY && id) memcpy(id->sha256, b.blob, BLOB_SHA);
    if (q != stack) free(q);
    return b.slot != EMPTY;
}

struct collect {
    uint32_t *slots;
    size_t n, cap;
    int failed;
};

static void collect_slot(const struct cm_cache *c, const struct name_bucket *nb, void *arg)
{
    struct collect *k = arg;
    uint32_t slot = nb->slot;
    (void)c;
    if (k->failed) return;
    if (k->n == k->cap) {
        size_t ncap = k->cap ? k->cap * 2 : 8;
        uint32_t *p = realloc(k->slots, ncap * sizeof *p);
        if (!p) {
            k->failed = 1;
            return;
        }
        k->slots = p;
        k->cap = ncap;
    }
    k->slots[k->n++] = slot;
}

int cm_cache_find(struct cm_cache *c, const char *name, size_t len,
                  struct cm_cache_id **ids, size_t *count, struct cm_result *res)
{
    char stack[NAME_STACK], *q = NULL;
    struct collect k = {NULL, 0, 0, 0};
    struct cm_cache_id *out = NULL;
    size_t i, j;
    int rc = CM_ERR;

    *ids = NULL;
    *count = 0;
    if (len == 0 || memchr(name, '\0', len)) return CM_OK;
    if (!(q = lower_copy(name, len, stack, sizeof stack)))
        return cm_fail(res, "ENOMEM", "cache find: out of memory");
    name_each(c, q, len, collect_slot, &k);
    if (k.failed) {
        cm_fail(res, "ENOMEM", "cache find: out of memory");
        goto out;
    }
    /* latest not_after first (insertion sort: a name has a handful of certs) */
    for (i = 1; i < k.n; i++) {
        uint32_t v = k.slots[i];
        for (j = i; j > 0 && c->not_after[k.slots[j - 1]] < c->not_after[v]; j--)
            k.slots[j] = k.slots[j - 1];
        k.slots[j] = v;
    }
    if (k.n) {
        if (!(out = malloc(k.n * sizeof *out))) {
            cm_fail(res, "ENOMEM", "cache find: out of memory");
            goto out;
        }
        for (i = 0; i < k.n; i++) memcpy(out[i].sha256, c->ent[k.slots[i]].sha256, 32);
    }
    *ids = out;
    *count = k.n;
    out = NULL;
    rc = CM_OK;
out:
    free(k.slots); k.slots = NULL;
    free(out); out = NULL;
    if (q != stack) free(q);
    return rc;
}

/* ---- scans -------------------------------------------------------------- */

struct idbuf {
    struct cm_cache_id *ids;
    size_t n, cap;
};

/* Append slot's id; CM_ERR on allocation failure. */
static int idbuf_push(struct idbuf *b, const struct cm_cache *c, uint32_t slot)
{
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        struct cm_cache_id *p = realloc(b->ids, ncap * sizeof *p);
        if (!p) return CM_ERR;
        b->ids = p;
        b->cap = ncap;
    }
    memcpy(b->ids[b->n++].sha256, c->ent[slot].sha256, 32);
    return CM_OK;
}

enum scan_kind { SCAN_DUE, SCAN_STAPLES, SCAN_CRL, SCAN_EXPIRED, SCAN_IDS, SCAN_MUST_STAPLE };

/* One linear pass over the hot arrays for kind; each kind's loop reads only
 * the one or two arrays it needs. */
static int scan(struct cm_cache *c, enum scan_kind kind, double now, double grace,
                int managed, size_t limit, struct cm_cache_id **ids, size_t *count,
                struct cm_result *res)
{
    struct idbuf b = {NULL, 0, 0};
    uint32_t i, n;
    int rc = CM_ERR;

    *ids = NULL;
    *count = 0;
    if (limit == 0) limit = SIZE_MAX;
    n = c->n;
#define SCAN_LOOP(cond)                                                          \
    for (i = 0; i < n && b.n < limit; i++) {                                     \
        if (cond) {                                                              \
            if (idbuf_push(&b, c, i) != CM_OK) goto no_memory;                   \
        }                                                                        \
    }
    switch (kind) {
    case SCAN_DUE: {
        const double *due = c->due_at;
        SCAN_LOOP(due[i] <= now)
        break;
    }
    case SCAN_STAPLES: {
        const double *st = c->staple_at, *na = c->not_after;
        SCAN_LOOP(st[i] <= now && na[i] > now)
        break;
    }
    case SCAN_CRL: {
        const uint8_t *fl = c->flags;
        const double *na = c->not_after;
        SCAN_LOOP((fl[i] & CM_CACHE_CRL_ONLY) && na[i] > now)
        break;
    }
    case SCAN_EXPIRED: {
        const double *na = c->not_after;
        SCAN_LOOP(na[i] + grace <= now)
        break;
    }
    case SCAN_IDS: {
        const uint8_t *fl = c->flags;
        SCAN_LOOP(managed < 0 || (managed > 0) == ((fl[i] & CM_CACHE_MANAGED) != 0))
        break;
    }
    case SCAN_MUST_STAPLE: {
        const uint8_t *fl = c->flags;
        SCAN_LOOP(fl[i] & CM_CACHE_MUST_STAPLE)
        break;
    }
    }
#undef SCAN_LOOP
    *ids = b.ids;
    *count = b.n;
    return CM_OK;
no_memory:
    free(b.ids); b.ids = NULL;
    cm_fail(res, "ENOMEM", "cache scan: out of memory");
    return rc;
}

int cm_cache_scan_due(struct cm_cache *c, double now, size_t limit,
                      struct cm_cache_id **ids, size_t *count, struct cm_result *res)
{
    return scan(c, SCAN_DUE, now, 0, -1, limit, ids, count, res);
}

int cm_cache_scan_staples(struct cm_cache *c, double now, size_t limit,
                          struct cm_cache_id **ids, size_t *count, struct cm_result *res)
{
    return scan(c, SCAN_STAPLES, now, 0, -1, limit, ids, count, res);
}

int cm_cache_scan_crl(struct cm_cache *c, double now, size_t limit,
                      struct cm_cache_id **ids, size_t *count, struct cm_result *res)
{
    return scan(c, SCAN_CRL, now, 0, -1, limit, ids, count, res);
}

int cm_cache_scan_expired(struct cm_cache *c, double now, double grace, size_t limit,
                          struct cm_cache_id **ids, size_t *count, struct cm_result *res)
{
    return scan(c, SCAN_EXPIRED, now, grace, -1, limit, ids, count, res);
}

int cm_cache_ids(struct cm_cache *c, int managed, struct cm_cache_id **ids,
                 size_t *count, struct cm_result *res)
{
    return scan(c, SCAN_IDS, 0, 0, managed, 0, ids, count, res);
}

int cm_cache_scan_must_staple(struct cm_cache *c, struct cm_cache_id **ids, size_t *count,
                              struct cm_result *res)
{
    return scan(c, SCAN_MUST_STAPLE, 0, 0, 0, 0, ids, count, res);
}

size_t cm_cache_count(struct cm_cache *c)
{
    size_t n;
    n = c->n;
    return n;
}

size_t cm_cache_memory(struct cm_cache *c, size_t *der_bytes)
{
    size_t total;
    total = sizeof *c;
    total += (size_t)c->cap * (sizeof *c->ent + sizeof *c->due_at + sizeof *c->staple_at +
                               sizeof *c->not_after + sizeof *c->flags);
    if (c->idt) total += ((size_t)c->id_mask + 1) * sizeof *c->idt;
    if (c->nt) total += ((size_t)c->name_mask + 1) * sizeof *c->nt;
    total += c->blob_bytes + c->extra_bytes;
    if (der_bytes) *der_bytes = c->der_bytes;
    return total;
}

/* ---- ids and statuses --------------------------------------------------- */

void cm_cache_id_hex(const struct cm_cache_id *id, char hex[65])
{
    cm_hex_encode(id->sha256, sizeof id->sha256, hex);
}

int cm_cache_id_parse(const char *hex, size_t len, struct cm_cache_id *id)
{
    unsigned char out[32];
    size_t n = 0;
    if (len != 64 || cm_hex_decode(hex, len, out, sizeof out, &n, NULL) != CM_OK || n != 32)
        return CM_ERR;
    memcpy(id->sha256, out, sizeof out);
    return CM_OK;
}
