/* loop.c - the epoll loop: watchers, timers, signals, the event queue.
 *
 * Two timer heaps.  User timers (cm_loop_timer_add) are ordered by their
 * deadline on the elapsed clock (cm_clock_elapsed: fake with the clock, else
 * CLOCK_BOOTTIME), so a step of the wall clock neither stretches nor shrinks a
 * sleep and a suspend counts; the heap is re-keyed when the clock switches.  Internal timers
 * (struct cm_itimer: curl's timeout, exec and connection deadlines, and the
 * deadlines of cm_loop_timer_after) are always monotonic.
 *
 * Ids map to objects through one open-addressing table, so cancelling any of
 * ten thousand pending things costs O(1).
 */
#include "loop.h"
#include "loop_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "work.h"

#define MAX_EPOLL_EVENTS 256
#define MAX_WAIT_MS (24 * 3600 * 1000)
#define ID_TOMB UINT64_MAX

struct utimer {
    uint64_t id;
    double at;      /* cm_clock_now() time */
    double mono;    /* the same instant on the elapsed clock, when armed */
    size_t idx;     /* heap slot + 1 */
};

struct dtimer {     /* cm_loop_timer_after: a user-visible internal timer */
    struct cm_itimer t;
    uint64_t id;
};

struct idslot {
    uint64_t id;    /* 0 empty, ID_TOMB deleted */
    int kind;
    void *ptr;
};

struct cm_loop {
    int epfd;
    uint64_t next_id;

    struct idslot *ids;
    size_t ids_cap, ids_used, ids_live;

    struct utimer **uheap;
    size_t ucount, ucap;
    int fake_mode;

    struct cm_itimer **iheap;
    size_t icount, icap;
    size_t deadlines;

    struct cm_event *ev_head, *ev_tail;
    struct cm_watch *graveyard;

    int sigfd;
    struct cm_watch *sigw;
    int boot_fd;             /* timerfd on CLOCK_BOOTTIME at the first user timer, or -1 */
    struct cm_watch *boot_w;
    double boot_armed;       /* the elapsed-clock deadline it is armed at; 0: disarmed */
    sigset_t watched;     /* signals reported as events */
    sigset_t we_blocked;  /* signals this loop blocked (and must unblock) */
    int want_chld;
    int pipe_was_default;

    struct cm_http_state *http;
    struct cm_proc_state *proc;
    struct cm_httpd_state *httpd;
    struct cm_tlsalpn_state *tlsalpn;
    struct cm_work_state *work;
};

static struct cm_loop *the_loop;

static const struct {
    const char *name;
    int signo;
} allowed_signals[] = {
    {"TERM", SIGTERM}, {"INT", SIGINT},   {"HUP", SIGHUP},
    {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
};
#define N_ALLOWED (sizeof allowed_signals / sizeof allowed_signals[0])

/* --- small helpers ------------------------------------------------------- */

int cm_fd_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return CM_ERR;
    if (fl & O_NONBLOCK) return CM_OK;
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? CM_ERR : CM_OK;
}

int cm_buf_append(struct cm_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) return CM_ERR;
            cap *= 2;
        }
        grown = realloc(b->data, cap);
        if (!grown) return CM_ERR;
        b->data = grown;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CM_OK;
}

void cm_buf_free(struct cm_buf *b)
{
    free(b->data); b->data = NULL;
    b->len = b->cap = 0;
}

struct cm_http_state **cm_loop_http_slot(struct cm_loop *loop) { return &loop->http; }
struct cm_proc_state **cm_loop_proc_slot(struct cm_loop *loop) { return &loop->proc; }
struct cm_httpd_state **cm_loop_httpd_slot(struct cm_loop *loop) { return &loop->httpd; }
struct cm_work_state **cm_loop_work_slot(struct cm_loop *loop) { return &loop->work; }
struct cm_tlsalpn_state **cm_loop_tlsalpn_slot(struct cm_loop *loop) { return &loop->tlsalpn; }

/* --- ids ----------------------------------------------------------------- */

uint64_t cm_loop_new_id(struct cm_loop *loop) { return ++loop->next_id; }

static size_t id_hash(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id;
}

