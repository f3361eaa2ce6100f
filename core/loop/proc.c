/* proc.c - non-blocking exec: posix_spawn, pipes, pidfd, deadlines.
 *
 * A child is finished when it has been reaped: its pipes are then drained
 * without blocking (everything it wrote before exiting is already in them)
 * and closed, so a grandchild that keeps the pipes open cannot hold the
 * result back.
 */
#include "proc.h"
#include "loop_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"

extern char **environ;

#define MAX_ARGS 4096
#define MAX_SECONDS (7 * 86400.0)

struct child {
    uint64_t id;
    pid_t pid;
    int pidfd;
    struct cm_watch *pw;
    int in_fd;
    struct cm_watch *inw;
    char *in_data;
    size_t in_len, in_off;
    int out_fd, err_fd;
    struct cm_watch *ow, *ew;
    struct cm_buf out, err;
    size_t max_output;
    int out_trunc, err_trunc;
    struct cm_itimer timer;
    double timeout, grace;
    int timed_out, term_sent, cancelled;
    char name[64];              /* argv[0], for messages */
    struct child *prev, *next;
};

struct cm_proc_state {
    struct child *list;
    size_t count;               /* children that will still report */
    struct cm_itimer poll;      /* SIGCHLD path: one scan after a fallback spawn */
};

static int use_pidfd = 1;

void cm_proc_use_pidfd(int enabled) { use_pidfd = enabled ? 1 : 0; }

static struct cm_proc_state *state(struct cm_loop *loop) { return *cm_loop_proc_slot(loop); }

void cm_exec_req_init(struct cm_exec_req *req)
{
    memset(req, 0, sizeof *req);
    req->timeout = 120;
    req->kill_grace = 2;
    req->max_output = 65536;
}

size_t cm_proc_count(struct cm_loop *loop) { return state(loop) ? state(loop)->count : 0; }

static void poll_fire(struct cm_loop *loop, struct cm_itimer *t)
{
    (void)t;
    cm_proc_on_sigchld(loop);
}

int cm_proc_init(struct cm_loop *loop, struct cm_result *res)
{
    struct cm_proc_state *st = calloc(1, sizeof *st);
    if (!st) return cm_fail(res, "ENOMEM", "out of memory");
    st->poll.fire = poll_fire;
    *cm_loop_proc_slot(loop) = st;
    return CM_OK;
}

/* --- fds ----------------------------------------------------------------- */

static void close_watched(struct cm_loop *loop, int *fd, struct cm_watch **w)
{
    cm_loop_watch_del(loop, *w); *w = NULL;
    if (*fd >= 0) { close(*fd); *fd = -1; }
}

static void close_stdin(struct cm_loop *loop, struct child *ch)
{
    close_watched(loop, &ch->in_fd, &ch->inw);
    free(ch->in_data); ch->in_data = NULL;
}

/* Read what is there; past max_output keep reading but drop it, so the
 * child never blocks on a full pipe.  Closes the pipe at EOF. */
