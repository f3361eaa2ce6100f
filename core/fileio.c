/* fileio.c - crash-safe writes, bounded reads, exclusive creation. */
#include "fileio.h"

#include "failpoint.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"

void (*cm_fileio_test_hook)(const char *stage, const char *path, const char *tmp_path) = NULL;

const char *cm_errno_name(int err)
{
    static const struct {
        int value;
        const char *name;
    } names[] = {
        {EPERM, "EPERM"},     {ENOENT, "ENOENT"},   {EINTR, "EINTR"},
        {EIO, "EIO"},         {EBADF, "EBADF"},     {EAGAIN, "EAGAIN"},
        {ENOMEM, "ENOMEM"},   {EACCES, "EACCES"},   {EBUSY, "EBUSY"},
        {EEXIST, "EEXIST"},   {EXDEV, "EXDEV"},     {ENOTDIR, "ENOTDIR"},
        {EISDIR, "EISDIR"},   {EINVAL, "EINVAL"},   {ENFILE, "ENFILE"},
        {EMFILE, "EMFILE"},   {ETXTBSY, "ETXTBSY"}, {EFBIG, "EFBIG"},
        {ENOSPC, "ENOSPC"},   {EROFS, "EROFS"},     {EMLINK, "EMLINK"},
        {ENAMETOOLONG, "ENAMETOOLONG"},             {ENOTEMPTY, "ENOTEMPTY"},
        {ELOOP, "ELOOP"},     {ENOSYS, "ENOSYS"},   {EOPNOTSUPP, "EOPNOTSUPP"},
        {EDQUOT, "EDQUOT"},   {ESTALE, "ESTALE"},   {ETIMEDOUT, "ETIMEDOUT"},
    };
    static char unknown[32];
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].value == err) return names[i].name;
    snprintf(unknown, sizeof unknown, "errno%d", err);
    return unknown;
}

/* cm_fail with the errno convention: "<op> <path>: <strerror>", code = name. */
static int fail_errno(struct cm_result *res, int err, const char *op, const char *path)
{
    return cm_fail(res, cm_errno_name(err), "%s %s: %s", op, path, strerror(err));
}

/* Split path into its directory (with "." for a bare name) and base name.
 * Fails for an empty path, one ending in '/', or one too long. */
static int split_path(const char *op, const char *path, char dir[PATH_MAX], const char **base,
                      struct cm_result *res)
{
    const char *slash;
    size_t len = strlen(path);
    if (len == 0) return cm_fail(res, "EINVAL", "%s: empty path", op);
    if (len >= PATH_MAX) return fail_errno(res, ENAMETOOLONG, op, path);
    if (path[len - 1] == '/') return fail_errno(res, EISDIR, op, path);
    slash = strrchr(path, '/');
    if (!slash) {
        memcpy(dir, ".", 2);
        *base = path;
    } else if (slash == path) {
        memcpy(dir, "/", 2);
        *base = path + 1;
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
        *base = slash + 1;
    }
    return CM_OK;
}

/* fsync a directory so renames, links and unlinks inside it are durable.
 * Returns 0 or an errno; EINVAL (a file system that cannot sync directories)
 * is not an error: there is nothing more we could do. */