static int ids_rehash(struct cm_loop *loop, size_t cap)
{
    struct idslot *old = loop->ids, *fresh;
    size_t oldcap = loop->ids_cap, i;
    fresh = calloc(cap, sizeof *fresh);
    if (!fresh) return CM_ERR;
    for (i = 0; i < oldcap; i++) {
        size_t j;
        if (old[i].id == 0 || old[i].id == ID_TOMB) continue;
        j = id_hash(old[i].id) & (cap - 1);
        while (fresh[j].id != 0) j = (j + 1) & (cap - 1);
        fresh[j] = old[i];
    }
    free(old);
    loop->ids = fresh;
    loop->ids_cap = cap;
    loop->ids_used = loop->ids_live;
    return CM_OK;
}

int cm_loop_id_put(struct cm_loop *loop, uint64_t id, enum cm_id_kind kind, void *ptr,
                   struct cm_result *res)
{
    size_t j;
    if ((loop->ids_used + 1) * 2 > loop->ids_cap) {
        size_t cap = loop->ids_cap ? loop->ids_cap : 64;
        while ((loop->ids_live + 1) * 4 > cap) cap *= 2; /* live load <= 1/4 after: room for tombstones */
        if (ids_rehash(loop, cap) != CM_OK) return cm_fail(res, "ENOMEM", "out of memory");
    }
    j = id_hash(id) & (loop->ids_cap - 1);
    while (loop->ids[j].id != 0 && loop->ids[j].id != ID_TOMB) j = (j + 1) & (loop->ids_cap - 1);
    if (loop->ids[j].id == 0) loop->ids_used++;
    loop->ids[j].id = id;
    loop->ids[j].kind = (int)kind;
    loop->ids[j].ptr = ptr;
    loop->ids_live++;
    return CM_OK;
}

static struct idslot *id_find(struct cm_loop *loop, uint64_t id)
{
    size_t j;
    if (!loop->ids_cap || id == 0 || id == ID_TOMB) return NULL;
    j = id_hash(id) & (loop->ids_cap - 1);
    while (loop->ids[j].id != 0) {
        if (loop->ids[j].id == id) return &loop->ids[j];
        j = (j + 1) & (loop->ids_cap - 1);
    }
    return NULL;
}

void *cm_loop_id_get(struct cm_loop *loop, uint64_t id, enum cm_id_kind kind)
{
    struct idslot *s = id_find(loop, id);
    return (s && s->kind == (int)kind) ? s->ptr : NULL;
}

void cm_loop_id_del(struct cm_loop *loop, uint64_t id)
{
    struct idslot *s = id_find(loop, id);
    if (!s) return;
    s->id = ID_TOMB;
    s->ptr = NULL;
    loop->ids_live--;
}

/* --- heaps ---------------------------------------------------------------- */

static int ut_less(const struct cm_loop *loop, const struct utimer *a, const struct utimer *b)
{
    (void)loop;
    return a->mono < b->mono || (a->mono == b->mono && a->id < b->id);
}

static void uheap_place(struct cm_loop *loop, size_t i, struct utimer *t)
{
    loop->uheap[i] = t;
    t->idx = i + 1;
}

static void uheap_up(struct cm_loop *loop, size_t i)
{
    struct utimer *t = loop->uheap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ut_less(loop, t, loop->uheap[p])) break;
        uheap_place(loop, i, loop->uheap[p]);
        i = p;
    }
    uheap_place(loop, i, t);
}

static void uheap_down(struct cm_loop *loop, size_t i)
{
    struct utimer *t = loop->uheap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= loop->ucount) break;
        if (c + 1 < loop->ucount && ut_less(loop, loop->uheap[c + 1], loop->uheap[c])) c++;
        if (!ut_less(loop, loop->uheap[c], t)) break;
        uheap_place(loop, i, loop->uheap[c]);
        i = c;
    }
    uheap_place(loop, i, t);
}

static void uheap_remove(struct cm_loop *loop, struct utimer *t)
{
    size_t i = t->idx - 1, last = loop->ucount - 1;
    t->idx = 0;
    loop->ucount--;
    if (i != last) {
        uheap_place(loop, i, loop->uheap[last]);
        uheap_up(loop, i);
        uheap_down(loop, i);
    }
}

