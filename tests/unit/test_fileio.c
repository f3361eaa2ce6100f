/* test_fileio.c - crash-safe writes, modes, bounds, exclusive creation. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fileio.h"

static char dir[256];

/* out = a "/" b; the test's paths are short, so truncation is a test bug. */
static void join(char *out, size_t size, const char *a, const char *b)
{
    if (snprintf(out, size, "%s/%s", a, b) >= (int)size) abort();
}

static void path_in(char *out, size_t size, const char *name)
{
    join(out, size, dir, name);
}

/* The whole file, or NULL; *len receives its length. */
static char *slurp(const char *path, size_t *len)
{
    char *buf = NULL;
    struct cm_result res;
    if (cm_fileio_read_file(path, 1 << 20, &buf, len, &res) != CM_OK) return NULL;
    return buf;
}

static unsigned int perms_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return 0xffff;
    return (unsigned int)(st.st_mode & 07777);
}

/* Number of entries in dir whose name contains needle. */
static int count_entries(const char *in, const char *needle)
{
    DIR *d = opendir(in);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, needle)) n++;
    closedir(d);
    return n;
}

static void rm_rf(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

static void test_write_atomic_basic(void)
{
    char p[512];
    struct cm_result res;
    size_t len = 0;
    char *got;
    mode_t old_umask;

    path_in(p, sizeof p, "a.txt");
    CHECK(cm_fileio_write_atomic(p, "hello", 5, 0600, &res) == CM_OK);
    got = slurp(p, &len);
    CHECK(got && len == 5 && memcmp(got, "hello", 5) == 0);
    free(got);
    CHECK(perms_of(p) == 0600);

    /* The requested mode wins over the umask, both ways. */
    old_umask = umask(077);
    CHECK(cm_fileio_write_atomic(p, "world!", 6, 0644, &res) == CM_OK);
    CHECK(perms_of(p) == 0644);
    umask(0);
    CHECK(cm_fileio_write_atomic(p, "again", 5, 0600, &res) == CM_OK);
    CHECK(perms_of(p) == 0600);
    umask(old_umask);
    got = slurp(p, &len);
    CHECK(got && len == 5 && memcmp(got, "again", 5) == 0);
    free(got);

    /* Binary data with NULs, and an empty file. */
    {
        unsigned char bin[256];
        int i;
        for (i = 0; i < 256; i++) bin[i] = (unsigned char)i;
        CHECK(cm_fileio_write_atomic(p, bin, sizeof bin, 0600, &res) == CM_OK);
        got = slurp(p, &len);
        CHECK(got && len == 256 && memcmp(got, bin, 256) == 0);
        free(got);
        CHECK(cm_fileio_write_atomic(p, "", 0, 0600, &res) == CM_OK);
        got = slurp(p, &len);
        CHECK(got && len == 0 && got[0] == '\0');
        free(got);
    }
    CHECK(count_entries(dir, ".tmp-") == 0);
}

static void test_write_atomic_failures(void)
{
    char p[512], sub[512];
    struct cm_result res;

    /* Missing directory: "<op> <path>: <strerror>", code = errno name. */
    path_in(p, sizeof p, "missing/a.txt");
    CHECK(cm_fileio_write_atomic(p, "x", 1, 0600, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(strstr(res.message, "missing/a.txt: No such file or directory") != NULL);

    /* A directory in the way: rename fails, the temp is cleaned up. */
    path_in(sub, sizeof sub, "adir");
    CHECK(mkdir(sub, 0700) == 0);
    join(p, sizeof p, sub, "inner");
    CHECK(mkdir(p, 0700) == 0);
    CHECK(cm_fileio_write_atomic(sub, "x", 1, 0600, &res) == CM_ERR);
    CHECK(strcmp(res.code, "EISDIR") == 0 || strcmp(res.code, "ENOTEMPTY") == 0 ||
          strcmp(res.code, "EEXIST") == 0);
    CHECK(count_entries(dir, ".tmp-") == 0);

    /* Paths that are not files. */
    CHECK(cm_fileio_write_atomic("", "x", 1, 0600, &res) == CM_ERR);
    CHECK_STR(res.code, "EINVAL");
    snprintf(p, sizeof p, "%s/", dir);
    CHECK(cm_fileio_write_atomic(p, "x", 1, 0600, &res) == CM_ERR);
    CHECK_STR(res.code, "EISDIR");
}

/* The fault point: die exactly where a crash hurts most. */
static void die_before_rename(const char *stage, const char *path, const char *tmp_path)
{
    (void)path;
    (void)tmp_path;
    if (strcmp(stage, "before_rename") == 0) _exit(42);
}

static void test_crash_before_rename(void)
{
    char p[512], tmp_name[512] = "";
    struct cm_result res;
    const char *old_data = "-----BEGIN OLD-----\nold contents\n-----END OLD-----\n";
    char new_data[8192];
    size_t len = 0;
    char *got;
    pid_t pid;
    int status = 0;
    DIR *d;
    struct dirent *e;

    memset(new_data, 'N', sizeof new_data);
    path_in(p, sizeof p, "crash.crt");
    CHECK(cm_fileio_write_atomic(p, old_data, strlen(old_data), 0600, &res) == CM_OK);

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        cm_fileio_test_hook = die_before_rename;
        cm_fileio_write_atomic(p, new_data, sizeof new_data, 0600, &res);
        _exit(0); /* not reached: the hook exits with 42 */
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42);

    /* The old file is intact and byte-identical. */
    got = slurp(p, &len);
    CHECK(got && len == strlen(old_data) && memcmp(got, old_data, len) == 0);
    free(got);
    CHECK(perms_of(p) == 0600);

    /* The crash left its temp file: hidden, named after the target, holding
     * the complete new data (it was written and fsynced before the rename). */
    CHECK(count_entries(dir, ".crash.crt.tmp-") == 1);
    d = opendir(dir);
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".crash.crt.tmp-") == e->d_name)
            snprintf(tmp_name, sizeof tmp_name, "%s/%s", dir, e->d_name);
    if (d) closedir(d);
    got = slurp(tmp_name, &len);
    CHECK(got && len == sizeof new_data && memcmp(got, new_data, len) == 0);
    free(got);
    CHECK(perms_of(tmp_name) == 0600);
    unlink(tmp_name);

    /* Life goes on: the next write works. */
    CHECK(cm_fileio_write_atomic(p, new_data, sizeof new_data, 0600, &res) == CM_OK);
    got = slurp(p, &len);
    CHECK(got && len == sizeof new_data);
    free(got);
}