static int fsync_dir(const char *dir)
{
    int fd, err = 0;
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    if (fsync(fd) != 0 && errno != EINVAL) err = errno;
    if (close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
    return err;
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Make a fresh, unique name ".<base prefix>.<tag>-<16 hex>" in dir.  The base
 * is cut to 64 bytes so the name fits NAME_MAX whatever the target's length;
 * the leading dot and the tag let listings recognise (and skip) these. */
/* Give the open file exactly `mode` (open() applied the umask), write all of
 * data, fsync, close.  *fd is closed and set to -1 whatever happens. */
static int fill_and_close(int *fd, const void *data, size_t len, mode_t mode, const char *path,
                          struct cm_result *res)
{
    int err, rc = CM_ERR;
    if (fchmod(*fd, mode) != 0) {
        fail_errno(res, errno, "chmod", path);
        goto out;
    }
    if ((err = write_all(*fd, data, len)) != 0) {
        fail_errno(res, err, "write", path);
        goto out;
    }
    if (fsync(*fd) != 0) {
        fail_errno(res, errno, "fsync", path);
        goto out;
    }
    rc = CM_OK;
out:
    err = close(*fd);
    *fd = -1;
    if (rc == CM_OK && err != 0) return fail_errno(res, errno, "close", path);
    return rc;
}

static int side_name(const char *dir, const char *base, const char *tag, char out[PATH_MAX],
                     struct cm_result *res)
{
    unsigned char rnd[8];
    char hex[17];
    int n;
    if (cm_crypto_random_bytes(rnd, sizeof rnd, res) != CM_OK) return CM_ERR;
    cm_crypto_hex(rnd, sizeof rnd, hex);
    n = snprintf(out, PATH_MAX, "%s/.%.64s.%s-%s", dir, base, tag, hex);
    if (n < 0 || n >= PATH_MAX) return fail_errno(res, ENAMETOOLONG, "create temp in", dir);
    return CM_OK;
}

/* Create a temp file in dir holding data with mode, fsynced and closed.
 * On success tmp names it and the caller owns (must rename or unlink) it. */
static int write_temp(const char *op, const char *path, const char *dir, const char *base,
                      const void *data, size_t len, mode_t mode, char tmp[PATH_MAX],
                      struct cm_result *res)
{
    int fd = -1, tries, made = 0, rc = CM_ERR;

    for (tries = 0; tries < 8; tries++) {
        if (side_name(dir, base, "tmp", tmp, res) != CM_OK) goto out;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        fail_errno(res, errno, op, path);
        goto out;
    }
    made = 1;
    rc = fill_and_close(&fd, data, len, mode, path, res);
out:
    if (fd >= 0) close(fd);
    if (rc != CM_OK && made) unlink(tmp);
    return rc;
}

int cm_fileio_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           struct cm_result *res)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *base = NULL;
    int have_tmp = 0, err, rc = CM_ERR, fp;

    if (split_path("write", path, dir, &base, res) != CM_OK) goto out;
    if ((fp = cm_failpoint_before("file.write.tmp", path, res)) < 0) goto out;
    err = write_temp("open", path, dir, base, data, len, mode, tmp, res);
    cm_failpoint_after("file.write.tmp", fp); /* crash-after: after the step, whatever its outcome */
    if (err != CM_OK) goto out;
    have_tmp = 1;
    if (cm_fileio_test_hook) cm_fileio_test_hook("before_rename", path, tmp);
    if ((fp = cm_failpoint_before("file.write.rename", path, res)) < 0) goto out;
    err = rename(tmp, path) != 0 ? errno : 0;
    cm_failpoint_after("file.write.rename", fp);
    if (err != 0) {
        fail_errno(res, err, "rename", path);
        goto out;
    }
    have_tmp = 0;
    if ((fp = cm_failpoint_before("file.write.dirsync", path, res)) < 0) goto out;
    err = fsync_dir(dir);
    cm_failpoint_after("file.write.dirsync", fp);
    if (err != 0) {
        fail_errno(res, err, "fsync directory of", path);
        goto out;
    }
    rc = CM_OK;
out:
    if (have_tmp) unlink(tmp);
    return rc;
}

/* Make buf hold at least want bytes (plus the NUL). */
static int buf_reserve(struct cm_fileio_buf *buf, size_t want, const char *path,
                       struct cm_result *res)
{
    char *grown;
    if (buf->data && buf->cap >= want) return CM_OK;
    grown = realloc(buf->data, want + 1);
    if (!grown) return fail_errno(res, ENOMEM, "read", path);
    buf->data = grown;
    buf->cap = want;
    return CM_OK;
}

int cm_fileio_read_into(const char *path, size_t max, struct cm_fileio_buf *buf, size_t *out_len,
                        struct cm_result *res)
{
    return cm_fileio_read_into_at(AT_FDCWD, path, path, max, buf, out_len, res);
}

void cm_fileio_reader_init(struct cm_fileio_reader *rd)
{
    rd->buf.data = NULL;
    rd->buf.cap = 0;
    rd->dirfd = -1;
    rd->dir_len = 0;
    rd->dir[0] = '\0';
}

void cm_fileio_reader_free(struct cm_fileio_reader *rd)
{
    cm_fileio_buf_free(&rd->buf);
    if (rd->dirfd >= 0) close(rd->dirfd);
    rd->dirfd = -1;
    rd->dir_len = 0;
}

int cm_fileio_reader_dir(struct cm_fileio_reader *rd, const char *path, unsigned depth, const char **rel)
{
    const char *p = path + strlen(path), *cut = NULL;
    unsigned seen = 0;
    size_t len;
    *rel = path;
    /* the '/' before the last `depth` components */
    while (p > path && seen < depth) {
        p--;
        if (*p == '/') {
            seen++;
            cut = p;
        }
    }
    if (seen < depth || !cut || cut == path) return AT_FDCWD;
    len = (size_t)(cut - path) + 1;
    if (rd->dirfd < 0 || rd->dir_len != len || memcmp(rd->dir, path, len) != 0) {
        int fd;
        if (len >= sizeof rd->dir) return AT_FDCWD;
        memcpy(rd->dir, path, len);
        rd->dir[len] = '\0';
        fd = open(rd->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rd->dirfd >= 0) close(rd->dirfd);
        rd->dirfd = fd;
        rd->dir_len = fd >= 0 ? len : 0;
        if (fd < 0) return AT_FDCWD;
    }
    *rel = path + len;
    return rd->dirfd;
}