static int it_less(const struct cm_itimer *a, const struct cm_itimer *b)
{
    return a->deadline < b->deadline;
}

static void iheap_place(struct cm_loop *loop, size_t i, struct cm_itimer *t)
{
    loop->iheap[i] = t;
    t->idx = i + 1;
}

static void iheap_up(struct cm_loop *loop, size_t i)
{
    struct cm_itimer *t = loop->iheap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!it_less(t, loop->iheap[p])) break;
        iheap_place(loop, i, loop->iheap[p]);
        i = p;
    }
    iheap_place(loop, i, t);
}

static void iheap_down(struct cm_loop *loop, size_t i)
{
    struct cm_itimer *t = loop->iheap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= loop->icount) break;
        if (c + 1 < loop->icount && it_less(loop->iheap[c + 1], loop->iheap[c])) c++;
        if (!it_less(loop->iheap[c], t)) break;
        iheap_place(loop, i, loop->iheap[c]);
        i = c;
    }
    iheap_place(loop, i, t);
}

int cm_loop_itimer_set(struct cm_loop *loop, struct cm_itimer *t, double deadline,
                       struct cm_result *res)
{
    if (t->idx) {
        size_t i = t->idx - 1;
        t->deadline = deadline;
        iheap_up(loop, i);
        iheap_down(loop, t->idx - 1);
        return CM_OK;
    }
    if (loop->icount == loop->icap) {
        size_t cap = loop->icap ? loop->icap * 2 : 64;
        struct cm_itimer **grown = realloc(loop->iheap, cap * sizeof *grown);
        if (!grown) return cm_fail(res, "ENOMEM", "out of memory");
        loop->iheap = grown;
        loop->icap = cap;
    }
    t->deadline = deadline;
    loop->icount++;
    iheap_place(loop, loop->icount - 1, t);
    iheap_up(loop, loop->icount - 1);
    return CM_OK;
}

void cm_loop_itimer_stop(struct cm_loop *loop, struct cm_itimer *t)
{
    size_t i, last;
    if (!t || !t->idx) return;
    i = t->idx - 1;
    last = loop->icount - 1;
    t->idx = 0;
    loop->icount--;
    if (i != last) {
        iheap_place(loop, i, loop->iheap[last]);
        iheap_up(loop, i);
        iheap_down(loop, i);
    }
}

/* Re-key the user-timer heap when the clock switched between fake and real. */
static void sync_clock_mode(struct cm_loop *loop)
{
    int fake = cm_clock_is_fake() ? 1 : 0;
    /* the elapsed clock runs on across the switch (clock.c): deadlines keep
     * their order and what is left of them */
    if (fake == loop->fake_mode) return;
    loop->fake_mode = fake;
}

/* --- events --------------------------------------------------------------- */

struct cm_event *cm_event_new(enum cm_event_kind kind, uint64_t id)
{
    struct cm_event *ev = calloc(1, sizeof *ev);
    if (!ev) return NULL;
    ev->kind = kind;
    ev->id = id;
    return ev;
}

void cm_event_free(struct cm_event *ev)
{
    size_t i;
    if (!ev) return;
    for (i = 0; i < ev->header_count; i++) {
        free(ev->headers[i].name); ev->headers[i].name = NULL;
        free(ev->headers[i].value); ev->headers[i].value = NULL;
    }
    free(ev->headers); ev->headers = NULL;
    free(ev->body); ev->body = NULL;
    free(ev->method); ev->method = NULL;
    free(ev->path); ev->path = NULL;
    free(ev->query); ev->query = NULL;
    free(ev->out); ev->out = NULL;
    free(ev->err); ev->err = NULL;
    free(ev);
}

void cm_loop_post(struct cm_loop *loop, struct cm_event *ev)
{
    ev->next = NULL;
    if (loop->ev_tail) loop->ev_tail->next = ev;
    else loop->ev_head = ev;
    loop->ev_tail = ev;
}

