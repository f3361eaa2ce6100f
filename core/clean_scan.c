/* clean_scan.c - see clean_scan.h. */
#include "clean_scan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "fileio.h"
#include "x509.h"

#define MAX_THREADS 64
/* site folders a reader claims at a time */
#define CLAIM 32

void cm_clean_scan_opts_init(struct cm_clean_scan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->crt_top = "certificates";
    o->threads = 2;
    o->max_bytes = 1024 * 1024;
    o->max_files = 10000000;
    o->max_depth = 64;
}

/* What one reader found: its items, old temp files and count of .crt files;
 * merged by the caller. */
struct found {
    struct cm_clean_scan_item *items;
    size_t count, cap;
    char **temp;
    size_t temp_count, temp_cap;
    size_t certificates;
    int failed;               /* out of memory, or a folder that cannot be read */
    struct cm_result res;     /* why, when failed */
};

struct scan {
    const struct cm_clean_scan_opts *o;
    int rootfd;
    char **sites;
    size_t nsites;
    atomic_size_t next;
    atomic_int stop; /* a reader failed: the others stop too */
};

static void found_free(struct found *f)
{
    size_t i;
    for (i = 0; i < f->count; i++) {
        free(f->items[i].key);
        free(f->items[i].error);
    }
    free(f->items);
    cm_fileio_paths_free(f->temp, f->temp_count);
    memset(f, 0, sizeof *f);
}

static int oom(struct found *f)
{
    if (!f->failed) cm_fail(&f->res, "ENOMEM", "clean scan: out of memory");
    f->failed = 1;
    return CM_ERR;
}

static struct cm_clean_scan_item *new_item(struct found *f, const char *key)
{
    struct cm_clean_scan_item *it;
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        struct cm_clean_scan_item *grown = realloc(f->items, cap * sizeof *grown);
        if (!grown) return NULL;
        f->items = grown;
        f->cap = cap;
    }
    it = &f->items[f->count];
    memset(it, 0, sizeof *it);
    if (!(it->key = strdup(key))) return NULL;
    f->count++;
    return it;
}

static int fail_item(struct found *f, const char *key, const struct cm_result *r)
{
    struct cm_clean_scan_item *it = new_item(f, key);
    if (!it) return oom(f);
    snprintf(it->code, sizeof it->code, "%s", r->code[0] ? r->code : "parse");
    if (!(it->error = strdup(r->message[0] ? r->message : "cannot be parsed"))) return oom(f);
    return CM_OK;
}

/* One certificate file (name, in the folder open at dirfd; key: its path
 * from the root): its leaf's notAfter, and for an expired one the full
 * parse (the clean pass deletes only what parses as a certificate) and id. */
static int scan_crt(struct scan *s, struct found *f, int dirfd, const char *name, const char *key,
                    struct cm_fileio_buf *buf)
{
    struct cm_result r;
    struct cm_cert_facts facts;
    struct cm_clean_scan_item *it;
    size_t len = 0;
    int64_t not_after = 0;
    unsigned char id[32];

    memset(&r, 0, sizeof r);
    f->certificates++;
    if (cm_fileio_read_into_at(dirfd, name, key, s->o->max_bytes, buf, &len, &r) != CM_OK) {
        if (strcmp(r.code, "ENOENT") == 0) {
            f->certificates--; /* deleted meanwhile: nothing to clean */
            return CM_OK;
        }
        return fail_item(f, key, &r);
    }
    if (cm_x509_leaf_not_after(buf->data, len, &not_after, &r) != CM_OK) return fail_item(f, key, &r);
    if (not_after > s->o->expired_before) return CM_OK;
    if (cm_x509_parse_chain(buf->data, len, &facts, &r) != CM_OK) return fail_item(f, key, &r);
    if (cm_crypto_sha256(facts.der, facts.der_len, id, &r) != CM_OK) {
        cm_cert_facts_free(&facts);
        return fail_item(f, key, &r);
    }
    not_after = facts.not_after;
    cm_cert_facts_free(&facts);
    if (!(it = new_item(f, key))) return oom(f);
    it->not_after = not_after;
    memcpy(it->id, id, sizeof id);
    return CM_OK;
}

/* A temp file (in the folder at dirfd) last modified before temp_before
 * (judged by itself: a link is not followed) joins f's list. */