int cm_fileio_reader_read(struct cm_fileio_reader *rd, const char *path, unsigned depth, size_t max,
                          size_t *out_len, struct cm_result *res)
{
    const char *rel;
    int dirfd = cm_fileio_reader_dir(rd, path, depth, &rel);
    return cm_fileio_read_into_at(dirfd, rel, path, max, &rd->buf, out_len, res);
}

int cm_fileio_read_into_at(int dirfd, const char *rel, const char *path, size_t max,
                           struct cm_fileio_buf *buf, size_t *out_len, struct cm_result *res)
{
    int fd = -1, rc = CM_ERR;
    struct stat st;
    size_t want, used = 0;

    *out_len = 0;
    /* O_NONBLOCK: opening a FIFO must not hang us; it is refused below. */
    fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        fail_errno(res, errno, "read", path);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        fail_errno(res, errno, "read", path);
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        fail_errno(res, EISDIR, "read", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        cm_fail(res, "EISDIR", "read %s: not a regular file", path);
        goto out;
    }
    if (st.st_size < 0 || (unsigned long long)st.st_size > max) {
        cm_fail(res, "toobig", "read %s: larger than %zu bytes", path, max);
        goto out;
    }
    /* Size from fstat, plus one byte to see growth past the bound or EOF. */
    want = (size_t)st.st_size + 1;
    if (want < 64) want = 64;
    if (want > max + 1) want = max + 1;
    if (buf_reserve(buf, want, path, res) != CM_OK) goto out;
    for (;;) {
        ssize_t n;
        if (used == buf->cap) {
            if (buf->cap > max) break; /* read max + 1 bytes: too big */
            want = buf->cap * 2 > max + 1 ? max + 1 : buf->cap * 2;
            if (buf_reserve(buf, want, path, res) != CM_OK) goto out;
        }
        n = read(fd, buf->data + used, buf->cap - used);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail_errno(res, errno, "read", path);
            goto out;
        }
        if (n == 0) break;
        used += (size_t)n;
        /* a regular file reads short only at its end: no second read(2) to see EOF */
        if (used < buf->cap) break;
    }
    if (used > max) {
        cm_fail(res, "toobig", "read %s: larger than %zu bytes", path, max);
        goto out;
    }
    buf->data[used] = '\0';
    *out_len = used;
    rc = CM_OK;
out:
    if (fd >= 0) close(fd);
    return rc;
}

void cm_fileio_buf_free(struct cm_fileio_buf *buf)
{
    free(buf->data); buf->data = NULL;
    buf->cap = 0;
}

int cm_fileio_read_file(const char *path, size_t max, char **out, size_t *out_len,
                        struct cm_result *res)
{
    struct cm_fileio_buf buf = {NULL, 0};
    *out = NULL;
    if (cm_fileio_read_into(path, max, &buf, out_len, res) != CM_OK) {
        cm_fileio_buf_free(&buf);
        return CM_ERR;
    }
    *out = buf.data; /* the caller owns it now */
    return CM_OK;
}

int cm_fileio_rename(const char *from, const char *to, struct cm_result *res)
{
    int err, fp = cm_failpoint_before("file.rename", to, res);
    if (fp < 0) return CM_ERR;
    err = rename(from, to) != 0 ? errno : 0;
    cm_failpoint_after("file.rename", fp);
    if (err != 0) return fail_errno(res, err, "rename", to);
    return CM_OK;
}

int cm_fileio_fsync_dir(const char *path, struct cm_result *res)
{
    int err, fp = cm_failpoint_before("file.fsync_dir", path, res);
    if (fp < 0) return CM_ERR;
    err = fsync_dir(path);
    cm_failpoint_after("file.fsync_dir", fp);
    if (err != 0) return fail_errno(res, err, "fsync directory", path);
    return CM_OK;
}

/* The fallback of create_exclusive where hard links are unsupported: the file
 * is briefly visible empty; readers treat an unreadable lock as busy. */
static int create_exclusive_direct(const char *path, const void *data, size_t len, mode_t mode,
                                   struct cm_result *res)
{
    int fd = -1, made = 0, rc = CM_ERR;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        fail_errno(res, errno, "create", path);
        goto out;
    }
    made = 1;
    rc = fill_and_close(&fd, data, len, mode, path, res);
out:
    if (fd >= 0) close(fd);
    if (rc != CM_OK && made) unlink(path);
    return rc;
}

static int link_unsupported(int err)
{
    return err == EPERM || err == EOPNOTSUPP || err == ENOSYS;
}