struct cm_event *cm_loop_take_events(struct cm_loop *loop)
{
    struct cm_event *head = loop->ev_head;
    loop->ev_head = loop->ev_tail = NULL;
    return head;
}

static void drop_events(struct cm_loop *loop)
{
    struct cm_event *ev = cm_loop_take_events(loop);
    while (ev) {
        struct cm_event *next = ev->next;
        cm_event_free(ev);
        ev = next;
    }
}

/* --- watchers ------------------------------------------------------------- */

struct cm_watch *cm_loop_watch_add(struct cm_loop *loop, int fd, uint32_t events,
                                   cm_watch_fn *on_io, void *owner, struct cm_result *res)
{
    struct epoll_event ee;
    struct cm_watch *w = calloc(1, sizeof *w);
    if (!w) {
        cm_fail(res, "ENOMEM", "out of memory");
        return NULL;
    }
    w->fd = fd;
    w->events = events;
    w->on_io = on_io;
    w->owner = owner;
    memset(&ee, 0, sizeof ee);
    ee.events = events;
    ee.data.ptr = w;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ee) != 0) {
        cm_fail(res, "epoll", "cannot watch fd %d: %s", fd, strerror(errno));
        free(w);
        return NULL;
    }
    return w;
}

int cm_loop_watch_mod(struct cm_loop *loop, struct cm_watch *w, uint32_t events,
                      struct cm_result *res)
{
    struct epoll_event ee;
    if (w->events == events) return CM_OK;
    memset(&ee, 0, sizeof ee);
    ee.events = events;
    ee.data.ptr = w;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ee) != 0)
        return cm_fail(res, "epoll", "cannot watch fd %d: %s", w->fd, strerror(errno));
    w->events = events;
    return CM_OK;
}

void cm_loop_watch_del(struct cm_loop *loop, struct cm_watch *w)
{
    if (!w || w->dead) return;
    /* An fd closed behind our back is already gone from the set: ignore EBADF/ENOENT. */
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->dead = 1;
    w->owner = NULL;
    w->next_dead = loop->graveyard;
    loop->graveyard = w;
}

static void free_graveyard(struct cm_loop *loop)
{
    while (loop->graveyard) {
        struct cm_watch *w = loop->graveyard;
        loop->graveyard = w->next_dead;
        free(w);
    }
}

/* --- signals -------------------------------------------------------------- */

int cm_loop_signal_number(const char *name)
{
    size_t i;
    if (!name) return 0;
    if (strncmp(name, "SIG", 3) == 0) name += 3;
    for (i = 0; i < N_ALLOWED; i++)
        if (strcmp(allowed_signals[i].name, name) == 0) return allowed_signals[i].signo;
    return 0;
}

const char *cm_loop_signal_name(int signo)
{
    size_t i;
    for (i = 0; i < N_ALLOWED; i++)
        if (allowed_signals[i].signo == signo) return allowed_signals[i].name;
    return NULL;
}

static void on_signalfd(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct signalfd_siginfo si[16];
    int chld = 0;
    (void)revents;
    for (;;) {
        ssize_t n = read(w->fd, si, sizeof si), i;
        if (n <= 0) break; /* EAGAIN: drained */
        for (i = 0; i < n / (ssize_t)sizeof si[0]; i++) {
            int signo = (int)si[i].ssi_signo;
            if (signo == SIGCHLD) {
                chld = 1;
            } else if (sigismember(&loop->watched, signo) == 1) {
                struct cm_event *ev = cm_event_new(CM_EVENT_SIGNAL, 0);
                if (!ev) continue;
                ev->signo = signo;
                cm_loop_post(loop, ev);
            }
        }
    }
    if (chld) cm_proc_on_sigchld(loop);
}

