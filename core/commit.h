/* commit.h - the file storage's journal commit as one C job.
 *
 * lua/certmaint/storage/file.lua commits a set of values through a journal
 * under <root>/journal/<txn>/ (see its commit section).  This unit performs
 * the same steps, in the same order, with the same fsyncs and modes, so that
 * they can run on a worker thread (loop/work.h) instead of the loop thread:
 *
 *   CM_COMMIT_STAGE   mkdir -p the transaction folder (dir_mode); for each
 *                     put i (one step each): write_atomic <txn>/<i> with its
 *                     mode.  A failure removes the folder (nothing changed).
 *   (the caller checks its fence here: nothing is committed yet)
 *   CM_COMMIT_APPLY   one step: write_atomic <txn>/manifest.json 0600, the
 *                     commit point (a failure removes the folder).  Then
 *                     file.lua's apply: per put (one step each) refuse a
 *                     symbolic link on the way, mkdir -p its parent, rename
 *                     it into place (ENOENT: moved already); one step: fsync
 *                     each target directory; per delete (one step each)
 *                     refuse a link above it, remove it (a tree too); one
 *                     step: remove the manifest (fsyncing the folder), then
 *                     the folder.  A failure after the commit point leaves
 *                     what recover() finishes.
 *   CM_COMMIT_WRITE   a plain store: per put, mkdir -p its parent and
 *                     write_atomic it (no journal, no steps).
 *
 * Crash injection (specs): with crash_after >= 0, the job stops without any
 * clean-up before the step that would exceed crash_after steps done in all
 * phases so far (crashed = 1, code "crash"), leaving exactly what a process
 * killed there leaves; file.lua then raises "injected crash" as its own
 * injector does.
 *
 * Named failpoints (failpoint.h): each step passes its point first:
 * commit.stage, commit.manifest, commit.apply.rename, commit.apply.fsync,
 * commit.apply.delete, commit.cleanup.  An injected ENOSPC/EIO fails the
 * step as the real error would (before the commit point the transaction
 * folder goes, after it recover() finishes).
 *
 * A job touches nothing but its own struct and the file system, so it may
 * run on any thread; one job, one thread at a time.
 */
#ifndef CM_COMMIT_H
#define CM_COMMIT_H

#include <stddef.h>
#include <sys/types.h>

#include "result.h"

enum cm_commit_phase { CM_COMMIT_STAGE = 1, CM_COMMIT_APPLY, CM_COMMIT_WRITE };

struct cm_commit_put {
    char *key;      /* storage key, "certificates/x/x.crt" */
    char *data;
    size_t len;
    mode_t mode;
};

struct cm_commit {
    char *root;                 /* the storage root, no trailing '/' */
    char *txn;                  /* transaction id: the folder is <root>/journal/<txn> */
    mode_t dir_mode;
    struct cm_commit_put *puts; /* in the manifest's order: put i is staged as "<i>" */
    size_t nput;
    char **deletes;
    size_t ndelete;
    char *manifest;             /* the manifest's bytes (set before CM_COMMIT_APPLY) */
    size_t manifest_len;
    long crash_after;           /* -1: no injection */
    long steps;                 /* steps done so far, over all phases */
    const char *fp_name;        /* the failpoint of the step running (failpoint.h) */
    int fp_after;               /* 1: crash once that step is done (crash-after) */
    /* the outcome of the last phase */
    int committed;              /* the manifest was written (the commit point passed) */
    int crashed;                /* stopped by the injector */
    const char *failed_step;    /* "mkdir", "stage", "manifest", "rename", "fsync", "delete",
                                   "cleanup", "write"; NULL on success */
    char failed_path[512];      /* the key (or path) of the failed step */
    struct cm_result res;       /* message: "<op> <txn|key>: <step> <key>: <why>" */
};

/* Zero c (crash_after = -1); the caller fills the inputs with malloc'ed
 * copies that cm_commit_free releases. */
void cm_commit_init(struct cm_commit *c);

/* Run one phase; CM_OK or CM_ERR with the outcome fields and res filled. */
int cm_commit_run(struct cm_commit *c, enum cm_commit_phase phase);

/* Free the inputs (not c itself). */
void cm_commit_free(struct cm_commit *c);

#endif
