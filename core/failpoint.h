/* failpoint.h - named fault injection points (CERTMAINT_FAILPOINTS).
 *
 * Every storage mutation, lock operation and network step passes a named
 * point.  Normally a point costs one flag check.  With
 *
 *   CERTMAINT_FAILPOINTS=name=action[@N][,name=action[@N]...]
 *
 * the named point does `action` at its N-th hit (default 1; each point
 * counts its own hits, over all threads), once:
 *
 *   crash-before  the process is killed (SIGKILL) before the step runs
 *   crash-after   the step runs, then the process is killed
 *   enospc, eio   the step does not run and fails as a full disk / an I/O
 *                 error would be reported (code "ENOSPC" / "EIO")
 *   sleep:MS      the step runs MS milliseconds late
 *
 * The names are declared in one table (failpoint.c); `certmaint
 * --failpoints` prints them, one a line with a short description.  A
 * triggered point says so on stderr first (event=failpoint_triggered), so a
 * test can tell its case was exercised.  CERTMAINT_FAILPOINTS_TRACE=1 logs
 * every hit (event=failpoint_hit name= hit= what=<path or key>), so a test
 * can aim @N at one particular step (the certificate's commit, say).
 */
#ifndef CM_FAILPOINT_H
#define CM_FAILPOINT_H

#include <stddef.h>

#include "result.h"

enum cm_failpoint_action {
    CM_FP_NONE = 0,
    CM_FP_CRASH_BEFORE,
    CM_FP_CRASH_AFTER,
    CM_FP_ENOSPC,
    CM_FP_EIO,
    CM_FP_SLEEP,
};

struct cm_failpoint_info {
    const char *name;
    const char *description;
};

/* The declared points (NULL-terminated), in the order --failpoints prints. */
extern const struct cm_failpoint_info cm_failpoints[];

/* 1 when CERTMAINT_FAILPOINTS armed at least one point (the fast check). */
extern int cm_failpoints_active;

/* Parse spec (the variable's value; NULL or "" arms nothing).  Idempotent:
 * only the first call parses (call it before any thread exists).  CM_ERR
 * with res naming the bad entry (unknown point, unknown action). */
int cm_failpoint_init(const char *spec, struct cm_result *res);

/* Is name a declared point? */
int cm_failpoint_declared(const char *name);

/* Count a hit of name and return the action due now (CM_FP_NONE mostly);
 * *sleep_ms gets MS for CM_FP_SLEEP.  An undeclared name while active is a
 * programming error: reported and abort()ed. */
enum cm_failpoint_action cm_failpoint_hit(const char *name, long *sleep_ms);

/* Log the trigger, then raise SIGKILL: never returns. */
void cm_failpoint_crash(const char *name, enum cm_failpoint_action action);

/* Log that name triggered action (event=failpoint_triggered). */
void cm_failpoint_report(const char *name, enum cm_failpoint_action action);

/* The action's spelling in CERTMAINT_FAILPOINTS. */
const char *cm_failpoint_action_name(enum cm_failpoint_action action);

/* Before a step in C: handles crash-before (dies), sleep (sleeps), enospc/eio
 * (fills res: "<what>: injected ENOSPC (failpoint name)" and returns -1).
 * Returns 1 when the caller must call cm_failpoint_after after the step
 * (crash-after), 0 otherwise.  With no armed point: 0 at once. */
int cm_failpoint_before(const char *name, const char *what, struct cm_result *res);

/* After the step: state is what cm_failpoint_before returned (1: die). */
void cm_failpoint_after(const char *name, int state);

/* For main(): `certmaint --failpoints` prints the points (tab, then the
 * description) and *code = 0; a bad CERTMAINT_FAILPOINTS is said on stderr
 * and *code = 2.  Returns 1 when main should return *code, 0 to go on. */
int cm_failpoint_main(int argc, char **argv, int *code);

#endif