int cm_fileio_create_exclusive(const char *path, const void *data, size_t len, mode_t mode,
                               struct cm_result *res)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *base = NULL;
    int have_tmp = 0, err, rc = CM_ERR, fp = 0;

    if (split_path("create", path, dir, &base, res) != CM_OK) goto out;
    if ((fp = cm_failpoint_before("file.create_exclusive", path, res)) < 0) goto out;
    if (write_temp("create", path, dir, base, data, len, mode, tmp, res) != CM_OK) goto out;
    have_tmp = 1;
    /* link(2) fails with EEXIST if anything is at path: atomic exclusive
     * creation of a file that is complete the moment it appears. */
    if (link(tmp, path) != 0) {
        err = errno;
        if (link_unsupported(err)) {
            unlink(tmp);
            have_tmp = 0;
            if (create_exclusive_direct(path, data, len, mode, res) != CM_OK) goto out;
        } else {
            fail_errno(res, err, "create", path);
            goto out;
        }
    }
    if (have_tmp) {
        unlink(tmp);
        have_tmp = 0;
    }
    if ((err = fsync_dir(dir)) != 0) {
        fail_errno(res, err, "fsync directory of", path);
        goto out;
    }
    rc = CM_OK;
out:
    if (have_tmp) unlink(tmp);
    if (fp > 0) cm_failpoint_after("file.create_exclusive", fp); /* whatever the outcome */
    return rc;
}

int cm_fileio_replace_if_unchanged(const char *path, const void *expected, size_t expected_len,
                                   const void *data, size_t len, mode_t mode,
                                   struct cm_result *res)
{
    char dir[PATH_MAX], aside[PATH_MAX];
    const char *base = NULL;
    char *seen = NULL;
    size_t seen_len = 0;
    int have_aside = 0, moved = 0, rc = CM_ERR, fp = 0;
    struct cm_result rres;

    if (split_path("replace", path, dir, &base, res) != CM_OK) goto out;
    if ((fp = cm_failpoint_before("file.replace", path, res)) < 0) goto out;
    if (side_name(dir, base, "stale", aside, res) != CM_OK) goto out;
    /* rename is atomic: of several instances taking over the same stale file,
     * exactly one moves it; the others get ENOENT. */
    if (rename(path, aside) != 0) {
        fail_errno(res, errno, "replace", path);
        goto out;
    }
    have_aside = 1;
    moved = 1;
    if (cm_fileio_read_file(aside, expected_len + 1, &seen, &seen_len, &rres) != CM_OK ||
        seen_len != expected_len || memcmp(seen, expected, expected_len) != 0) {
        /* Not the file we judged: another instance replaced it between our
         * read and the rename.  Put it back; link fails if a third one
         * created the path meanwhile, and then that one wins. */
        if (link(aside, path) != 0 && link_unsupported(errno) && rename(aside, path) == 0)
            have_aside = 0;
        cm_fail(res, "changed", "replace %s: the file changed since it was read", path);
        goto out;
    }
    if (unlink(aside) != 0) {
        fail_errno(res, errno, "remove", aside);
        goto out;
    }
    have_aside = 0;
    if (cm_fileio_create_exclusive(path, data, len, mode, res) != CM_OK) goto out;
    rc = CM_OK;
out:
    if (have_aside) unlink(aside);
    /* Best effort: the failure is what the caller needs to hear about. */
    if (rc != CM_OK && moved) (void)fsync_dir(dir);
    free(seen); seen = NULL;
    if (fp > 0) cm_failpoint_after("file.replace", fp); /* whatever the outcome */
    return rc;
}

int cm_fileio_mkdir_p(const char *path, mode_t mode, struct cm_result *res)
{
    char buf[PATH_MAX];
    size_t len = strlen(path), i;
    struct stat st;
    int err, fp = 0;

    if (len == 0) return cm_fail(res, "EINVAL", "mkdir: empty path");
    if (len >= PATH_MAX) return fail_errno(res, ENAMETOOLONG, "mkdir", path);
    memcpy(buf, path, len + 1);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = '\0';
    for (i = 1; i <= len; i++) {
        char saved;
        if (i < len && buf[i] != '/') continue;
        if (buf[i - 1] == '/') continue; /* "a//b" */
        saved = buf[i];
        buf[i] = '\0';
        /* the point counts directories actually made, not ones already there */
        if (cm_failpoints_active && stat(buf, &st) != 0 && errno == ENOENT &&
            (fp = cm_failpoint_before("file.mkdir", buf, res)) < 0)
            return CM_ERR;
        err = mkdir(buf, mode) == 0 ? 0 : errno;
        cm_failpoint_after("file.mkdir", fp);
        fp = 0;
        if (err == 0) {
            char *slash;
            /* mkdir applied the umask; chmod makes it exactly mode. */
            if (chmod(buf, mode) != 0) return fail_errno(res, errno, "chmod", buf);
            /* Make the new entry durable in its parent. */
            slash = strrchr(buf, '/');
            if (slash && slash != buf) {
                *slash = '\0';
                err = fsync_dir(buf);
                *slash = '/';
            } else {
                err = fsync_dir(slash ? "/" : ".");
            }
            if (err != 0) return fail_errno(res, err, "fsync directory of", buf);
        } else if (err == EEXIST) {
            if (stat(buf, &st) != 0) return fail_errno(res, errno, "mkdir", buf);
            if (!S_ISDIR(st.st_mode)) return fail_errno(res, ENOTDIR, "mkdir", buf);
        } else {
            return fail_errno(res, err, "mkdir", buf);
        }
        buf[i] = saved;
    }
    return CM_OK;
}