static int sigfd_update(struct cm_loop *loop, struct cm_result *res)
{
    sigset_t mask = loop->watched;
    int fd;
    if (loop->want_chld) sigaddset(&mask, SIGCHLD);
    fd = signalfd(loop->sigfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return cm_fail(res, "signal", "signalfd: %s", strerror(errno));
    if (loop->sigfd < 0) {
        loop->sigfd = fd;
        loop->sigw = cm_loop_watch_add(loop, fd, EPOLLIN, on_signalfd, NULL, res);
        if (!loop->sigw) {
            close(fd);
            loop->sigfd = -1;
            return CM_ERR;
        }
    }
    return CM_OK;
}

/* Block s unless it already is; remember that we did. */
static int block_signal(struct cm_loop *loop, int s, struct cm_result *res)
{
    sigset_t cur, one;
    int rc;
    if ((rc = pthread_sigmask(SIG_BLOCK, NULL, &cur)) != 0)
        return cm_fail(res, "signal", "pthread_sigmask: %s", strerror(rc));
    if (sigismember(&cur, s) == 1) return CM_OK;
    sigemptyset(&one);
    sigaddset(&one, s);
    if ((rc = pthread_sigmask(SIG_BLOCK, &one, NULL)) != 0)
        return cm_fail(res, "signal", "pthread_sigmask: %s", strerror(rc));
    sigaddset(&loop->we_blocked, s);
    return CM_OK;
}

/* Consume a pending s, then unblock it if we blocked it: unblocking a pending
 * SIGTERM would otherwise run its default action and kill the process. */
static void unblock_signal(struct cm_loop *loop, int s)
{
    sigset_t pend, one;
    struct timespec zero = {0, 0};
    sigemptyset(&one);
    sigaddset(&one, s);
    while (sigpending(&pend) == 0 && sigismember(&pend, s) == 1)
        if (sigtimedwait(&one, NULL, &zero) < 0 && errno != EINTR) break;
    if (sigismember(&loop->we_blocked, s) == 1) {
        (void)pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        sigdelset(&loop->we_blocked, s);
    }
}

int cm_loop_signal_watch(struct cm_loop *loop, const int *signos, size_t n,
                         struct cm_result *res)
{
    sigset_t want;
    size_t i;
    sigemptyset(&want);
    for (i = 0; i < n; i++) {
        if (!cm_loop_signal_name(signos[i]))
            return cm_fail(res, "invalid", "signal %d cannot be watched (TERM INT HUP QUIT USR1 USR2)",
                           signos[i]);
        sigaddset(&want, signos[i]);
    }
    for (i = 0; i < N_ALLOWED; i++) {
        int s = allowed_signals[i].signo;
        if (sigismember(&want, s) == 1 && sigismember(&loop->watched, s) != 1) {
            if (block_signal(loop, s, res) != CM_OK) return CM_ERR;
            sigaddset(&loop->watched, s);
        }
    }
    if (sigfd_update(loop, res) != CM_OK) return CM_ERR;
    for (i = 0; i < N_ALLOWED; i++) {
        int s = allowed_signals[i].signo;
        if (sigismember(&want, s) != 1 && sigismember(&loop->watched, s) == 1) {
            sigdelset(&loop->watched, s);
            unblock_signal(loop, s);
        }
    }
    return sigfd_update(loop, res);
}

void cm_loop_signal_unwatch(struct cm_loop *loop)
{
    size_t i;
    struct cm_result res;
    for (i = 0; i < N_ALLOWED; i++) {
        int s = allowed_signals[i].signo;
        if (sigismember(&loop->watched, s) == 1) {
            sigdelset(&loop->watched, s);
            unblock_signal(loop, s);
        }
    }
    if (loop->sigfd >= 0) (void)sigfd_update(loop, &res);
}

int cm_loop_want_sigchld(struct cm_loop *loop, struct cm_result *res)
{
    if (loop->want_chld) return CM_OK;
    if (block_signal(loop, SIGCHLD, res) != CM_OK) return CM_ERR;
    loop->want_chld = 1;
    return sigfd_update(loop, res);
}

void cm_loop_child_sigdefaults(struct cm_loop *loop, void *out)
{
    sigset_t *set = out;
    size_t i;
    (void)loop;
    sigemptyset(set);
    sigaddset(set, SIGPIPE);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGALRM);
    sigaddset(set, SIGXFSZ);
    for (i = 0; i < N_ALLOWED; i++) sigaddset(set, allowed_signals[i].signo);
}

/* --- timers --------------------------------------------------------------- */

