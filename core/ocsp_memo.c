/* ocsp_memo.c - the memo of OCSP signatures checked already (ocsp_memo.h). */
#include "ocsp_memo.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "fileio.h"

#define SLOT_USED 1u
#define SLOT_LIVE 2u /* used since open (looked up or added): kept by compaction */
#define COMPACT_MARGIN 4096u

struct cm_ocsp_memo {
    char *path;
    pthread_rwlock_t lock;
    unsigned char (*keys)[CM_OCSP_MEMO_KEY];
    _Atomic unsigned char *flags;
    size_t cap, count; /* cap a power of two, count <= cap / 2 */
    unsigned char (*pending)[CM_OCSP_MEMO_KEY]; /* added, not yet in the file */
    size_t npending, pending_cap;
    size_t file_records;
    atomic_size_t hits;
    size_t added;
    int damaged;
};

/* A failure named by errno e (ENOENT, EACCES, ...), saying what was tried. */
static int fail_errno(struct cm_result *res, int e, const char *what, const char *path)
{
    return cm_fail(res, cm_errno_name(e), "ocsp memo %s: %s: %s", path, what, strerror(e));
}

static size_t slot_of(const unsigned char *key, size_t mask)
{
    uint64_t h;
    memcpy(&h, key, sizeof h); /* a SHA-256: its first bytes are as good as random */
    return (size_t)h & mask;
}

/* Find key: its slot, or the empty slot where it goes (*found 0). */
static size_t probe(const struct cm_ocsp_memo *m, const unsigned char *key, int *found)
{
    size_t mask = m->cap - 1, s = slot_of(key, mask);
    for (;;) {
        unsigned char f = atomic_load_explicit(&m->flags[s], memory_order_relaxed);
        if (!(f & SLOT_USED)) {
            *found = 0;
            return s;
        }
        if (memcmp(m->keys[s], key, CM_OCSP_MEMO_KEY) == 0) {
            *found = 1;
            return s;
        }
        s = (s + 1) & mask;
    }
}

/* Grow the table to hold one more (write-locked or not yet shared). */
static int reserve(struct cm_ocsp_memo *m)
{
    size_t ncap, i;
    unsigned char (*okeys)[CM_OCSP_MEMO_KEY] = m->keys;
    _Atomic unsigned char *oflags = m->flags;
    size_t ocap = m->cap;
    if (m->count + 1 <= m->cap / 2) return CM_OK;
    ncap = m->cap ? m->cap * 2 : 1024;
    m->keys = malloc(ncap * sizeof *m->keys);
    m->flags = malloc(ncap * sizeof *m->flags);
    if (!m->keys || !m->flags) {
        free(m->keys);
        free((void *)m->flags);
        m->keys = okeys;
        m->flags = oflags;
        return CM_ERR;
    }
    m->cap = ncap;
    for (i = 0; i < ncap; i++) atomic_init(&m->flags[i], 0);
    for (i = 0; i < ocap; i++) {
        unsigned char f = atomic_load(&oflags[i]);
        int found;
        size_t s;
        if (!(f & SLOT_USED)) continue;
        s = probe(m, okeys[i], &found);
        memcpy(m->keys[s], okeys[i], CM_OCSP_MEMO_KEY);
        atomic_store(&m->flags[s], f);
    }
    free(okeys);
    free((void *)oflags);
    return CM_OK;
}

/* Insert key with flags f (write-locked or not yet shared): 1 new, 0 there, -1 ENOMEM. */
static int insert(struct cm_ocsp_memo *m, const unsigned char *key, unsigned char f)
{
    int found;
    size_t s;
    if (reserve(m) != CM_OK) return -1;
    s = probe(m, key, &found);
    if (found) {
        atomic_fetch_or(&m->flags[s], f);
        return 0;
    }
    memcpy(m->keys[s], key, CM_OCSP_MEMO_KEY);
    atomic_store(&m->flags[s], (unsigned char)(f | SLOT_USED));
    m->count++;
    return 1;
}

static const unsigned char zero_key[CM_OCSP_MEMO_KEY];