int cm_fileio_stat(const char *path, struct cm_file_stat *out, struct cm_result *res)
{
    struct stat st;
    if (stat(path, &st) != 0) return fail_errno(res, errno, "stat", path);
    out->type = S_ISREG(st.st_mode)   ? CM_FILE_REGULAR
                : S_ISDIR(st.st_mode) ? CM_FILE_DIRECTORY
                                      : CM_FILE_OTHER;
    out->size = (long long)st.st_size;
    out->modified = (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9;
    out->perms = (unsigned int)(st.st_mode & 07777);
    return CM_OK;
}

int cm_fileio_remove(const char *path, struct cm_result *res)
{
    char dir[PATH_MAX];
    const char *base = NULL;
    int err, fp;
    if (split_path("remove", path, dir, &base, res) != CM_OK) return CM_ERR;
    if ((fp = cm_failpoint_before("file.remove", path, res)) < 0) return CM_ERR;
    err = unlink(path) != 0 ? errno : 0;
    cm_failpoint_after("file.remove", fp);
    if (err != 0) return fail_errno(res, err, "remove", path);
    if ((err = fsync_dir(dir)) != 0) return fail_errno(res, err, "fsync directory of", path);
    return CM_OK;
}

int cm_fileio_rmdir(const char *path, struct cm_result *res)
{
    int err, fp = cm_failpoint_before("file.rmdir", path, res);
    if (fp < 0) return CM_ERR;
    err = rmdir(path) != 0 ? errno : 0;
    cm_failpoint_after("file.rmdir", fp);
    if (err != 0) return fail_errno(res, err, "rmdir", path);
    return CM_OK;
}

void cm_fileio_hostname(char *out, size_t size)
{
    if (size == 0) return;
    if (gethostname(out, size) != 0) {
        snprintf(out, size, "unknown");
        return;
    }
    out[size - 1] = '\0';
}

int cm_fileio_pid_alive(long pid)
{
    if (pid <= 0 || pid != (long)(pid_t)pid) return 0;
    if (kill((pid_t)pid, 0) == 0) return 1;
    return errno != ESRCH; /* EPERM: it exists, under another user */
}

/* ---- walking a tree ------------------------------------------------------ */

/* One list of relative paths the walk fills. */
struct walk_list {
    char **paths;
    size_t count, cap;
};

struct walk {
    struct walk_list files, side; /* side: temp and aside files, in the clean walk */
    struct walk_list sites;       /* the clean walk's site folders, left unread */
    size_t max_files;
    unsigned max_depth;
    const char *skip_top;
    int side_files; /* list only the temp and aside files (clean_temp), not the others */
    const char *crt_top; /* the clean walk: *.crt files below this top entry, and side files */
    struct cm_result *res;
};

/* "." + anything + suffix + one or more hex digits, to the end. */
static int has_hex_suffix(const char *name, const char *suffix)
{
    const char *p;
    size_t k;
    if (name[0] != '.') return 0; /* most names: no search at all */
    if (!(p = strstr(name + 1, suffix))) return 0;
    for (;;) {
        const char *next = strstr(p + 1, suffix);
        if (!next) break;
        p = next; /* the last occurrence */
    }
    p += strlen(suffix);
    if (*p == '\0') return 0;
    for (k = 0; p[k]; k++)
        if (!((p[k] >= '0' && p[k] <= '9') || (p[k] >= 'a' && p[k] <= 'f') || (p[k] >= 'A' && p[k] <= 'F')))
            return 0;
    return 1;
}

static int is_side_file(const char *name)
{
    return has_hex_suffix(name, ".tmp-") || has_hex_suffix(name, ".stale-");
}

int cm_fileio_is_side_file(const char *name) { return is_side_file(name); }

static int walk_add(struct walk *w, struct walk_list *l, const char *rel)
{
    char *copy;
    if (w->files.count + w->side.count + w->sites.count >= w->max_files)
        return cm_fail(w->res, "toobig", "list: more than %zu files", w->max_files);
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **grown = realloc(l->paths, cap * sizeof *grown);
        if (!grown) return cm_fail(w->res, "ENOMEM", "list: out of memory");
        l->paths = grown;
        l->cap = cap;
    }
    if (!(copy = strdup(rel))) return cm_fail(w->res, "ENOMEM", "list: out of memory");
    l->paths[l->count++] = copy;
    return CM_OK;
}