static int scan_temp(struct scan *s, struct found *f, int dirfd, const char *name, const char *key)
{
    struct stat st;
    char *copy;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return CM_OK; /* gone */
    if (S_ISDIR(st.st_mode) || (int64_t)st.st_mtime >= s->o->temp_before) return CM_OK;
    if (f->temp_count == f->temp_cap) {
        size_t cap = f->temp_cap ? f->temp_cap * 2 : 16;
        char **grown = realloc(f->temp, cap * sizeof *grown);
        if (!grown) return oom(f);
        f->temp = grown;
        f->temp_cap = cap;
    }
    if (!(copy = strdup(key))) return oom(f);
    f->temp[f->temp_count++] = copy;
    return CM_OK;
}

static int ends_with_crt(const char *name, size_t len)
{
    return len > 4 && memcmp(name + len - 4, ".crt", 4) == 0;
}

/* Everything below the folder rel (key[0..rel_len), relative to the root):
 * its certificates and temp files; subfolders too (not in certmagic's
 * layout, but stored all the same). */
static int scan_dir(struct scan *s, struct found *f, char *key, size_t rel_len, unsigned depth,
                    struct cm_fileio_buf *buf)
{
    struct dirent *de;
    DIR *d;
    int fd, rc = CM_OK;

    fd = openat(s->rootfd, key, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return CM_OK; /* removed meanwhile */
        if (!f->failed) cm_fail(&f->res, cm_errno_name(errno), "clean scan %s: %s", key, strerror(errno));
        f->failed = 1;
        return CM_ERR;
    }
    if (!(d = fdopendir(fd))) {
        close(fd);
        return oom(f);
    }
    for (;;) {
        size_t nlen;
        int is_dir;
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno) {
                if (!f->failed) cm_fail(&f->res, cm_errno_name(errno), "clean scan %s: %s", key, strerror(errno));
                f->failed = 1;
                rc = CM_ERR;
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        nlen = strlen(de->d_name);
        if (rel_len + 1 + nlen >= PATH_MAX) {
            if (!f->failed) cm_fail(&f->res, "ENAMETOOLONG", "clean scan %s/%s: File name too long", key, de->d_name);
            f->failed = 1;
            rc = CM_ERR;
            break;
        }
        key[rel_len] = '/';
        memcpy(key + rel_len + 1, de->d_name, nlen + 1);
        is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            is_dir = fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        if (is_dir) {
            if (depth + 1 > s->o->max_depth) {
                if (!f->failed) cm_fail(&f->res, "toobig", "clean scan %s: deeper than %u levels", key, s->o->max_depth);
                f->failed = 1;
                rc = CM_ERR;
            } else {
                rc = scan_dir(s, f, key, rel_len + 1 + nlen, depth + 1, buf);
            }
        } else if (cm_fileio_is_side_file(de->d_name)) {
            rc = scan_temp(s, f, dirfd(d), de->d_name, key);
        } else if (ends_with_crt(de->d_name, nlen)) {
            rc = scan_crt(s, f, dirfd(d), de->d_name, key, buf);
        }
        key[rel_len] = '\0';
        if (rc != CM_OK || atomic_load(&s->stop)) break;
    }
    key[rel_len] = '\0';
    closedir(d); /* closes fd */
    return rc;
}

struct reader {
    struct scan *s;
    struct found f;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    struct scan *s = r->s;
    struct cm_fileio_buf buf;
    char *key = malloc(PATH_MAX);

    memset(&buf, 0, sizeof buf);
    if (!key) {
        oom(&r->f);
        atomic_store(&s->stop, 1);
        return NULL;
    }
    while (!atomic_load(&s->stop)) {
        size_t first = atomic_fetch_add(&s->next, CLAIM), i;
        if (first >= s->nsites) break;
        for (i = first; i < s->nsites && i < first + CLAIM; i++) {
            size_t len = strlen(s->sites[i]);
            if (len >= PATH_MAX) continue; /* the walk made it: cannot be */
            memcpy(key, s->sites[i], len + 1);
            if (scan_dir(s, &r->f, key, len, 3, &buf) != CM_OK) {
                atomic_store(&s->stop, 1);
                break;
            }
        }
    }
    cm_fileio_buf_free(&buf);
    free(key);
    return NULL;
}

static int cmp_items(const void *a, const void *b)
{
    return strcmp(((const struct cm_clean_scan_item *)a)->key, ((const struct cm_clean_scan_item *)b)->key);
}