static void test_read_bounds(void)
{
    char p[512];
    struct cm_result res;
    char *buf = (char *)1;
    size_t len = 99;

    path_in(p, sizeof p, "ten.txt");
    CHECK(cm_fileio_write_atomic(p, "0123456789", 10, 0600, &res) == CM_OK);
    CHECK(cm_fileio_read_file(p, 10, &buf, &len, &res) == CM_OK);
    CHECK(buf && len == 10 && memcmp(buf, "0123456789", 10) == 0 && buf[10] == '\0');
    free(buf);
    CHECK(cm_fileio_read_file(p, 9, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(buf == NULL && len == 0);
    CHECK(cm_fileio_read_file(p, 0, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");

    /* Larger than the initial buffer, within the bound. */
    {
        static char big[100000];
        memset(big, 'b', sizeof big);
        CHECK(cm_fileio_write_atomic(p, big, sizeof big, 0600, &res) == CM_OK);
        CHECK(cm_fileio_read_file(p, sizeof big, &buf, &len, &res) == CM_OK);
        CHECK(len == sizeof big && memcmp(buf, big, len) == 0);
        free(buf);
        CHECK(cm_fileio_read_file(p, sizeof big - 1, &buf, &len, &res) == CM_ERR);
        CHECK_STR(res.code, "toobig");
    }

    CHECK(cm_fileio_read_file(dir, 100, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "EISDIR");
    path_in(p, sizeof p, "nope.txt");
    CHECK(cm_fileio_read_file(p, 100, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(strstr(res.message, "read ") == res.message);
    CHECK(strstr(res.message, "nope.txt: No such file or directory") != NULL);

    /* A FIFO is refused without blocking. */
    path_in(p, sizeof p, "fifo");
    CHECK(mkfifo(p, 0600) == 0);
    CHECK(cm_fileio_read_file(p, 100, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "EISDIR");
    unlink(p);
}

static void test_create_exclusive(void)
{
    char p[512];
    struct cm_result res;
    size_t len = 0;
    char *got;

    path_in(p, sizeof p, "lock.lock");
    CHECK(cm_fileio_create_exclusive(p, "{\"owner\":\"a\"}", 13, 0644, &res) == CM_OK);
    CHECK(perms_of(p) == 0644);
    got = slurp(p, &len);
    CHECK(got && len == 13 && memcmp(got, "{\"owner\":\"a\"}", 13) == 0);
    free(got);
    CHECK(cm_fileio_create_exclusive(p, "other", 5, 0644, &res) == CM_ERR);
    CHECK_STR(res.code, "EEXIST");
    got = slurp(p, &len);
    CHECK(got && len == 13);
    free(got);
    CHECK(count_entries(dir, ".tmp-") == 0);

    /* Compare-and-swap take-over. */
    CHECK(cm_fileio_replace_if_unchanged(p, "wrong", 5, "new", 3, 0644, &res) == CM_ERR);
    CHECK_STR(res.code, "changed");
    got = slurp(p, &len);
    CHECK(got && len == 13 && memcmp(got, "{\"owner\":\"a\"}", 13) == 0);
    free(got);
    CHECK(cm_fileio_replace_if_unchanged(p, "{\"owner\":\"a\"}", 13, "{\"owner\":\"b\"}", 13, 0644,
                                         &res) == CM_OK);
    got = slurp(p, &len);
    CHECK(got && len == 13 && memcmp(got, "{\"owner\":\"b\"}", 13) == 0);
    free(got);
    CHECK(count_entries(dir, ".stale-") == 0);
    CHECK(cm_fileio_remove(p, &res) == CM_OK);
    CHECK(cm_fileio_replace_if_unchanged(p, "x", 1, "y", 1, 0644, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(cm_fileio_remove(p, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
}

static void test_mkdir_stat(void)
{
    char p[512], f[512];
    struct cm_result res;
    struct cm_file_stat st;
    mode_t old_umask = umask(022);

    path_in(p, sizeof p, "x/y/z");
    CHECK(cm_fileio_mkdir_p(p, 0700, &res) == CM_OK);
    CHECK(perms_of(p) == 0700);
    path_in(f, sizeof f, "x/y");
    CHECK(perms_of(f) == 0700);
    CHECK(cm_fileio_mkdir_p(p, 0700, &res) == CM_OK); /* exists: fine */
    join(f, sizeof f, p, "file");
    CHECK(cm_fileio_write_atomic(f, "abc", 3, 0600, &res) == CM_OK);
    join(p, sizeof p, f, "below");
    CHECK(cm_fileio_mkdir_p(p, 0700, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOTDIR");
    umask(old_umask);

    CHECK(cm_fileio_stat(f, &st, &res) == CM_OK);
    CHECK(st.type == CM_FILE_REGULAR && st.size == 3 && st.perms == 0600 && st.modified > 0);
    path_in(p, sizeof p, "x/y/z");
    CHECK(cm_fileio_stat(p, &st, &res) == CM_OK);
    CHECK(st.type == CM_FILE_DIRECTORY);
    CHECK(cm_fileio_rmdir(p, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOTEMPTY");
    CHECK(cm_fileio_remove(f, &res) == CM_OK);
    CHECK(cm_fileio_rmdir(p, &res) == CM_OK);
    CHECK(cm_fileio_stat(p, &st, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
}

/* One buffer across many reads: grows for a large file, is reused (not
 * reallocated) for the smaller ones after it, and stays valid on failures. */
static void test_read_into(void)
{
    char p[512], q[512];
    struct cm_result res;
    struct cm_fileio_buf buf = {NULL, 0};
    static char big[70000];
    size_t len = 99, cap;
    char *data;

    memset(big, 'z', sizeof big);
    path_in(p, sizeof p, "into-big");
    path_in(q, sizeof q, "into-small");
    CHECK(cm_fileio_write_atomic(p, big, sizeof big, 0600, &res) == CM_OK);
    CHECK(cm_fileio_write_atomic(q, "abc", 3, 0600, &res) == CM_OK);

    CHECK(cm_fileio_read_into(q, 100, &buf, &len, &res) == CM_OK);
    CHECK(len == 3 && memcmp(buf.data, "abc", 4) == 0);
    CHECK(cm_fileio_read_into(p, sizeof big, &buf, &len, &res) == CM_OK);
    CHECK(len == sizeof big && memcmp(buf.data, big, len) == 0 && buf.data[len] == '\0');
    cap = buf.cap;
    data = buf.data;
    CHECK(cap >= sizeof big);
    CHECK(cm_fileio_read_into(q, 100, &buf, &len, &res) == CM_OK);
    CHECK(len == 3 && memcmp(buf.data, "abc", 4) == 0);
    CHECK(buf.data == data && buf.cap == cap); /* reused */

    CHECK(cm_fileio_read_into(p, 10, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(len == 0 && buf.data == data);
    CHECK(cm_fileio_read_into(dir, 10, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "EISDIR");
    path_in(p, sizeof p, "into-none");
    CHECK(cm_fileio_read_into(p, 10, &buf, &len, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");

    /* An empty file with a zero bound. */
    path_in(p, sizeof p, "into-empty");
    CHECK(cm_fileio_write_atomic(p, "", 0, 0600, &res) == CM_OK);
    CHECK(cm_fileio_read_into(p, 0, &buf, &len, &res) == CM_OK);
    CHECK(len == 0 && buf.data[0] == '\0');

    cm_fileio_buf_free(&buf);
    CHECK(buf.data == NULL && buf.cap == 0);
    cm_fileio_buf_free(&buf); /* twice is fine */
}

static void test_rename_fsync_dir(void)
{
    char p[512], q[512];
    struct cm_result res;
    size_t len = 0;
    char *got;

    path_in(p, sizeof p, "ren-from");
    path_in(q, sizeof q, "ren-to");
    CHECK(cm_fileio_write_atomic(p, "new", 3, 0600, &res) == CM_OK);
    CHECK(cm_fileio_write_atomic(q, "old", 3, 0644, &res) == CM_OK);
    CHECK(cm_fileio_rename(p, q, &res) == CM_OK);
    got = slurp(q, &len);
    CHECK(got && len == 3 && memcmp(got, "new", 3) == 0);
    free(got);
    CHECK(perms_of(q) == 0600);
    CHECK(cm_fileio_rename(p, q, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(strstr(res.message, "rename ") == res.message);
    CHECK(cm_fileio_fsync_dir(dir, &res) == CM_OK);
    CHECK(cm_fileio_fsync_dir(p, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
}

static void test_errno_names(void)
{
    CHECK_STR(cm_errno_name(ENOENT), "ENOENT");
    CHECK_STR(cm_errno_name(EACCES), "EACCES");
    CHECK_STR(cm_errno_name(EEXIST), "EEXIST");
    CHECK_STR(cm_errno_name(ENOSPC), "ENOSPC");
    CHECK_STR(cm_errno_name(99999), "errno99999");
}

/* cm_fileio_walk: every file below a folder, sorted bytewise (as the memory
 * backend sorts keys), side files and skip_top left out, symlinks listed and
 * never followed, depth and count bounded. */
static void put(const char *rel, const char *data)
{
    char path[512];
    struct cm_result res;
    path_in(path, sizeof path, rel);
    CHECK(cm_fileio_write_atomic(path, data, strlen(data), 0600, &res) == CM_OK);
}

static void test_walk(void)
{
    char root[512], path[512], target[512];
    char **paths = NULL;
    size_t n = 0, i;
    struct cm_result res;
    path_in(root, sizeof root, "walk");
    CHECK(cm_fileio_mkdir_p(root, 0700, &res) == CM_OK);
    path_in(path, sizeof path, "walk/a/b");
    CHECK(cm_fileio_mkdir_p(path, 0700, &res) == CM_OK);
    path_in(path, sizeof path, "walk/a-b");
    CHECK(cm_fileio_mkdir_p(path, 0700, &res) == CM_OK);
    path_in(path, sizeof path, "walk/journal/t1");
    CHECK(cm_fileio_mkdir_p(path, 0700, &res) == CM_OK);
    put("walk/a/b/x.crt", "1");
    put("walk/a/y", "2");
    put("walk/a-b/z", "3");
    put("walk/journal/t1/0", "4");
    put("walk/a/.y.tmp-0123abcd", "side");
    put("walk/a/.y.stale-ff", "side");
    put("walk/a/.y.tmp-notes", "kept: not a hex suffix");
    /* a symlink to a folder is a file here, never followed */
    path_in(target, sizeof target, "walk/a");
    path_in(path, sizeof path, "walk/link");
    CHECK(symlink(target, path) == 0);

    CHECK(cm_fileio_walk(root, "journal", 64, 1000, &paths, &n, &res) == CM_OK);
    CHECK(n == 5);
    if (n == 5) {
        CHECK_STR(paths[0], "a-b/z"); /* '-' sorts before '/' */
        CHECK_STR(paths[1], "a/.y.tmp-notes");
        CHECK_STR(paths[2], "a/b/x.crt");
        CHECK_STR(paths[3], "a/y");
        CHECK_STR(paths[4], "link");
    }
    for (i = 0; i < n; i++) CHECK(strncmp(paths[i], "journal", 7) != 0);
    cm_fileio_paths_free(paths, n);

    /* without skip_top the journal shows */
    CHECK(cm_fileio_walk(root, NULL, 64, 1000, &paths, &n, &res) == CM_OK);
    CHECK(n == 6);
    if (n == 6) CHECK_STR(paths[5], "link"); /* "journal/t1/0" sorts before "link" */
    if (n == 6) CHECK_STR(paths[4], "journal/t1/0");
    cm_fileio_paths_free(paths, n);

    /* only the side files: what a crash left, anywhere but the skipped top entry */
    put("walk/journal/.t.tmp-00", "side, in the journal");
    CHECK(cm_fileio_walk_side_files(root, "journal", 64, 1000, &paths, &n, &res) == CM_OK);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(paths[0], "a/.y.stale-ff");
        CHECK_STR(paths[1], "a/.y.tmp-0123abcd");
    }
    cm_fileio_paths_free(paths, n);

    /* bounds: depth and count, nothing returned */
    CHECK(cm_fileio_walk(root, "journal", 1, 1000, &paths, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(paths == NULL && n == 0);
    CHECK(cm_fileio_walk(root, "journal", 64, 3, &paths, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "toobig");
    CHECK(paths == NULL && n == 0);

    /* a missing folder names itself and its errno */
    path_in(path, sizeof path, "walk/none");
    CHECK(cm_fileio_walk(path, NULL, 64, 1000, &paths, &n, &res) == CM_ERR);
    CHECK_STR(res.code, "ENOENT");
    CHECK(strstr(res.message, "walk/none") != NULL);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cm-test-fileio-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_write_atomic_basic();
    test_write_atomic_failures();
    test_crash_before_rename();
    test_read_bounds();
    test_create_exclusive();
    test_mkdir_stat();
    test_read_into();
    test_rename_fsync_dir();
    test_errno_names();
    test_walk();
    rm_rf(dir);
    return CHECK_DONE();
}