/* The clean walk's certificate files: "<crt_top>/.../<name>.crt". */
static int is_clean_crt(const struct walk *w, const char *rel, size_t rel_len)
{
    size_t top = strlen(w->crt_top);
    return rel_len > top + 5 && memcmp(rel, w->crt_top, top) == 0 && rel[top] == '/' &&
           memcmp(rel + rel_len - 4, ".crt", 4) == 0;
}

/* Where a non-directory entry goes: its list, or NULL (not listed). */
static struct walk_list *walk_list_for(struct walk *w, int side, const char *rel, size_t rel_len)
{
    if (w->crt_top) {
        if (side) return &w->side;
        return is_clean_crt(w, rel, rel_len) ? &w->files : NULL;
    }
    return side == w->side_files ? &w->files : NULL;
}

/* Walk full (the directory), whose path relative to the root is rel ("" at
 * the top). */
static int walk_dir(struct walk *w, char *full, size_t full_len, char *rel, size_t rel_len,
                    unsigned depth)
{
    DIR *d = NULL;
    struct dirent *de;
    int rc = CM_ERR;

    if (!(d = opendir(full))) {
        if (errno == ENOENT && depth > 0) return CM_OK; /* removed meanwhile: nothing in it to list */
        return fail_errno(w->res, errno, "list", full);
    }
    for (;;) {
        size_t nlen;
        int is_dir, side;
        errno = 0;
        if (!(de = readdir(d))) {
            if (errno) {
                fail_errno(w->res, errno, "list", full);
                goto out;
            }
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        side = is_side_file(de->d_name);
        if (!w->crt_top) {
            if (side && !w->side_files) continue;                          /* a crash's leftovers: never listed */
            if (!side && w->side_files && de->d_type == DT_REG) continue; /* only those wanted */
        }
        if (depth == 0 && w->skip_top && strcmp(de->d_name, w->skip_top) == 0) continue;
        nlen = strlen(de->d_name);
        if (full_len + 1 + nlen >= PATH_MAX || rel_len + 1 + nlen >= PATH_MAX) {
            cm_fail(w->res, "ENAMETOOLONG", "list %s/%s: File name too long", full, de->d_name);
            goto out;
        }
        full[full_len] = '/';
        memcpy(full + full_len + 1, de->d_name, nlen + 1);
        if (rel_len) rel[rel_len] = '/';
        memcpy(rel + (rel_len ? rel_len + 1 : 0), de->d_name, nlen + 1);
        if (de->d_type == DT_DIR) {
            is_dir = 1;
        } else if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (lstat(full, &st) != 0) {
                if (errno == ENOENT) goto next; /* gone meanwhile */
                fail_errno(w->res, errno, "list", full);
                goto out;
            }
            is_dir = S_ISDIR(st.st_mode);
        } else {
            is_dir = 0;
        }
        if (is_dir && w->crt_top && depth == 2 && strncmp(rel, w->crt_top, strlen(w->crt_top)) == 0 &&
            rel[strlen(w->crt_top)] == '/') {
            /* <crt_top>/<issuer>/<site>: the caller reads it (on its threads) */
            if (walk_add(w, &w->sites, rel) != CM_OK) goto out;
        } else if (is_dir) {
            if (depth + 1 > w->max_depth) {
                cm_fail(w->res, "toobig", "list %s: deeper than %u levels", rel, w->max_depth);
                goto out;
            }
            if (walk_dir(w, full, full_len + 1 + nlen, rel, rel_len ? rel_len + 1 + nlen : nlen,
                         depth + 1) != CM_OK)
                goto out;
        } else {
            size_t now_len = rel_len ? rel_len + 1 + nlen : nlen;
            struct walk_list *l = walk_list_for(w, side, rel, now_len);
            if (l && walk_add(w, l, rel) != CM_OK) goto out;
        }
    next:
        full[full_len] = '\0';
        rel[rel_len] = '\0';
    }
    rc = CM_OK;
out:
    full[full_len] = '\0';
    rel[rel_len] = '\0';
    if (d) closedir(d);
    return rc;
}

static int cmp_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_list_free(struct walk_list *l)
{
    cm_fileio_paths_free(l->paths, l->count);
    memset(l, 0, sizeof *l);
}

/* Run the walk w (filled but for its lists) over dir; each list sorted. */
static int walk_run(struct walk *w, const char *dir)
{
    char *full = NULL, *rel = NULL;
    size_t dlen = strlen(dir);
    int rc = CM_ERR;

    if (dlen == 0 || dlen >= PATH_MAX) return cm_fail(w->res, "ENAMETOOLONG", "list: bad directory");
    full = malloc(PATH_MAX);
    rel = malloc(PATH_MAX);
    if (!full || !rel) {
        cm_fail(w->res, "ENOMEM", "list: out of memory");
        goto out;
    }
    memcpy(full, dir, dlen + 1);
    rel[0] = '\0';
    if (walk_dir(w, full, dlen, rel, 0, 0) != CM_OK) goto out;
    if (w->files.count > 1) qsort(w->files.paths, w->files.count, sizeof *w->files.paths, cmp_paths);
    if (w->side.count > 1) qsort(w->side.paths, w->side.count, sizeof *w->side.paths, cmp_paths);
    rc = CM_OK;
out:
    if (rc != CM_OK) {
        walk_list_free(&w->files);
        walk_list_free(&w->side);
        walk_list_free(&w->sites);
    }
    free(full); full = NULL;
    free(rel); rel = NULL;
    return rc;
}