int cm_ocsp_memo_open(struct cm_ocsp_memo **out, const char *path, struct cm_result *res)
{
    struct cm_ocsp_memo *m;
    char *data = NULL;
    size_t len = 0, magic = strlen(CM_OCSP_MEMO_MAGIC), off;
    struct cm_result rr;
    *out = NULL;
    if (!(m = calloc(1, sizeof *m)) || !(m->path = strdup(path))) {
        free(m);
        return cm_fail(res, "ENOMEM", "ocsp memo: out of memory");
    }
    pthread_rwlock_init(&m->lock, NULL);
    atomic_init(&m->hits, 0);
    if (cm_fileio_read_file(path, magic + (size_t)CM_OCSP_MEMO_MAX_RECORDS * CM_OCSP_MEMO_KEY, &data, &len,
                            &rr) != CM_OK) {
        if (strcmp(rr.code, "ENOENT") == 0) {
            *out = m;
            return CM_OK;
        }
        if (strcmp(rr.code, "toobig") != 0) {
            cm_ocsp_memo_free(m);
            return cm_fail(res, rr.code, "ocsp memo %s: %s", path, rr.message);
        }
        m->damaged = 1; /* rewritten by the next flush */
        *out = m;
        return CM_OK;
    }
    if (len < magic || memcmp(data, CM_OCSP_MEMO_MAGIC, magic) != 0) {
        m->damaged = len > 0;
    } else {
        for (off = magic; off + CM_OCSP_MEMO_KEY <= len; off += CM_OCSP_MEMO_KEY) {
            const unsigned char *k = (const unsigned char *)data + off;
            if (memcmp(k, zero_key, CM_OCSP_MEMO_KEY) == 0) continue;
            if (insert(m, k, 0) < 0) {
                free(data);
                cm_ocsp_memo_free(m);
                return cm_fail(res, "ENOMEM", "ocsp memo: out of memory");
            }
            m->file_records++;
        }
        if (off != len) m->damaged = 1; /* a torn last record: appending would misalign the rest */
    }
    free(data);
    *out = m;
    return CM_OK;
}

int cm_ocsp_memo_has(struct cm_ocsp_memo *m, const unsigned char key[CM_OCSP_MEMO_KEY])
{
    int found = 0;
    size_t s;
    if (!m) return 0;
    pthread_rwlock_rdlock(&m->lock);
    if (m->cap) {
        s = probe(m, key, &found);
        if (found) atomic_fetch_or_explicit(&m->flags[s], SLOT_LIVE, memory_order_relaxed);
    }
    pthread_rwlock_unlock(&m->lock);
    if (found) atomic_fetch_add_explicit(&m->hits, 1, memory_order_relaxed);
    return found;
}

int cm_ocsp_memo_add(struct cm_ocsp_memo *m, const unsigned char key[CM_OCSP_MEMO_KEY],
                     struct cm_result *res)
{
    int r;
    if (memcmp(key, zero_key, CM_OCSP_MEMO_KEY) == 0) return CM_OK; /* the file's filler */
    pthread_rwlock_wrlock(&m->lock);
    r = insert(m, key, SLOT_LIVE);
    if (r == 1) {
        if (m->npending == m->pending_cap) {
            size_t ncap = m->pending_cap ? m->pending_cap * 2 : 256;
            void *grown = realloc(m->pending, ncap * sizeof *m->pending);
            if (!grown) {
                r = -1;
                goto out;
            }
            m->pending = grown;
            m->pending_cap = ncap;
        }
        memcpy(m->pending[m->npending++], key, CM_OCSP_MEMO_KEY);
        m->added++;
    }
out:
    pthread_rwlock_unlock(&m->lock);
    if (r < 0) return cm_fail(res, "ENOMEM", "ocsp memo: out of memory");
    return CM_OK;
}

static size_t live_count(struct cm_ocsp_memo *m)
{
    size_t i, n = 0;
    for (i = 0; i < m->cap; i++)
        if ((atomic_load_explicit(&m->flags[i], memory_order_relaxed) & (SLOT_USED | SLOT_LIVE)) ==
            (SLOT_USED | SLOT_LIVE))
            n++;
    return n;
}

/* Rewrite the file with the live records only (write-locked). */
static int compact(struct cm_ocsp_memo *m, struct cm_result *res)
{
    size_t magic = strlen(CM_OCSP_MEMO_MAGIC), live = live_count(m), i, at = magic;
    unsigned char *buf = malloc(magic + live * CM_OCSP_MEMO_KEY);
    if (!buf) return cm_fail(res, "ENOMEM", "ocsp memo: out of memory");
    memcpy(buf, CM_OCSP_MEMO_MAGIC, magic);
    for (i = 0; i < m->cap; i++)
        if ((atomic_load(&m->flags[i]) & (SLOT_USED | SLOT_LIVE)) == (SLOT_USED | SLOT_LIVE)) {
            memcpy(buf + at, m->keys[i], CM_OCSP_MEMO_KEY);
            at += CM_OCSP_MEMO_KEY;
        }
    if (cm_fileio_write_atomic(m->path, buf, at, 0600, res) != CM_OK) {
        free(buf);
        return CM_ERR;
    }
    free(buf);
    m->file_records = live;
    m->npending = 0;
    m->damaged = 0;
    return CM_OK;
}

