/* fileio.h - crash-safe file primitives for the storage backends.
 *
 * Every write that replaces data goes through cm_fileio_write_atomic: a temp
 * file in the same directory, written in full, fsynced, renamed over the
 * target, then the directory fsynced.  A crash at any point leaves either the
 * old file or the new one, never a mix.  Lock files are made with
 * cm_fileio_create_exclusive, which never shows a half-written file either.
 *
 * Failures fill struct cm_result with message "<op> <path>: <strerror>" and
 * code = the errno name ("ENOENT", "EACCES", "EEXIST", ...), or "toobig" for a
 * file over the caller's read bound.
 */
#ifndef CM_FILEIO_H
#define CM_FILEIO_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

#include "result.h"

/* Default bound for cm_fileio_read_file callers that have no better one. */
#define CM_FILEIO_READ_MAX_DEFAULT (1024 * 1024)

/* Test-only fault point: when not NULL, called by cm_fileio_write_atomic with
 * stage "before_rename" after the temp file is written and fsynced and right
 * before it is renamed over path (tmp_path is the temp file).  Tests set it in
 * a forked child that _exit()s there to simulate a crash; production code
 * never sets it. */
extern void (*cm_fileio_test_hook)(const char *stage, const char *path, const char *tmp_path);

/* The symbolic name of an errno value ("ENOENT"); "errno<N>" when unknown.
 * Returns a static string. */
const char *cm_errno_name(int err);

/* Atomically replace (or create) path with len bytes of data and permission
 * bits mode (e.g. 0600): the temp file is opened O_EXCL with mode and fchmod'ed
 * to it, so the umask cannot widen or narrow it and the data is never readable
 * with other permissions.  The parent directory must exist.  On failure the
 * temp file is removed and any old file at path is untouched; returns CM_ERR. */
int cm_fileio_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                           struct cm_result *res);

/* Read a whole regular file of at most max bytes.  On success *out is a
 * malloc'ed buffer the caller frees (NUL-terminated for convenience, the NUL
 * not counted in *out_len).  Fails with code "toobig" when the file is larger
 * than max, "EISDIR" for a directory or other non-regular file, or the errno
 * name; *out is then NULL. */
int cm_fileio_read_file(const char *path, size_t max, char **out, size_t *out_len,
                        struct cm_result *res);

/* A read buffer reused across many reads (cm_fileio_read_into): start it
 * zeroed ({NULL, 0}); it grows to the largest file read; release it with
 * cm_fileio_buf_free. */
struct cm_fileio_buf {
    char *data; /* malloc'ed, cap + 1 bytes (room for a NUL), or NULL */
    size_t cap;
};

/* Read a whole regular file of at most max bytes into buf, growing it when
 * needed (one read(2) for a file whose size fstat told, no allocation once
 * buf is large enough): the bulk path of the start-up load.  On success
 * buf->data holds *out_len bytes followed by a NUL.  Fails as
 * cm_fileio_read_file does ("toobig", "EISDIR", "ENOMEM", errno names); buf
 * stays valid (and owned by the caller) either way. */
int cm_fileio_read_into(const char *path, size_t max, struct cm_fileio_buf *buf, size_t *out_len,
                        struct cm_result *res);

/* cm_fileio_read_into on rel, resolved from the directory open at dirfd
 * (openat(2); AT_FDCWD for the working directory): a bulk reader keeps its
 * folder open so each read walks one or two path components, not the whole
 * path.  path is the file's full name, for error messages only. */
int cm_fileio_read_into_at(int dirfd, const char *rel, const char *path, size_t max,
                           struct cm_fileio_buf *buf, size_t *out_len, struct cm_result *res);

/* Free buf's memory and zero it; safe to call twice. */
void cm_fileio_buf_free(struct cm_fileio_buf *buf);

