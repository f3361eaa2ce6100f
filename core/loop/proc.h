/* proc.h - child processes that never block the loop.
 *
 * posix_spawn with pipes for stdout/stderr and a socket pair for stdin (so a
 * child that stops reading cannot raise SIGPIPE in us: we write with
 * MSG_NOSIGNAL).  Children are reaped through a pidfd, or SIGCHLD on a
 * signalfd where pidfd_open is missing, and only our own pids are waited
 * for (never waitpid(-1): os.execute and io.popen keep working).  Each child
 * runs in its own process group, with default signal dispositions and an
 * empty signal mask, so a timeout can stop everything it started.
 */
#ifndef CM_PROC_H
#define CM_PROC_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "result.h"

#define CM_PROC_MAX_OUTPUT_LIMIT ((size_t)64 * 1024 * 1024)

struct cm_exec_req {
    const char *const *argv;    /* argv[0] is looked up in PATH unless it has a '/' */
    size_t argc;
    const char *const *envp;    /* "K=V" entries, envc of them; NULL: inherit ours */
    size_t envc;
    const char *cwd;            /* NULL: ours */
    const char *stdin_data;     /* NULL: /dev/null */
    size_t stdin_len;
    double timeout;             /* seconds (default 120); then SIGTERM */
    double kill_grace;          /* seconds after SIGTERM before SIGKILL (default 2) */
    size_t max_output;          /* bytes kept of stdout and of stderr each (default 65536);
                                   more is read and dropped, and *_truncated set */
};

/* Fill req with the defaults (no argv). */
void cm_exec_req_init(struct cm_exec_req *req);

/* Start a child; *id receives its id.  When it has exited (and its output
 * is drained) a CM_EVENT_EXEC with that id is queued: exited/exit_status or
 * term_signal, out/err; after a timeout also failed=1, res.code "timeout".
 * CM_ERR: "invalid" (bad request), "ENOENT"/"EACCES" (cannot execute argv[0]),
 * "spawn" (other spawn failures), "ENOMEM". */
int cm_proc_exec(struct cm_loop *loop, const struct cm_exec_req *req, uint64_t *id,
                 struct cm_result *res);

/* Kill a running child (SIGKILL to its process group) without an event;
 * it is reaped in the background.  1 if it was running, 0 otherwise. */
int cm_proc_cancel(struct cm_loop *loop, uint64_t id);

/* Tests: 0 forces the SIGCHLD path even where pidfd_open works; 1 (default)
 * prefers pidfds.  Affects children spawned afterwards. */
void cm_proc_use_pidfd(int enabled);

#endif