uint64_t cm_loop_timer_add(struct cm_loop *loop, double at, struct cm_result *res)
{
    struct utimer *t = NULL;
    double now;
    if (!isfinite(at)) {
        cm_fail(res, "invalid", "timer time must be a finite number");
        return 0;
    }
    sync_clock_mode(loop);
    if (loop->ucount == loop->ucap) {
        size_t cap = loop->ucap ? loop->ucap * 2 : 64;
        struct utimer **grown = realloc(loop->uheap, cap * sizeof *grown);
        if (!grown) goto oom;
        loop->uheap = grown;
        loop->ucap = cap;
    }
    t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->id = cm_loop_new_id(loop);
    t->at = at;
    now = cm_clock_now();
    t->mono = cm_clock_elapsed() + (at - now);
    if (cm_loop_id_put(loop, t->id, CM_ID_TIMER, t, res) != CM_OK) {
        free(t); t = NULL;
        return 0;
    }
    loop->ucount++;
    uheap_place(loop, loop->ucount - 1, t);
    uheap_up(loop, loop->ucount - 1);
    return t->id;
oom:
    cm_fail(res, "ENOMEM", "out of memory");
    return 0;
}

static void dtimer_fire(struct cm_loop *loop, struct cm_itimer *it)
{
    struct dtimer *d = (struct dtimer *)(void *)((char *)it - offsetof(struct dtimer, t));
    struct cm_event *ev = cm_event_new(CM_EVENT_TIMER, d->id);
    if (!ev) {
        /* out of memory: try again shortly rather than lose the deadline */
        (void)cm_loop_itimer_set(loop, it, cm_clock_monotonic() + 0.01, NULL);
        return;
    }
    cm_loop_id_del(loop, d->id);
    loop->deadlines--;
    free(d);
    cm_loop_post(loop, ev);
}

uint64_t cm_loop_timer_after(struct cm_loop *loop, double seconds, struct cm_result *res)
{
    struct dtimer *d;
    if (!isfinite(seconds)) {
        cm_fail(res, "invalid", "deadline must be a finite number of seconds");
        return 0;
    }
    d = calloc(1, sizeof *d);
    if (!d) {
        cm_fail(res, "ENOMEM", "out of memory");
        return 0;
    }
    d->id = cm_loop_new_id(loop);
    d->t.fire = dtimer_fire;
    if (cm_loop_id_put(loop, d->id, CM_ID_DEADLINE, d, res) != CM_OK) {
        free(d);
        return 0;
    }
    if (cm_loop_itimer_set(loop, &d->t, cm_clock_monotonic() + (seconds > 0 ? seconds : 0), res) != CM_OK) {
        cm_loop_id_del(loop, d->id);
        free(d);
        return 0;
    }
    loop->deadlines++;
    return d->id;
}

int cm_loop_timer_cancel(struct cm_loop *loop, uint64_t id)
{
    struct utimer *t = cm_loop_id_get(loop, id, CM_ID_TIMER);
    struct dtimer *d;
    if (t) {
        uheap_remove(loop, t);
        cm_loop_id_del(loop, id);
        free(t);
        return 1;
    }
    d = cm_loop_id_get(loop, id, CM_ID_DEADLINE);
    if (d) {
        cm_loop_itimer_stop(loop, &d->t);
        cm_loop_id_del(loop, id);
        loop->deadlines--;
        free(d);
        return 1;
    }
    return 0;
}

static void cancel_all_timers(struct cm_loop *loop)
{
    size_t i;
    while (loop->ucount) cm_loop_timer_cancel(loop, loop->uheap[0]->id);
    for (i = 0; i < loop->ids_cap; i++) {
        struct idslot *s = &loop->ids[i];
        if (s->id != 0 && s->id != ID_TOMB && s->kind == CM_ID_DEADLINE)
            cm_loop_timer_cancel(loop, s->id);
    }
}

/* Fire internal timers due now.  A timer re-armed while firing (curl's
 * "timeout 0") waits for the next step: the budget bounds the pass. */
static void fire_itimers(struct cm_loop *loop)
{
    double now = cm_clock_monotonic();
    size_t budget = loop->icount;
    while (loop->icount && budget--) {
        struct cm_itimer *t = loop->iheap[0];
        if (t->deadline > now) break;
        cm_loop_itimer_stop(loop, t);
        t->fire(loop, t);
    }
}

