/* commit.c - the journal commit of the file storage (see commit.h). */
#include "commit.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "failpoint.h"
#include "fileio.h"

#define JOURNAL "journal"
#define MANIFEST "manifest.json"

void cm_commit_init(struct cm_commit *c)
{
    memset(c, 0, sizeof *c);
    c->crash_after = -1;
    c->dir_mode = 0700;
}

void cm_commit_free(struct cm_commit *c)
{
    size_t i;
    for (i = 0; i < c->nput; i++) {
        free(c->puts[i].key);
        free(c->puts[i].data);
    }
    free(c->puts);
    for (i = 0; i < c->ndelete; i++) free(c->deletes[i]);
    free(c->deletes);
    free(c->manifest);
    free(c->root);
    free(c->txn);
    memset(c, 0, sizeof *c);
    c->crash_after = -1;
}

/* Record the failure of step on key: "<what>: <step> <key>: <inner>". */
static int fail_step(struct cm_commit *c, const char *step, const char *key,
                     const struct cm_result *inner)
{
    char what[600];
    if (c->txn) snprintf(what, sizeof what, "commit %s", c->txn);
    else snprintf(what, sizeof what, "store");
    c->failed_step = step;
    snprintf(c->failed_path, sizeof c->failed_path, "%s", key);
    return cm_fail(&c->res, inner->code[0] ? inner->code : "EIO", "%s: %s %s: %s", what, step, key,
                   inner->message);
}

static int path_of(char out[PATH_MAX], struct cm_result *res, const char *fmt, const char *a,
                   const char *b, const char *d)
{
    int n = snprintf(out, PATH_MAX, fmt, a, b, d);
    if (n < 0 || n >= PATH_MAX)
        return cm_fail(res, "ENAMETOOLONG", "path %s/%s: too long", a, b);
    return CM_OK;
}

/* A crash-after armed by the previous step's failpoint fires now, once
 * that step is done. */
static void step_done(struct cm_commit *c)
{
    if (c->fp_after) cm_failpoint_after(c->fp_name, c->fp_after);
    c->fp_after = 0;
}

/* The crash injector and the named failpoint (failpoint.h) of the step
 * about to run: may it run?  An injected ENOSPC/EIO fails it as the real
 * error would (c->crashed stays 0: the caller cleans up as for any
 * failure). */
static int step(struct cm_commit *c, const char *point, const char *key)
{
    struct cm_result r;
    int fp;
    step_done(c);
    if ((fp = cm_failpoint_before(point, key, &r)) < 0) return fail_step(c, point + 7, key, &r);
    c->fp_name = point;
    c->fp_after = fp;
    if (c->crash_after >= 0 && c->steps >= c->crash_after) {
        c->crashed = 1;
        c->failed_step = "crash";
        cm_fail(&c->res, "crash", "injected crash");
        return CM_ERR;
    }
    c->steps++;
    return CM_OK;
}

/* The folder a path is in (path has a '/' past the root). */
static void parent_dir(const char *path, char out[PATH_MAX])
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n == 0) {
        memcpy(out, slash ? "/" : ".", 2);
        return;
    }
    memcpy(out, path, n);
    out[n] = '\0';
}

/* Storage never writes through a symbolic link inside its root (file.lua's
 * refuse_symlinks): lstat each existing component of key from the root down;
 * the first that is missing ends the walk.  key_len: how much of key. */
static int refuse_symlinks(const struct cm_commit *c, const char *key, size_t key_len,
                           struct cm_result *res)
{
    char path[PATH_MAX];
    size_t root_len = strlen(c->root), i;
    struct stat st;
    if (root_len + 1 + key_len >= PATH_MAX) return cm_fail(res, "ENAMETOOLONG", "%s: too long", key);
    memcpy(path, c->root, root_len);
    path[root_len] = '/';
    for (i = 0; i <= key_len; i++) {
        if (i < key_len && key[i] != '/') continue;
        if (i == 0 || key[i - 1] == '/') continue;
        memcpy(path + root_len + 1, key, i);
        path[root_len + 1 + i] = '\0';
        if (lstat(path, &st) != 0) return CM_OK; /* missing: nothing below exists either */
        if (S_ISLNK(st.st_mode))
            return cm_fail(res, "ELOOP",
                           "%.*s in %s is a symbolic link (storage never writes through one)",
                           (int)i, key, c->root);
    }
    return CM_OK;
}

/* Remove path, a directory with everything below it (file.lua's
 * remove_tree).  Code "ENOENT" when nothing was there. */