static void drain(struct cm_loop *loop, struct child *ch, int is_err)
{
    int *fd = is_err ? &ch->err_fd : &ch->out_fd;
    struct cm_watch **w = is_err ? &ch->ew : &ch->ow;
    struct cm_buf *b = is_err ? &ch->err : &ch->out;
    int *trunc = is_err ? &ch->err_trunc : &ch->out_trunc;
    char chunk[65536];
    while (*fd >= 0) {
        ssize_t n = read(*fd, chunk, sizeof chunk);
        if (n > 0) {
            size_t room = ch->max_output - b->len, keep = (size_t)n < room ? (size_t)n : room;
            if (keep < (size_t)n) *trunc = 1;
            if (keep && cm_buf_append(b, chunk, keep) != CM_OK) *trunc = 1;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        close_watched(loop, fd, w); /* EOF or error */
    }
}

/* --- lifecycle --------------------------------------------------------------- */

static void kill_group(pid_t pid, int sig)
{
    /* the group first (everything the command started), then the leader in
     * case it moved itself to another group */
    (void)kill(-pid, sig);
    (void)kill(pid, sig);
}

static void child_unlink_free(struct cm_loop *loop, struct child *ch)
{
    struct cm_proc_state *st = state(loop);
    cm_loop_itimer_stop(loop, &ch->timer);
    close_watched(loop, &ch->pidfd, &ch->pw);
    close_stdin(loop, ch);
    close_watched(loop, &ch->out_fd, &ch->ow);
    close_watched(loop, &ch->err_fd, &ch->ew);
    if (ch->prev) ch->prev->next = ch->next;
    else st->list = ch->next;
    if (ch->next) ch->next->prev = ch->prev;
    cm_buf_free(&ch->out);
    cm_buf_free(&ch->err);
    free(ch);
}

static void finish(struct cm_loop *loop, struct child *ch, int wstatus, int known)
{
    struct cm_proc_state *st = state(loop);
    struct cm_event *ev;
    if (ch->cancelled) {
        child_unlink_free(loop, ch);
        return;
    }
    drain(loop, ch, 0);
    drain(loop, ch, 1);
    cm_loop_id_del(loop, ch->id);
    st->count--;
    ev = cm_event_new(CM_EVENT_EXEC, ch->id);
    if (!ev) {
        child_unlink_free(loop, ch);
        return;
    }
    if (known && WIFEXITED(wstatus)) {
        ev->exited = 1;
        ev->exit_status = WEXITSTATUS(wstatus);
    } else if (known && WIFSIGNALED(wstatus)) {
        ev->term_signal = WTERMSIG(wstatus);
    }
    if (ch->timed_out) {
        ev->failed = 1;
        cm_fail(&ev->res, "timeout", "%s timed out after %gs", ch->name, ch->timeout);
    } else if (!known) {
        ev->failed = 1;
        cm_fail(&ev->res, "ECHILD", "%s: exit status lost (reaped elsewhere)", ch->name);
    }
    if (cm_buf_append(&ch->out, "", 0) != CM_OK || cm_buf_append(&ch->err, "", 0) != CM_OK) {
        ev->failed = 1;
        cm_fail(&ev->res, "ENOMEM", "out of memory");
    }
    ev->out = ch->out.data;
    ev->out_len = ch->out.len;
    ev->err = ch->err.data;
    ev->err_len = ch->err.len;
    ev->out_truncated = ch->out_trunc;
    ev->err_truncated = ch->err_trunc;
    ch->out.data = ch->err.data = NULL;
    ch->out.len = ch->err.len = ch->out.cap = ch->err.cap = 0;
    child_unlink_free(loop, ch);
    cm_loop_post(loop, ev);
}

/* Reap ch if it has exited; returns 1 when it is gone. */
static int try_reap(struct cm_loop *loop, struct child *ch)
{
    int wstatus = 0;
    pid_t r;
    do {
        r = waitpid(ch->pid, &wstatus, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    finish(loop, ch, wstatus, r == ch->pid);
    return 1;
}

void cm_proc_on_sigchld(struct cm_loop *loop)
{
    struct cm_proc_state *st = state(loop);
    struct child *ch = st ? st->list : NULL;
    while (ch) {
        struct child *next = ch->next;
        if (ch->pidfd < 0) (void)try_reap(loop, ch);
        ch = next;
    }
}

static void on_pidfd(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    (void)revents;
    (void)try_reap(loop, w->owner);
}

static void on_pipe(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct child *ch = w->owner;
    (void)revents;
    drain(loop, ch, w == ch->ew);
}

static void on_stdin(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct child *ch = w->owner;
    (void)revents;
    while (ch->in_off < ch->in_len) {
        ssize_t n = send(ch->in_fd, ch->in_data + ch->in_off, ch->in_len - ch->in_off, MSG_NOSIGNAL);
        if (n > 0) {
            ch->in_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        break; /* EPIPE: the child stopped reading; that is its business */
    }
    close_stdin(loop, ch); /* EOF for the child */
}

static void on_deadline(struct cm_loop *loop, struct cm_itimer *t)
{
    struct child *ch = (struct child *)(void *)((char *)t - offsetof(struct child, timer));
    if (!ch->term_sent && ch->grace > 0) {
        ch->timed_out = 1;
        ch->term_sent = 1;
        kill_group(ch->pid, SIGTERM);
        (void)cm_loop_itimer_set(loop, &ch->timer, cm_clock_monotonic() + ch->grace, NULL);
        return;
    }
    ch->timed_out = 1;
    kill_group(ch->pid, SIGKILL);
}

/* --- spawning -------------------------------------------------------------- */

static int pidfd_open_child(pid_t pid)
{
#ifdef SYS_pidfd_open
    if (!use_pidfd) return -1;
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

static int pidfd_supported(void)
{
    static int known = -1;
    if (!use_pidfd) return 0;
    if (known < 0) {
        int fd = pidfd_open_child(getpid());
        known = fd >= 0;
        if (fd >= 0) close(fd);
    }
    return known;
}

static int check_req(const struct cm_exec_req *req, struct cm_result *res)
{
    size_t i;
    if (!req->argv || req->argc == 0 || !req->argv[0] || !req->argv[0][0])
        return cm_fail(res, "invalid", "exec needs a command (argv[1])");
    if (req->argc > MAX_ARGS) return cm_fail(res, "invalid", "more than %d arguments", MAX_ARGS);
    for (i = 0; i < req->argc; i++)
        if (!req->argv[i]) return cm_fail(res, "invalid", "argument %zu is missing", i + 1);
    if (req->envp) {
        if (req->envc > MAX_ARGS) return cm_fail(res, "invalid", "more than %d environment entries", MAX_ARGS);
        for (i = 0; i < req->envc; i++)
            if (!req->envp[i] || !strchr(req->envp[i], '=') || req->envp[i][0] == '=')
                return cm_fail(res, "invalid", "environment entry %zu is not NAME=value", i + 1);
    }
    if (!isfinite(req->timeout) || req->timeout <= 0 || req->timeout > MAX_SECONDS)
        return cm_fail(res, "invalid", "exec timeout must be > 0 and at most %g seconds", MAX_SECONDS);
    if (!isfinite(req->kill_grace) || req->kill_grace < 0 || req->kill_grace > 3600)
        return cm_fail(res, "invalid", "kill_grace must be between 0 and 3600 seconds");
    if (req->max_output > CM_PROC_MAX_OUTPUT_LIMIT)
        return cm_fail(res, "invalid", "max_output must be at most %zu", CM_PROC_MAX_OUTPUT_LIMIT);
    if (req->stdin_data && req->stdin_len > CM_PROC_MAX_OUTPUT_LIMIT)
        return cm_fail(res, "invalid", "stdin larger than %zu bytes", CM_PROC_MAX_OUTPUT_LIMIT);
    return CM_OK;
}

static const char *spawn_code(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOEXEC: return "ENOEXEC";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    default: return "spawn";
    }
}

int cm_proc_exec(struct cm_loop *loop, const struct cm_exec_req *req, uint64_t *id,
                 struct cm_result *res)
{
    struct cm_proc_state *st = state(loop);
    struct child *ch = NULL;
    char **argv = NULL, **envp = NULL;
    int outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int fa_ok = 0, attr_ok = 0, rc = CM_ERR, e;
    sigset_t none, defaults;
    size_t i;
    pid_t pid = -1;

    if (check_req(req, res) != CM_OK) return CM_ERR;
    argv = calloc(req->argc + 1, sizeof *argv);
    if (req->envp) envp = calloc(req->envc + 1, sizeof *envp);
    ch = calloc(1, sizeof *ch);
    if (!argv || (req->envp && !envp) || !ch) goto oom;
    for (i = 0; i < req->argc; i++) argv[i] = (char *)req->argv[i];
    for (i = 0; envp && i < req->envc; i++) envp[i] = (char *)req->envp[i];
    ch->pidfd = ch->in_fd = ch->out_fd = ch->err_fd = -1;
    ch->max_output = req->max_output;
    ch->timeout = req->timeout;
    ch->grace = req->kill_grace;
    ch->timer.fire = on_deadline;
    snprintf(ch->name, sizeof ch->name, "%s", req->argv[0]);
    if (req->stdin_data && req->stdin_len) {
        ch->in_data = malloc(req->stdin_len);
        if (!ch->in_data) goto oom;
        memcpy(ch->in_data, req->stdin_data, req->stdin_len);
        ch->in_len = req->stdin_len;
    }

    if (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0 ||
        (req->stdin_data && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, inp) != 0)) {
        e = errno;
        cm_fail(res, spawn_code(e), "cannot make pipes for %s: %s", ch->name, strerror(e));
        goto out;
    }
    if ((e = posix_spawn_file_actions_init(&fa)) != 0) goto spawn_fail;
    fa_ok = 1;
    if ((e = req->stdin_data ? posix_spawn_file_actions_adddup2(&fa, inp[1], 0)
                             : posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, outp[1], 1)) != 0 ||
        (e = posix_spawn_file_actions_adddup2(&fa, errp[1], 2)) != 0 ||
        (req->cwd && (e = posix_spawn_file_actions_addchdir_np(&fa, req->cwd)) != 0))
        goto spawn_fail;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* whatever fd someone in this process forgot to mark close-on-exec
     * (a library's socket, a Lua file) stays out of the child */
    if ((e = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0) goto spawn_fail;
#endif
    if ((e = posix_spawnattr_init(&attr)) != 0) goto spawn_fail;
    attr_ok = 1;
    sigemptyset(&none);
    cm_loop_child_sigdefaults(loop, &defaults);
    if ((e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                 POSIX_SPAWN_SETPGROUP)) != 0 ||
        (e = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
        (e = posix_spawnattr_setsigdefault(&attr, &defaults)) != 0 ||
        (e = posix_spawnattr_setpgroup(&attr, 0)) != 0)
        goto spawn_fail;
    /* without pidfds, SIGCHLD must be routed to the signalfd before the
     * child can exit, or its one SIGCHLD is lost */
    if (!pidfd_supported() && cm_loop_want_sigchld(loop, res) != CM_OK) goto out;

    e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp ? envp : environ);
    if (e != 0) {
        pid = -1;
        if (req->cwd && e == ENOENT)
            cm_fail(res, "ENOENT", "cannot execute %s in %s: %s", ch->name, req->cwd, strerror(e));
        else
            cm_fail(res, spawn_code(e), "cannot execute %s: %s", ch->name, strerror(e));
        goto out;
    }
    ch->pid = pid;
    close(outp[1]); outp[1] = -1;
    close(errp[1]); errp[1] = -1;
    if (inp[1] >= 0) { close(inp[1]); inp[1] = -1; }
    ch->out_fd = outp[0]; outp[0] = -1;
    ch->err_fd = errp[0]; errp[0] = -1;
    ch->in_fd = inp[0]; inp[0] = -1;

    ch->pidfd = pidfd_open_child(pid);
    if (ch->pidfd < 0) {
        /* pidfd missing (or out of fds): SIGCHLD, plus one scan next step
         * in case the child exited before SIGCHLD was routed */
        if (cm_loop_want_sigchld(loop, res) != CM_OK ||
            cm_loop_itimer_set(loop, &st->poll, cm_clock_monotonic(), res) != CM_OK)
            goto started_fail;
    } else if (!(ch->pw = cm_loop_watch_add(loop, ch->pidfd, EPOLLIN, on_pidfd, ch, res))) {
        goto started_fail;
    }
    if (cm_fd_nonblock(ch->out_fd) != CM_OK || cm_fd_nonblock(ch->err_fd) != CM_OK ||
        (ch->in_fd >= 0 && cm_fd_nonblock(ch->in_fd) != CM_OK)) {
        cm_fail(res, "spawn", "fcntl: %s", strerror(errno));
        goto started_fail;
    }
    if (!(ch->ow = cm_loop_watch_add(loop, ch->out_fd, EPOLLIN, on_pipe, ch, res)) ||
        !(ch->ew = cm_loop_watch_add(loop, ch->err_fd, EPOLLIN, on_pipe, ch, res)))
        goto started_fail;
    if (ch->in_fd >= 0 && ch->in_len == 0) {
        close_stdin(loop, ch);
    } else if (ch->in_fd >= 0 && !(ch->inw = cm_loop_watch_add(loop, ch->in_fd, EPOLLOUT, on_stdin, ch, res))) {
        goto started_fail;
    }
    if (cm_loop_itimer_set(loop, &ch->timer, cm_clock_monotonic() + req->timeout, res) != CM_OK)
        goto started_fail;
    ch->id = cm_loop_new_id(loop);
    if (cm_loop_id_put(loop, ch->id, CM_ID_EXEC, ch, res) != CM_OK) goto started_fail;
    ch->next = st->list;
    if (st->list) st->list->prev = ch;
    st->list = ch;
    st->count++;
    *id = ch->id;
    ch = NULL;
    rc = CM_OK;
    goto out;

started_fail:
    /* the child runs but cannot be watched: stop it now (SIGKILL is prompt) */
    kill_group(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    cm_loop_itimer_stop(loop, &ch->timer);
    close_watched(loop, &ch->pidfd, &ch->pw);
    close_stdin(loop, ch);
    close_watched(loop, &ch->out_fd, &ch->ow);
    close_watched(loop, &ch->err_fd, &ch->ew);
    goto out;
spawn_fail:
    cm_fail(res, spawn_code(e), "cannot prepare to execute %s: %s", ch->name, strerror(e));
    goto out;
oom:
    cm_fail(res, "ENOMEM", "out of memory");
out:
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    if (attr_ok) posix_spawnattr_destroy(&attr);
    for (i = 0; i < 2; i++) {
        if (outp[i] >= 0) close(outp[i]);
        if (errp[i] >= 0) close(errp[i]);
        if (inp[i] >= 0) close(inp[i]);
    }
    if (ch) {
        free(ch->in_data); ch->in_data = NULL;
        free(ch);
    }
    free(argv);
    free(envp);
    return rc;
}

int cm_proc_cancel(struct cm_loop *loop, uint64_t id)
{
    struct cm_proc_state *st = state(loop);
    struct child *ch = cm_loop_id_get(loop, id, CM_ID_EXEC);
    if (!ch || ch->cancelled) return 0;
    ch->cancelled = 1;
    kill_group(ch->pid, SIGKILL);
    cm_loop_itimer_stop(loop, &ch->timer);
    close_stdin(loop, ch);
    close_watched(loop, &ch->out_fd, &ch->ow);
    close_watched(loop, &ch->err_fd, &ch->ew);
    cm_loop_id_del(loop, ch->id);
    st->count--;
    /* still watched through its pidfd (or SIGCHLD) until reaped */
    if (ch->pidfd < 0) (void)try_reap(loop, ch);
    return 1;
}

void cm_proc_reset(struct cm_loop *loop)
{
    struct cm_proc_state *st = state(loop);
    struct child *ch = st ? st->list : NULL;
    while (ch) {
        struct child *next = ch->next;
        if (!ch->cancelled) (void)cm_proc_cancel(loop, ch->id);
        ch = next;
    }
}

void cm_proc_destroy(struct cm_loop *loop)
{
    struct cm_proc_state *st = state(loop);
    if (!st) return;
    while (st->list) {
        struct child *ch = st->list;
        if (!ch->cancelled) {
            cm_loop_id_del(loop, ch->id);
            st->count--;
        }
        kill_group(ch->pid, SIGKILL);
        while (waitpid(ch->pid, NULL, 0) < 0 && errno == EINTR) {}
        child_unlink_free(loop, ch);
    }
    cm_loop_itimer_stop(loop, &st->poll);
    free(st);
    *cm_loop_proc_slot(loop) = NULL;
}