/* A bulk reader: its read buffer and one folder held open, so that reads of
 * many files in the same folder (or `depth` levels below it) walk the last
 * components from it instead of the whole path (path lookups were a tenth of
 * the start-up load at 100,000 certificates; the staples' folder holds 100k
 * entries).  Start it with cm_fileio_reader_init; one thread uses it at a
 * time; release it with cm_fileio_reader_free. */
struct cm_fileio_reader {
    struct cm_fileio_buf buf;
    int dirfd;      /* -1: none open */
    size_t dir_len; /* bytes of dir (a path prefix ending in '/') */
    char dir[PATH_MAX];
};

void cm_fileio_reader_init(struct cm_fileio_reader *rd);
void cm_fileio_reader_free(struct cm_fileio_reader *rd);

/* The directory fd to resolve path from and, in *rel, the rest of path:
 * the reader's folder when path lies `depth` (1 or 2) components below it
 * (opening that folder when it is another), else AT_FDCWD and path itself
 * (any failure only costs the shortcut). */
int cm_fileio_reader_dir(struct cm_fileio_reader *rd, const char *path, unsigned depth, const char **rel);

/* cm_fileio_read_into of path through the reader (its folder `depth` levels
 * up held open); the bytes are rd->buf.data, valid until its next read. */
int cm_fileio_reader_read(struct cm_fileio_reader *rd, const char *path, unsigned depth, size_t max,
                          size_t *out_len, struct cm_result *res);

/* rename(2) from over to (same file system), without syncing: the caller
 * fsyncs the directories it touched with cm_fileio_fsync_dir once it has done
 * all its renames (the storage journal's apply step). */
int cm_fileio_rename(const char *from, const char *to, struct cm_result *res);

/* fsync the directory path, so renames, links and unlinks in it are durable.
 * A file system that cannot sync directories (EINVAL) is not an error. */
int cm_fileio_fsync_dir(const char *path, struct cm_result *res);

/* Create path holding data with permission bits mode, failing with code
 * "EEXIST" if anything already exists there.  The content is written to a
 * temp file first and link()ed into place, so no reader ever sees the file
 * empty or half-written (a lock file that is readable is complete); on file
 * systems without hard links it falls back to O_CREAT|O_EXCL.  The directory
 * is fsynced.  Returns CM_ERR on failure, leaving nothing behind. */
int cm_fileio_create_exclusive(const char *path, const void *data, size_t len, mode_t mode,
                               struct cm_result *res);

/* Take a stale file away only if it still holds exactly `expected`: path is
 * renamed aside (atomic; of several racing callers only one gets it), the
 * moved file is compared with expected, and if it matches it is deleted and
 * data is created exclusively at path.  If it does not match (another
 * instance replaced it meanwhile) it is linked back and the call fails with
 * code "changed".  Code "ENOENT": nothing was there any more; "EEXIST":
 * after removal another caller created the file first.  This is the
 * compare-and-swap the lock take-over needs: a plain remove + create lets
 * two takers remove each other's fresh locks. */
int cm_fileio_replace_if_unchanged(const char *path, const void *expected, size_t expected_len,
                                   const void *data, size_t len, mode_t mode,
                                   struct cm_result *res);

/* Create directory path and any missing parents; each directory created gets
 * exactly mode (chmod'ed, so the umask cannot change it).  Existing
 * directories are left as they are.  Fails with "ENOTDIR" if a component is
 * not a directory. */
int cm_fileio_mkdir_p(const char *path, mode_t mode, struct cm_result *res);

enum cm_file_type { CM_FILE_REGULAR, CM_FILE_DIRECTORY, CM_FILE_OTHER };

struct cm_file_stat {
    enum cm_file_type type;
    long long size;      /* bytes */
    double modified;     /* Unix seconds, with the file system's precision */
    unsigned int perms;  /* permission bits, e.g. 0600 */
};

/* stat(2) path (following symbolic links) into *st. */
int cm_fileio_stat(const char *path, struct cm_file_stat *st, struct cm_result *res);