static int remove_tree(const char *path, struct cm_result *res)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    int rc = CM_OK;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return cm_fail(res, "ENOENT", "delete %s: nothing there", path);
        return CM_OK; /* as file.lua: what cannot be looked at is treated as missing */
    }
    if (!S_ISDIR(st.st_mode)) return cm_fileio_remove(path, res);
    if (!(d = opendir(path)))
        return cm_fail(res, "EIO", "delete %s: %s", path, strerror(errno));
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **grown = realloc(names, ncap * sizeof *grown);
            if (!grown) { rc = cm_fail(res, "ENOMEM", "out of memory"); break; }
            names = grown;
            cap = ncap;
        }
        if (!(names[n] = strdup(e->d_name))) { rc = cm_fail(res, "ENOMEM", "out of memory"); break; }
        n++;
    }
    closedir(d);
    for (i = 0; i < n && rc == CM_OK; i++) {
        char child[PATH_MAX];
        if (path_of(child, res, "%s/%s%s", path, names[i], "") != CM_OK) rc = CM_ERR;
        else if (remove_tree(child, res) != CM_OK && strcmp(res->code, "ENOENT") != 0) rc = CM_ERR;
    }
    for (i = 0; i < n; i++) free(names[i]);
    free(names);
    if (rc != CM_OK) return rc;
    return cm_fileio_rmdir(path, res);
}

/* A failure before the commit point: the transaction folder goes. */
static int abandon(struct cm_commit *c, const char *tdir)
{
    struct cm_result ignored;
    (void)remove_tree(tdir, &ignored);
    return CM_ERR;
}

static int stage(struct cm_commit *c, const char *tdir)
{
    struct cm_result r;
    size_t i;
    if (cm_fileio_mkdir_p(tdir, c->dir_mode, &r) != CM_OK)
        return fail_step(c, "mkdir", tdir, &r);
    for (i = 0; i < c->nput; i++) {
        char path[PATH_MAX], name[32];
        const struct cm_commit_put *p = &c->puts[i];
        if (step(c, "commit.stage", p->key) != CM_OK) return c->crashed ? CM_ERR : abandon(c, tdir);
        snprintf(name, sizeof name, "%zu", i);
        if (path_of(path, &r, "%s/%s%s", tdir, name, "") != CM_OK ||
            cm_fileio_write_atomic(path, p->data, p->len, p->mode, &r) != CM_OK) {
            fail_step(c, "stage", p->key, &r);
            return abandon(c, tdir);
        }
    }
    return CM_OK;
}

/* The target directories fsynced after the renames, each once, in order. */
struct dirset {
    char **dirs;
    size_t n, cap;
};

static int dirset_add(struct dirset *s, const char *dir, struct cm_result *res)
{
    size_t i;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->dirs[i], dir) == 0) return CM_OK;
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        char **grown = realloc(s->dirs, ncap * sizeof *grown);
        if (!grown) return cm_fail(res, "ENOMEM", "out of memory");
        s->dirs = grown;
        s->cap = ncap;
    }
    if (!(s->dirs[s->n] = strdup(dir))) return cm_fail(res, "ENOMEM", "out of memory");
    s->n++;
    return CM_OK;
}

static void dirset_free(struct dirset *s)
{
    size_t i;
    for (i = 0; i < s->n; i++) free(s->dirs[i]);
    free(s->dirs);
    memset(s, 0, sizeof *s);
}