static void fire_utimers(struct cm_loop *loop)
{
    double el = cm_clock_elapsed();
    while (loop->ucount && loop->uheap[0]->mono <= el) {
        struct utimer *t = loop->uheap[0];
        struct cm_event *ev = cm_event_new(CM_EVENT_TIMER, t->id);
        if (!ev) break; /* out of memory: it stays due for the next step */
        uheap_remove(loop, t);
        cm_loop_id_del(loop, t->id);
        free(t);
        cm_loop_post(loop, ev);
    }
}

/* --- waking after a suspend ------------------------------------------------- */

/* epoll_wait's timeout runs on CLOCK_MONOTONIC, which stops while the machine
 * sleeps: a 10-minute sleep begun before an 8-hour suspend would end 10
 * minutes after the resume.  A timerfd on CLOCK_BOOTTIME armed at the first
 * user timer fires as soon as the machine is back, so what became due while
 * it slept runs at once.  (No timerfd: the epoll timeout alone, as before.) */
static void on_boot_timer(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    uint64_t n;
    (void)revents;
    while (read(w->fd, &n, sizeof n) == (ssize_t)sizeof n) continue; /* fire_utimers does the rest */
    loop->boot_armed = 0;
}

static void boot_timer_init(struct cm_loop *loop)
{
    loop->boot_fd = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    if (loop->boot_fd < 0) return;
    loop->boot_w = cm_loop_watch_add(loop, loop->boot_fd, EPOLLIN, on_boot_timer, NULL, NULL);
    if (!loop->boot_w) {
        close(loop->boot_fd);
        loop->boot_fd = -1;
    }
}