/* A walk with its bounds, listing nothing yet. */
static void walk_init(struct walk *w, const char *skip_top, unsigned max_depth, size_t max_files,
                      struct cm_result *res)
{
    memset(w, 0, sizeof *w);
    w->max_files = max_files;
    w->max_depth = max_depth;
    w->skip_top = skip_top;
    w->res = res;
}

static int walk_tree(const char *dir, const char *skip_top, int side_files, unsigned max_depth,
                     size_t max_files, char ***paths, size_t *count, struct cm_result *res)
{
    struct walk w;

    *paths = NULL;
    *count = 0;
    walk_init(&w, skip_top, max_depth, max_files, res);
    w.side_files = side_files;
    if (walk_run(&w, dir) != CM_OK) return CM_ERR;
    *paths = w.files.paths;
    *count = w.files.count;
    return CM_OK;
}

int cm_fileio_walk_clean(const char *dir, const char *skip_top, const char *crt_top, unsigned max_depth,
                         size_t max_files, struct cm_fileio_clean_walk *out, struct cm_result *res)
{
    struct walk w;

    memset(out, 0, sizeof *out);
    if (!crt_top || !*crt_top || strchr(crt_top, '/'))
        return cm_fail(res, "invalid", "list: the certificates folder must be one top-level name");
    walk_init(&w, skip_top, max_depth, max_files, res);
    w.crt_top = crt_top;
    if (walk_run(&w, dir) != CM_OK) return CM_ERR;
    out->crts = w.files.paths;
    out->crt_count = w.files.count;
    out->side = w.side.paths;
    out->side_count = w.side.count;
    out->sites = w.sites.paths;
    out->site_count = w.sites.count;
    return CM_OK;
}

void cm_fileio_clean_walk_free(struct cm_fileio_clean_walk *cw)
{
    cm_fileio_paths_free(cw->crts, cw->crt_count);
    cm_fileio_paths_free(cw->side, cw->side_count);
    cm_fileio_paths_free(cw->sites, cw->site_count);
    memset(cw, 0, sizeof *cw);
}

int cm_fileio_walk(const char *dir, const char *skip_top, unsigned max_depth, size_t max_files,
                   char ***paths, size_t *count, struct cm_result *res)
{
    return walk_tree(dir, skip_top, 0, max_depth, max_files, paths, count, res);
}

int cm_fileio_walk_side_files(const char *dir, const char *skip_top, unsigned max_depth, size_t max_files,
                              char ***paths, size_t *count, struct cm_result *res)
{
    return walk_tree(dir, skip_top, 1, max_depth, max_files, paths, count, res);
}

void cm_fileio_paths_free(char **paths, size_t count)
{
    size_t i;
    if (!paths) return;
    for (i = 0; i < count; i++) { free(paths[i]); paths[i] = NULL; }
    free(paths);
}

/* ---- removing many files ------------------------------------------------- */

/* Open the folder rel (relative to rootfd; "" is the root itself) one
 * component at a time, never following a symbolic link: *fd, or -1 with an
 * errno (ENOENT: gone; ELOOP/ENOTDIR: a link or a file on the way). */
static int open_below(int rootfd, const char *rel, int *fd)
{
    char comp[NAME_MAX + 1];
    const char *p = rel;
    int cur = dup(rootfd);
    *fd = -1;
    if (cur < 0) return errno;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        int next;
        if (len == 0 || len > NAME_MAX) {
            close(cur);
            return ENAMETOOLONG;
        }
        memcpy(comp, p, len);
        comp[len] = '\0';
        next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            int err = errno;
            struct stat st;
            /* Linux says ENOTDIR for a link with O_DIRECTORY: tell them apart */
            if (err == ENOTDIR && fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                err = ELOOP;
            close(cur);
            return err;
        }
        close(cur);
        cur = next;
        p += len;
        if (*p == '/') p++;
    }
    *fd = cur;
    return 0;
}

/* The folders a removal changed, fsynced once each at the end. */
struct dirty_dirs {
    char **dirs;
    size_t count, cap;
};

static int dirty_add(struct dirty_dirs *d, const char *dir, size_t len)
{
    char *copy;
    if (d->count && strlen(d->dirs[d->count - 1]) == len && memcmp(d->dirs[d->count - 1], dir, len) == 0)
        return 0; /* the same folder again (sorted input): the common case */
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        char **grown = realloc(d->dirs, cap * sizeof *grown);
        if (!grown) return ENOMEM;
        d->dirs = grown;
        d->cap = cap;
    }
    if (!(copy = strndup(dir, len))) return ENOMEM;
    d->dirs[d->count++] = copy;
    return 0;
}

