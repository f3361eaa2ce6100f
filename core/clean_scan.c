/* clean_scan.c - see clean_scan.h. */
#include "clean_scan.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "fileio.h"
#include "x509.h"

#define MAX_THREADS 64
/* files a reader claims at a time */
#define CLAIM 64

void cm_clean_scan_opts_init(struct cm_clean_scan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->crt_top = "certificates";
    o->threads = 2;
    o->max_bytes = 1024 * 1024;
    o->max_files = 10000000;
    o->max_depth = 64;
}

/* What a reader found of one file. */
struct verdict {
    int64_t not_after;
    unsigned char id[32];
    char *error;
    char code[48];
    unsigned char report; /* expired or failed */
};

struct scan {
    const struct cm_clean_scan_opts *o;
    int rootfd;
    const char *root;
    char **crts;
    size_t n;
    struct verdict *v;
    atomic_size_t next;
    atomic_int oom;
};

static void fail_item(struct verdict *v, const struct cm_result *r)
{
    v->report = 1;
    snprintf(v->code, sizeof v->code, "%s", r->code[0] ? r->code : "parse");
    if (!(v->error = strdup(r->message[0] ? r->message : "cannot be parsed"))) v->error = NULL;
}

/* One file: read it, its leaf's notAfter, and for an expired one the full
 * parse (the clean pass deletes only what parses as a certificate) and id. */
static void scan_one(struct scan *s, size_t i, struct cm_fileio_buf *buf)
{
    struct verdict *v = &s->v[i];
    struct cm_result r;
    struct cm_cert_facts f;
    size_t len = 0;

    memset(&r, 0, sizeof r);
    if (cm_fileio_read_into_at(s->rootfd, s->crts[i], s->crts[i], s->o->max_bytes, buf, &len, &r) != CM_OK) {
        if (strcmp(r.code, "ENOENT") == 0) return; /* deleted meanwhile: nothing to clean */
        fail_item(v, &r);
        return;
    }
    if (cm_x509_leaf_not_after(buf->data, len, &v->not_after, &r) != CM_OK) {
        fail_item(v, &r);
        return;
    }
    if (v->not_after > s->o->expired_before) return;
    if (cm_x509_parse_chain(buf->data, len, &f, &r) != CM_OK) {
        fail_item(v, &r);
        return;
    }
    if (cm_crypto_sha256(f.der, f.der_len, v->id, &r) != CM_OK) {
        cm_cert_facts_free(&f);
        fail_item(v, &r);
        return;
    }
    v->not_after = f.not_after;
    v->report = 1;
    cm_cert_facts_free(&f);
}

static void *reader(void *arg)
{
    struct scan *s = arg;
    struct cm_fileio_buf buf;
    memset(&buf, 0, sizeof buf);
    for (;;) {
        size_t first = atomic_fetch_add(&s->next, CLAIM), i;
        if (first >= s->n) break;
        for (i = first; i < s->n && i < first + CLAIM; i++) scan_one(s, i, &buf);
    }
    cm_fileio_buf_free(&buf);
    return NULL;
}

/* Keep the temp files last modified before temp_before (lstat: a link is
 * judged by itself); move them into out. */
static int old_temp_files(struct scan *s, struct cm_fileio_clean_walk *w, struct cm_clean_scan *out)
{
    size_t i, kept = 0;
    if (w->side_count && !(out->temp = calloc(w->side_count, sizeof *out->temp))) return CM_ERR;
    for (i = 0; i < w->side_count; i++) {
        struct stat st;
        if (fstatat(s->rootfd, w->side[i], &st, AT_SYMLINK_NOFOLLOW) != 0) continue; /* gone */
        if (S_ISDIR(st.st_mode) || (int64_t)st.st_mtime >= s->o->temp_before) continue;
        out->temp[kept++] = w->side[i];
        w->side[i] = NULL;
    }
    out->temp_count = kept;
    return CM_OK;
}

int cm_clean_scan(const char *root, const struct cm_clean_scan_opts *o, struct cm_clean_scan *out,
                  struct cm_result *res)
{
    struct cm_fileio_clean_walk w;
    struct scan s;
    pthread_t tid[MAX_THREADS];
    unsigned t, started = 0, nthreads;
    size_t i, count = 0;
    int rc = CM_ERR;

    memset(out, 0, sizeof *out);
    memset(&s, 0, sizeof s);
    s.rootfd = -1;
    if (o->threads < 1 || o->threads > MAX_THREADS)
        return cm_fail(res, "invalid", "clean scan: threads must be 1..%d", MAX_THREADS);
    if (cm_fileio_walk_clean(root, o->skip_top, o->crt_top, o->max_depth, o->max_files, &w, res) != CM_OK)
        goto out;
    s.o = o;
    s.root = root;
    s.crts = w.crts;
    s.n = w.crt_count;
    atomic_init(&s.next, 0);
    atomic_init(&s.oom, 0);
    s.rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.rootfd < 0) {
        cm_fail(res, cm_errno_name(errno), "clean scan %s: %s", root, strerror(errno));
        goto out;
    }
    if (old_temp_files(&s, &w, out) != CM_OK) goto nomem;
    if (s.n && !(s.v = calloc(s.n, sizeof *s.v))) goto nomem;
    nthreads = o->threads;
    if (nthreads > (s.n + CLAIM - 1) / CLAIM) nthreads = (unsigned)((s.n + CLAIM - 1) / CLAIM);
    /* a thread that cannot be made is only less parallelism: this one reads too */
    for (t = 1; t < nthreads; t++) {
        if (pthread_create(&tid[started], NULL, reader, &s) != 0) break;
        started++;
    }
    reader(&s);
    for (t = 0; t < started; t++) pthread_join(tid[t], NULL);

    for (i = 0; i < s.n; i++) count += s.v[i].report;
    if (count && !(out->items = calloc(count, sizeof *out->items))) goto nomem;
    for (i = 0; i < s.n; i++) {
        struct cm_clean_scan_item *it;
        if (!s.v[i].report) continue;
        it = &out->items[out->count++];
        it->key = s.crts[i];
        s.crts[i] = NULL;
        it->not_after = s.v[i].not_after;
        memcpy(it->id, s.v[i].id, sizeof it->id);
        it->error = s.v[i].error;
        s.v[i].error = NULL;
        memcpy(it->code, s.v[i].code, sizeof it->code);
        if (s.v[i].code[0] && !it->error) goto nomem; /* strdup of its message failed */
    }
    out->certificates = s.n;
    rc = CM_OK;
    goto out;
nomem:
    cm_fail(res, "ENOMEM", "clean scan: out of memory");
out:
    if (s.v)
        for (i = 0; i < s.n; i++) free(s.v[i].error);
    free(s.v);
    if (s.rootfd >= 0) close(s.rootfd);
    cm_fileio_clean_walk_free(&w);
    if (rc != CM_OK) cm_clean_scan_free(out);
    return rc;
}

void cm_clean_scan_free(struct cm_clean_scan *s)
{
    size_t i;
    for (i = 0; i < s->count; i++) {
        free(s->items[i].key);
        free(s->items[i].error);
    }
    free(s->items);
    cm_fileio_paths_free(s->temp, s->temp_count);
    memset(s, 0, sizeof *s);
}