static int cmp_strs(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Move f's findings to the end of out's. */
static int merge(struct cm_clean_scan *out, struct found *f)
{
    if (f->count) {
        struct cm_clean_scan_item *grown = realloc(out->items, (out->count + f->count) * sizeof *grown);
        if (!grown) return CM_ERR;
        out->items = grown;
        memcpy(out->items + out->count, f->items, f->count * sizeof *grown);
        out->count += f->count;
        f->count = 0;
    }
    if (f->temp_count) {
        char **grown = realloc(out->temp, (out->temp_count + f->temp_count) * sizeof *grown);
        if (!grown) return CM_ERR;
        out->temp = grown;
        memcpy(out->temp + out->temp_count, f->temp, f->temp_count * sizeof *grown);
        out->temp_count += f->temp_count;
        f->temp_count = 0;
    }
    out->certificates += f->certificates;
    return CM_OK;
}

/* The walk's own findings (outside the site folders): its .crt files and
 * temp files, on this thread. */
static int scan_walked(struct scan *s, struct cm_fileio_clean_walk *w, struct found *f)
{
    struct cm_fileio_buf buf;
    size_t i;
    int rc = CM_OK;
    memset(&buf, 0, sizeof buf);
    for (i = 0; i < w->side_count && rc == CM_OK; i++) rc = scan_temp(s, f, s->rootfd, w->side[i], w->side[i]);
    for (i = 0; i < w->crt_count && rc == CM_OK; i++) rc = scan_crt(s, f, s->rootfd, w->crts[i], w->crts[i], &buf);
    cm_fileio_buf_free(&buf);
    return rc;
}

int cm_clean_scan(const char *root, const struct cm_clean_scan_opts *o, struct cm_clean_scan *out,
                  struct cm_result *res)
{
    struct cm_fileio_clean_walk w;
    struct scan s;
    struct reader *readers = NULL;
    pthread_t tid[MAX_THREADS];
    unsigned t, started = 0, nthreads;
    struct found mine;
    int rc = CM_ERR;

    memset(out, 0, sizeof *out);
    memset(&s, 0, sizeof s);
    memset(&w, 0, sizeof w);
    memset(&mine, 0, sizeof mine);
    s.rootfd = -1;
    if (o->threads < 1 || o->threads > MAX_THREADS)
        return cm_fail(res, "invalid", "clean scan: threads must be 1..%d", MAX_THREADS);
    if (cm_fileio_walk_clean(root, o->skip_top, o->crt_top, o->max_depth, o->max_files, &w, res) != CM_OK)
        goto out;
    s.o = o;
    s.sites = w.sites;
    s.nsites = w.site_count;
    atomic_init(&s.next, 0);
    atomic_init(&s.stop, 0);
    s.rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.rootfd < 0) {
        cm_fail(res, cm_errno_name(errno), "clean scan %s: %s", root, strerror(errno));
        goto out;
    }
    if (scan_walked(&s, &w, &mine) != CM_OK) {
        *res = mine.res;
        goto out;
    }
    nthreads = o->threads;
    if (nthreads > (s.nsites + CLAIM - 1) / CLAIM) nthreads = (unsigned)((s.nsites + CLAIM - 1) / CLAIM);
    if (nthreads < 1) nthreads = 1;
    if (!(readers = calloc(nthreads, sizeof *readers))) {
        cm_fail(res, "ENOMEM", "clean scan: out of memory");
        goto out;
    }
    for (t = 0; t < nthreads; t++) readers[t].s = &s;
    /* a thread that cannot be made is only less parallelism: this one reads too */
    for (t = 1; t < nthreads; t++) {
        if (pthread_create(&tid[started], NULL, reader_main, &readers[t]) != 0) break;
        started++;
    }
    reader_main(&readers[0]);
    for (t = 0; t < started; t++) pthread_join(tid[t], NULL);
    for (t = 0; t < nthreads; t++)
        if (readers[t].f.failed) {
            *res = readers[t].f.res;
            goto out;
        }
    if (merge(out, &mine) != CM_OK) goto nomem;
    for (t = 0; t < nthreads; t++)
        if (merge(out, &readers[t].f) != CM_OK) goto nomem;
    if (out->count > 1) qsort(out->items, out->count, sizeof *out->items, cmp_items);
    if (out->temp_count > 1) qsort(out->temp, out->temp_count, sizeof *out->temp, cmp_strs);
    rc = CM_OK;
    goto out;
nomem:
    cm_fail(res, "ENOMEM", "clean scan: out of memory");
out:
    found_free(&mine);
    if (readers)
        for (t = 0; t < nthreads; t++) found_free(&readers[t].f);
    free(readers);
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