/* Length of rel's folder part ("a/b" of "a/b/c"; 0 for "c"). */
static size_t parent_len(const char *rel, size_t len)
{
    while (len > 0 && rel[len - 1] != '/') len--;
    return len ? len - 1 : 0;
}

/* The folder group [start, end) of remove_many done: prune it when empty,
 * mark what changed dirty. */
static int remove_group_done(int rootfd, const char *dir, size_t dlen, int prune_empty,
                             struct dirty_dirs *dirty)
{
    if (prune_empty && dlen > 0) {
        size_t glen = parent_len(dir, dlen);
        char *gdir = strndup(dir, glen), *base;
        int gfd = -1, err;
        if (!gdir) return ENOMEM;
        base = strndup(dir + (glen ? glen + 1 : 0), dlen - (glen ? glen + 1 : 0));
        if (!base) {
            free(gdir);
            return ENOMEM;
        }
        err = open_below(rootfd, gdir, &gfd);
        if (err == 0 && unlinkat(gfd, base, AT_REMOVEDIR) == 0) {
            close(gfd);
            free(base);
            free(gdir);
            return dirty_add(dirty, dir, glen);
        }
        if (gfd >= 0) close(gfd);
        free(base);
        free(gdir);
        /* not empty (or not ours to remove): the folder itself changed */
    }
    return dirty_add(dirty, dir, dlen);
}

int cm_fileio_remove_many(const char *root, char *const *rel, size_t n, int prune_empty,
                          unsigned char *ok, struct cm_result *res)
{
    struct dirty_dirs dirty = {NULL, 0, 0};
    int rootfd, dirfd = -1, dir_err = 0, failed = 0, err;
    const char *dir = NULL;
    size_t dlen = 0, i;

    if (ok) memset(ok, 0, n);
    rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) return fail_errno(res, errno, "remove below", root);
    for (i = 0; i < n; i++) {
        size_t len = strlen(rel[i]), plen = parent_len(rel[i], len);
        const char *base = rel[i] + (plen ? plen + 1 : 0);
        if (!dir || plen != dlen || memcmp(rel[i], dir, plen) != 0) {
            if (dirfd >= 0) {
                close(dirfd);
                dirfd = -1;
                if ((err = remove_group_done(rootfd, dir, dlen, prune_empty, &dirty)) != 0) goto fail_err;
            }
            dir = rel[i];
            dlen = plen;
            {
                char *d = strndup(rel[i], plen);
                if (!d) { err = ENOMEM; goto fail_err; }
                dir_err = open_below(rootfd, d, &dirfd);
                free(d);
            }
        }
        if (dir_err == ENOENT) { /* its folder is gone: so is it */
            if (ok) ok[i] = 2;
            continue;
        }
        if (dir_err != 0) {
            if (!failed++)
                cm_fail(res, cm_errno_name(dir_err), "remove %s/%s: %s%s", root, rel[i], strerror(dir_err),
                        dir_err == ELOOP || dir_err == ENOTDIR ? " (a symbolic link or file among its folders)" : "");
            continue;
        }
        {
            struct cm_result fres;
            int fp = cm_failpoint_before("file.remove", rel[i], &fres), uerr;
            if (fp < 0) { /* an injected failure: this file stays, the others go on */
                if (!failed++) *res = fres;
                continue;
            }
            uerr = unlinkat(dirfd, base, 0) == 0 ? 0 : errno;
            cm_failpoint_after("file.remove", fp);
            if (uerr == 0) {
                if (ok) ok[i] = 1;
            } else if (uerr == ENOENT) {
                if (ok) ok[i] = 2;
            } else if (!failed++) {
                fail_errno(res, uerr, "remove", rel[i]);
            }
        }
    }
    if (dirfd >= 0) {
        close(dirfd);
        dirfd = -1;
        if ((err = remove_group_done(rootfd, dir, dlen, prune_empty, &dirty)) != 0) goto fail_err;
    }
    for (i = 0; i < dirty.count; i++) {
        int fd;
        if (open_below(rootfd, dirty.dirs[i], &fd) != 0) continue; /* gone since: nothing to sync */
        if (fsync(fd) != 0 && errno != EINVAL && !failed++) fail_errno(res, errno, "fsync directory", dirty.dirs[i]);
        close(fd);
    }
    goto out;
fail_err:
    if (!failed++) fail_errno(res, err, "remove below", root);
out:
    if (dirfd >= 0) close(dirfd);
    close(rootfd);
    cm_fileio_paths_free(dirty.dirs, dirty.count);
    return failed ? CM_ERR : CM_OK;
}