/* Remove the file path (not a directory) and fsync its directory, so a
 * released lock stays released after a crash. */
int cm_fileio_remove(const char *path, struct cm_result *res);

/* Remove the empty directory path. */
int cm_fileio_rmdir(const char *path, struct cm_result *res);

/* The host name (gethostname), truncated to fit; "unknown" if it fails. */
void cm_fileio_hostname(char *out, size_t size);
/* Does process `pid` exist on this host (kill(pid, 0): alive, or EPERM)?
 * 0 for a pid that cannot be one (<= 0, too large). */
int cm_fileio_pid_alive(long pid);

/* Every file below dir (recursively, not following symbolic links, which are
 * listed as files), as paths relative to dir ("a/b.crt"), sorted bytewise,
 * into a malloc'ed array of malloc'ed strings (*paths, *count; free with
 * cm_fileio_paths_free).  Skipped: our own temp and aside files (".*.tmp-<hex>",
 * ".*.stale-<hex>", which a crash can leave), and at the top level the entry
 * named skip_top (NULL: none).  Deeper than max_depth levels, or more than
 * max_files files, fails with "toobig"; an unreadable directory with its errno
 * name; on failure nothing is returned. */
int cm_fileio_walk(const char *dir, const char *skip_top, unsigned max_depth, size_t max_files,
                   char ***paths, size_t *count, struct cm_result *res);

/* The same walk listing only those temp and aside files (what a crash left:
 * the clean pass removes the old ones), in one pass that makes no string for
 * any other file. */
int cm_fileio_walk_side_files(const char *dir, const char *skip_top, unsigned max_depth, size_t max_files,
                              char ***paths, size_t *count, struct cm_result *res);

/* The clean pass's one walk (cm_fileio_walk_clean): the certificate files
 * (names ending in ".crt" below the top-level folder crt_top) and, anywhere
 * below the root, the temp and aside files, except inside the site folders
 * (<crt_top>/<issuer>/<site>), which are listed in sites unread: the caller
 * reads them on its threads (100k small folders are most of a walk's time).
 * All sorted, relative to the walked folder. */
struct cm_fileio_clean_walk {
    char **crts;
    size_t crt_count;
    char **side;
    size_t side_count;
    char **sites;
    size_t site_count;
};

/* One walk of dir (as cm_fileio_walk: links not followed, skip_top skipped)
 * filling *out.  Free with cm_fileio_clean_walk_free (also after failure). */
int cm_fileio_walk_clean(const char *dir, const char *skip_top, const char *crt_top, unsigned max_depth,
                         size_t max_files, struct cm_fileio_clean_walk *out, struct cm_result *res);
void cm_fileio_clean_walk_free(struct cm_fileio_clean_walk *cw);

/* 1 for the name of one of our temp or aside files (".*.tmp-<hex>",
 * ".*.stale-<hex>": what a crash leaves), else 0. */
int cm_fileio_is_side_file(const char *name);

/* Remove the files rel[0..n) below root, each resolved without following a
 * symbolic link on the way (a link among the folders: "ELOOP", that file
 * kept); a missing one is no failure.  With prune_empty, a folder left
 * empty by the removal (not root) is removed too.  Each folder changed is
 * fsynced once, at the end, not once a file (the clean pass deletes
 * thousands).  ok[i] (may be NULL) is 1 for each file removed, 2 for one
 * that was not there, 0 for one that could not be removed; the first
 * failure of a file goes into *res and the others go on: CM_OK only when
 * all were removed.  rel must be sorted (so a folder's files are together). */
int cm_fileio_remove_many(const char *root, char *const *rel, size_t n, int prune_empty,
                          unsigned char *ok, struct cm_result *res);

/* Free what cm_fileio_walk returned; NULL is fine. */
void cm_fileio_paths_free(char **paths, size_t count);

#endif