static void boot_timer_arm(struct cm_loop *loop)
{
    struct itimerspec its;
    double at = 0, left;
    if (loop->boot_fd < 0) return;
    if (!loop->fake_mode && loop->ucount) at = loop->uheap[0]->mono;
    if (at == loop->boot_armed) return;
    memset(&its, 0, sizeof its);
    if (at != 0) {
        /* relative: a CLOCK_BOOTTIME timerfd counts the time suspended */
        left = at - cm_clock_elapsed();
        if (left < 1e-6) left = 1e-6;
        its.it_value.tv_sec = (time_t)left;
        its.it_value.tv_nsec = (long)((left - (double)its.it_value.tv_sec) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    }
    if (timerfd_settime(loop->boot_fd, 0, &its, NULL) == 0) loop->boot_armed = at;
}

/* --- the loop ------------------------------------------------------------- */

static int wait_ms(struct cm_loop *loop, double timeout)
{
    double w = timeout < 0 ? INFINITY : timeout, mono;
    if (loop->ev_head) return 0;
    mono = cm_clock_monotonic();
    if (loop->icount) {
        double d = loop->iheap[0]->deadline - mono;
        if (d < w) w = d;
    }
    if (loop->ucount) {
        struct utimer *t = loop->uheap[0];
        double el = cm_clock_elapsed();
        if (loop->fake_mode) {
            if (t->mono <= el) w = 0; /* fake time moves only when a test moves it */
        } else if (t->mono - el < w) {
            w = t->mono - el;
        }
    }
    if (w <= 0) return 0;
    if (isinf(w) || w * 1000.0 >= (double)MAX_WAIT_MS) return isinf(w) ? -1 : MAX_WAIT_MS;
    {
        /* round up (no libm in the core's link): never wake before the deadline */
        double ms = w * 1000.0;
        int whole = (int)ms;
        return (double)whole < ms ? whole + 1 : whole;
    }
}

int cm_loop_step(struct cm_loop *loop, double timeout, struct cm_result *res)
{
    struct epoll_event evs[MAX_EPOLL_EVENTS];
    int n, i;
    if (isnan(timeout)) timeout = 0;
    sync_clock_mode(loop);
    free_graveyard(loop);
    boot_timer_arm(loop);
    n = epoll_wait(loop->epfd, evs, MAX_EPOLL_EVENTS, wait_ms(loop, timeout));
    if (n < 0) {
        if (errno != EINTR) return cm_fail(res, "epoll", "epoll_wait: %s", strerror(errno));
        n = 0;
    }
    for (i = 0; i < n; i++) {
        struct cm_watch *w = evs[i].data.ptr;
        if (!w->dead) w->on_io(loop, w, evs[i].events);
    }
    free_graveyard(loop);
    fire_itimers(loop);
    sync_clock_mode(loop);
    fire_utimers(loop);
    free_graveyard(loop);
    return CM_OK;
}

void cm_loop_pending(struct cm_loop *loop, struct cm_loop_counts *c)
{
    c->timers = loop->ucount + loop->deadlines;
    c->http = cm_http_count(loop);
    c->exec = cm_proc_count(loop);
    c->servers = cm_httpd_count(loop) + cm_tlsalpn_count(loop);
    c->work = cm_work_count(loop);
}

void cm_loop_reset(struct cm_loop *loop)
{
    cancel_all_timers(loop);
    cm_http_reset(loop);
    cm_proc_reset(loop);
    cm_httpd_reset(loop);
    cm_tlsalpn_reset(loop);
    cm_work_reset(loop);
    cm_loop_signal_unwatch(loop);
    drop_events(loop);
}

static void loop_free(struct cm_loop *loop)
{
    /* first: a running job finishes before anything else goes away */
    cm_work_destroy(loop);
    cancel_all_timers(loop);
    cm_httpd_destroy(loop);
    cm_tlsalpn_destroy(loop);
    cm_http_destroy(loop);
    cm_proc_destroy(loop);
    cm_loop_signal_unwatch(loop);
    if (loop->sigw) { cm_loop_watch_del(loop, loop->sigw); loop->sigw = NULL; }
    if (loop->sigfd >= 0) { close(loop->sigfd); loop->sigfd = -1; }
    if (loop->boot_w) { cm_loop_watch_del(loop, loop->boot_w); loop->boot_w = NULL; }
    if (loop->boot_fd >= 0) { close(loop->boot_fd); loop->boot_fd = -1; }
    if (sigismember(&loop->we_blocked, SIGCHLD) == 1) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, SIGCHLD);
        (void)pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    drop_events(loop);
    free_graveyard(loop);
    if (loop->epfd >= 0) { close(loop->epfd); loop->epfd = -1; }
    if (loop->pipe_was_default) signal(SIGPIPE, SIG_DFL);
    free(loop->uheap); loop->uheap = NULL;
    free(loop->iheap); loop->iheap = NULL;
    free(loop->ids); loop->ids = NULL;
    free(loop);
}

struct cm_loop *cm_loop_get(struct cm_result *res)
{
    struct cm_loop *loop = NULL;
    struct sigaction old;
    if (the_loop) return the_loop;
    loop = calloc(1, sizeof *loop);
    if (!loop) {
        cm_fail(res, "ENOMEM", "out of memory");
        return NULL;
    }
    loop->sigfd = -1;
    loop->boot_fd = -1;
    sigemptyset(&loop->watched);
    sigemptyset(&loop->we_blocked);
    loop->fake_mode = cm_clock_is_fake() ? 1 : 0;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        cm_fail(res, "epoll", "epoll_create1: %s", strerror(errno));
        free(loop);
        return NULL;
    }
    /* Writes to a peer that went away must fail with EPIPE, not kill the
     * daemon: libcurl with CURLOPT_NOSIGNAL asks the application to do this. */
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        signal(SIGPIPE, SIG_IGN);
        loop->pipe_was_default = 1;
    }
    if (cm_http_init(loop, res) != CM_OK || cm_proc_init(loop, res) != CM_OK ||
        cm_httpd_init(loop, res) != CM_OK || cm_tlsalpn_init(loop, res) != CM_OK ||
        cm_work_init(loop, res) != CM_OK) {
        loop_free(loop);
        return NULL;
    }
    boot_timer_init(loop);
    the_loop = loop;
    return loop;
}

void cm_loop_shutdown(void)
{
    struct cm_loop *loop = the_loop;
    if (!loop) return;
    the_loop = NULL;
    loop_free(loop);
}