/* file.lua's File:apply, step for step. */
static int apply(struct cm_commit *c, const char *tdir)
{
    struct cm_result r;
    struct dirset dirs = {NULL, 0, 0};
    char path[PATH_MAX], target[PATH_MAX], pdir[PATH_MAX];
    size_t i;
    int rc = CM_ERR;
    for (i = 0; i < c->nput; i++) {
        const struct cm_commit_put *p = &c->puts[i];
        char name[32];
        if (step(c, "commit.apply.rename", p->key) != CM_OK) goto out;
        if (refuse_symlinks(c, p->key, strlen(p->key), &r) != CM_OK) {
            fail_step(c, "rename", p->key, &r);
            goto out;
        }
        snprintf(name, sizeof name, "%zu", i);
        if (path_of(target, &r, "%s/%s%s", c->root, p->key, "") != CM_OK ||
            path_of(path, &r, "%s/%s%s", tdir, name, "") != CM_OK) {
            fail_step(c, "rename", p->key, &r);
            goto out;
        }
        parent_dir(target, pdir);
        if (cm_fileio_mkdir_p(pdir, c->dir_mode, &r) != CM_OK) {
            fail_step(c, "mkdir", p->key, &r);
            goto out;
        }
        if (cm_fileio_rename(path, target, &r) != CM_OK && strcmp(r.code, "ENOENT") != 0) {
            fail_step(c, "rename", p->key, &r);
            goto out;
        }
        if (dirset_add(&dirs, pdir, &r) != CM_OK) {
            fail_step(c, "rename", p->key, &r);
            goto out;
        }
    }
    if (step(c, "commit.apply.fsync", tdir) != CM_OK) goto out;
    for (i = 0; i < dirs.n; i++)
        if (cm_fileio_fsync_dir(dirs.dirs[i], &r) != CM_OK) {
            fail_step(c, "fsync", dirs.dirs[i], &r);
            goto out;
        }
    for (i = 0; i < c->ndelete; i++) {
        const char *key = c->deletes[i], *slash = strrchr(key, '/');
        if (step(c, "commit.apply.delete", key) != CM_OK) goto out;
        if (slash && refuse_symlinks(c, key, (size_t)(slash - key), &r) != CM_OK) {
            fail_step(c, "delete", key, &r);
            goto out;
        }
        if (path_of(target, &r, "%s/%s%s", c->root, key, "") != CM_OK ||
            (remove_tree(target, &r) != CM_OK && strcmp(r.code, "ENOENT") != 0)) {
            fail_step(c, "delete", key, &r);
            goto out;
        }
    }
    if (step(c, "commit.cleanup", tdir) != CM_OK) goto out;
    /* the manifest goes first (cm_fileio_remove fsyncs the folder): without
     * it what is left is an empty, abandoned transaction */
    if (path_of(path, &r, "%s/%s%s", tdir, MANIFEST, "") != CM_OK ||
        (cm_fileio_remove(path, &r) != CM_OK && strcmp(r.code, "ENOENT") != 0) ||
        (remove_tree(tdir, &r) != CM_OK && strcmp(r.code, "ENOENT") != 0)) {
        fail_step(c, "cleanup", tdir, &r);
        goto out;
    }
    step_done(c);
    rc = CM_OK;
out:
    dirset_free(&dirs);
    return rc;
}

static int commit_point(struct cm_commit *c, const char *tdir)
{
    struct cm_result r;
    char path[PATH_MAX];
    if (!c->manifest) return cm_fail(&c->res, "invalid", "commit %s: no manifest", c->txn);
    if (step(c, "commit.manifest", MANIFEST) != CM_OK) return c->crashed ? CM_ERR : abandon(c, tdir);
    if (path_of(path, &r, "%s/%s%s", tdir, MANIFEST, "") != CM_OK ||
        cm_fileio_write_atomic(path, c->manifest, c->manifest_len, 0600, &r) != CM_OK) {
        fail_step(c, "manifest", MANIFEST, &r);
        return abandon(c, tdir);
    }
    c->committed = 1;
    step_done(c);
    return apply(c, tdir);
}

static int write_plain(struct cm_commit *c)
{
    struct cm_result r;
    char target[PATH_MAX], pdir[PATH_MAX];
    size_t i;
    for (i = 0; i < c->nput; i++) {
        const struct cm_commit_put *p = &c->puts[i];
        if (path_of(target, &r, "%s/%s%s", c->root, p->key, "") != CM_OK)
            return fail_step(c, "write", p->key, &r);
        parent_dir(target, pdir);
        if (cm_fileio_mkdir_p(pdir, c->dir_mode, &r) != CM_OK) return fail_step(c, "mkdir", p->key, &r);
        if (cm_fileio_write_atomic(target, p->data, p->len, p->mode, &r) != CM_OK)
            return fail_step(c, "write", p->key, &r);
    }
    return CM_OK;
}

int cm_commit_run(struct cm_commit *c, enum cm_commit_phase phase)
{
    char tdir[PATH_MAX];
    c->crashed = 0;
    c->failed_step = NULL;
    c->failed_path[0] = '\0';
    cm_result_clear(&c->res);
    if (!c->root) return cm_fail(&c->res, "invalid", "commit: no root");
    if (phase == CM_COMMIT_WRITE) return write_plain(c);
    if (!c->txn) return cm_fail(&c->res, "invalid", "commit: no transaction id");
    if (path_of(tdir, &c->res, "%s/" JOURNAL "/%s%s", c->root, c->txn, "") != CM_OK) return CM_ERR;
    if (phase == CM_COMMIT_STAGE) {
        int rc = stage(c, tdir);
        step_done(c); /* a crash-after of the last step: whatever its outcome */
        return rc;
    }
    if (phase == CM_COMMIT_APPLY) {
        int rc = commit_point(c, tdir);
        step_done(c);
        return rc;
    }
    return cm_fail(&c->res, "invalid", "commit: unknown phase %d", (int)phase);
}