/* Append the pending records (write-locked). */
static int append(struct cm_ocsp_memo *m, struct cm_result *res)
{
    struct stat st;
    size_t magic = strlen(CM_OCSP_MEMO_MAGIC), off = 0, total;
    unsigned char *buf;
    int fd = open(m->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return fail_errno(res, errno, "cannot open", m->path);
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail_errno(res, e, "cannot stat", m->path);
    }
    if (st.st_size != 0 && (st.st_size < (off_t)magic || (st.st_size - (off_t)magic) % CM_OCSP_MEMO_KEY != 0)) {
        /* someone else's torn write: a rewrite realigns it */
        close(fd);
        return compact(m, res);
    }
    total = (st.st_size == 0 ? magic : 0) + m->npending * CM_OCSP_MEMO_KEY;
    if (!(buf = malloc(total))) {
        close(fd);
        return cm_fail(res, "ENOMEM", "ocsp memo: out of memory");
    }
    if (st.st_size == 0) {
        memcpy(buf, CM_OCSP_MEMO_MAGIC, magic);
        off = magic;
    }
    memcpy(buf + off, m->pending, m->npending * CM_OCSP_MEMO_KEY);
    /* one write: O_APPEND keeps another process's records whole beside ours */
    off = 0;
    while (off < total) {
        ssize_t w = write(fd, buf + off, total - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return fail_errno(res, e, "cannot write", m->path);
        }
        off += (size_t)w;
    }
    free(buf);
    if (close(fd) != 0) return fail_errno(res, errno, "cannot close", m->path);
    m->file_records += m->npending;
    m->npending = 0;
    return CM_OK;
}

int cm_ocsp_memo_flush(struct cm_ocsp_memo *m, struct cm_result *res)
{
    int rc = CM_OK;
    pthread_rwlock_wrlock(&m->lock);
    if (m->damaged || m->file_records + m->npending > 2 * live_count(m) + COMPACT_MARGIN)
        rc = compact(m, res);
    else if (m->npending > 0)
        rc = append(m, res);
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

void cm_ocsp_memo_stats(struct cm_ocsp_memo *m, struct cm_ocsp_memo_stats *out)
{
    pthread_rwlock_rdlock(&m->lock);
    out->entries = m->count;
    out->file_records = m->file_records;
    out->hits = atomic_load(&m->hits);
    out->added = m->added;
    out->damaged = m->damaged;
    pthread_rwlock_unlock(&m->lock);
}

void cm_ocsp_memo_free(struct cm_ocsp_memo *m)
{
    if (!m) return;
    pthread_rwlock_destroy(&m->lock);
    free(m->keys);
    free((void *)m->flags);
    free(m->pending);
    free(m->path);
    free(m);
}

void cm_ocsp_memo_key(const unsigned char key_sha256[32], const unsigned char *dgst, size_t dlen,
                      const unsigned char *sig, size_t siglen, unsigned char out[CM_OCSP_MEMO_KEY])
{
    /* key hash | lengths (no two (dgst, sig) splits of the same bytes hash alike) | dgst | sig:
     * on the stack, one SHA-256 (a digest context allocated per response was on the hot path) */
    unsigned char buf[32 + 4 + 64 + 256];
    size_t n = 0;
    if (dlen > 64 || siglen > 256) {
        /* larger than any ECDSA signature the fast path takes: never memoised, so checked */
        memset(out, 0, CM_OCSP_MEMO_KEY);
        return;
    }
    memcpy(buf, key_sha256, 32);
    n = 32;
    buf[n++] = (unsigned char)(dlen >> 8);
    buf[n++] = (unsigned char)dlen;
    buf[n++] = (unsigned char)(siglen >> 8);
    buf[n++] = (unsigned char)siglen;
    memcpy(buf + n, dgst, dlen);
    n += dlen;
    memcpy(buf + n, sig, siglen);
    n += siglen;
    /* on failure all zero: the key no memo holds (add ignores it), so the signature is checked */
    if (cm_crypto_sha256(buf, n, out, NULL) != CM_OK) memset(out, 0, CM_OCSP_MEMO_KEY);
}
