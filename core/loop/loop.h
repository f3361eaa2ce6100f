/* loop.h - the one event loop of the process (the cqueues model).
 *
 * C owns a single epoll loop: timers (two min-heaps), file descriptors,
 * signals (signalfd), one libcurl multi handle (http.h), child processes
 * (proc.h), small HTTP servers (httpd.h) and tls-alpn-01 responders
 * (tlsalpn.h).  Nothing here ever calls Lua: whatever completes becomes a
 * struct cm_event in a queue, and the host takes the queue after each
 * cm_loop_step().  The Lua scheduler
 * (lua/certmaint/loop.lua) resumes coroutines from those events, so a
 * coroutine is only ever resumed from the loop top, never inside libcurl.
 *
 * Time.  User timers (cm_loop_timer_add) are in cm_clock_now() time.  With a
 * fake clock a step never blocks on them: one fires once fake now >= its time.
 * With the real clock each is converted to a monotonic deadline when armed, so
 * a wall-clock jump does not break a sleep.  Everything internal (HTTP, exec
 * and connection timeouts) and cm_loop_timer_after() use monotonic time: I/O
 * is real even when the clock is not.
 *
 * Ids are unique (per process) positive integers across all kinds.
 * The loop is a process-wide singleton made on first use; one thread only
 * (work.h's pool runs jobs on threads of its own, reported back here).
 */
#ifndef CM_LOOP_H
#define CM_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "result.h"

struct cm_loop;

enum cm_event_kind {
    CM_EVENT_TIMER = 1,
    CM_EVENT_HTTP,
    CM_EVENT_EXEC,
    CM_EVENT_SIGNAL,
    CM_EVENT_HTTPD_REQUEST,     /* a request for the host (httpd.h event mode) */
    CM_EVENT_WORK,              /* a worker-pool job finished (work.h) */
};

/* One response header; names are lower-case, one entry a name (last wins). */
struct cm_header {
    char *name;
    char *value;
};

/* Something that completed.  Fields not relevant to the kind are zero/NULL.
 * Owned by the loop until taken with cm_loop_take_events(); then by the
 * caller, who frees it with cm_event_free(). */
struct cm_event {
    struct cm_event *next;
    enum cm_event_kind kind;
    uint64_t id;
    int failed;                 /* 1: transport/exec failure described by res */
    struct cm_result res;       /* code: "timeout", "toobig", "connect", "tls", ... */
    /* CM_EVENT_HTTP (response) and CM_EVENT_HTTPD_REQUEST (request) */
    long http_status;           /* 0 when no response was received */
    struct cm_header *headers;
    size_t header_count;
    char *body;                 /* NUL-terminated (extra byte), body_len bytes */
    size_t body_len;
    /* CM_EVENT_HTTPD_REQUEST: id is the request's (cm_httpd_respond) */
    uint64_t server;            /* the server's id */
    char *method, *path, *query; /* query NULL when the target had none */
    /* CM_EVENT_EXEC */
    int exited;                 /* 1: exit_status is valid */
    int exit_status;
    int term_signal;            /* 0 unless killed by a signal */
    char *out, *err;            /* captured stdout/stderr, NUL-terminated */
    size_t out_len, err_len;
    int out_truncated, err_truncated;
    /* CM_EVENT_SIGNAL */
    int signo;
};

/* How many things the loop is still holding (leak checks after each spec). */
struct cm_loop_counts {
    size_t timers;   /* user timers and deadlines not yet fired */
    size_t http;     /* transfers in flight */
    size_t exec;     /* children not yet reported (cancelled ones not counted) */
    size_t servers;  /* open servers: HTTP (httpd.h) and tls-alpn-01 (tlsalpn.h) */
    size_t work;     /* worker-pool jobs not yet reported (work.h) */
};

/* The process-wide loop, created on first call (epoll, curl multi).
 * Returns NULL and fills res when it cannot be created. */
struct cm_loop *cm_loop_get(struct cm_result *res);

/* Destroy the singleton if it exists: cancels everything (children get
 * SIGKILL and are reaped), closes every fd, restores signal masks.  The next
 * cm_loop_get() makes a fresh loop. */
void cm_loop_shutdown(void);

/* Cancel everything for test isolation: timers, transfers, children
 * (SIGKILL; reaped in the background, not counted), servers, watched signals,
 * worker jobs not started (running ones are waited for) and queued events.
 * The loop stays usable. */
void cm_loop_reset(struct cm_loop *loop);

/* Run one iteration: wait at most `timeout` seconds (0 = poll, < 0 = no
 * limit) for I/O or a due timer, dispatch it, fire due timers.  Completed
 * things are queued as events (take them with cm_loop_take_events).  Does not
 * wait at all when events are already queued.  Returns CM_ERR only when
 * epoll itself fails. */
int cm_loop_step(struct cm_loop *loop, double timeout, struct cm_result *res);

/* Hand over the queued events, oldest first, as a list linked by ->next
 * (NULL when none).  The caller frees each with cm_event_free(). */
struct cm_event *cm_loop_take_events(struct cm_loop *loop);

/* Free one event (not the ones linked after it).  NULL is fine. */
void cm_event_free(struct cm_event *ev);

/* Arm a timer firing at `at` (cm_clock_now() time) as a CM_EVENT_TIMER with
 * the returned id; 0 when out of memory (res filled). */
uint64_t cm_loop_timer_add(struct cm_loop *loop, double at, struct cm_result *res);

/* Arm a timer firing after `seconds` of real (monotonic) time, whatever the
 * clock: the deadlines of I/O.  0 when out of memory. */
uint64_t cm_loop_timer_after(struct cm_loop *loop, double seconds, struct cm_result *res);

/* Cancel a timer of either kind; returns 1 if it was pending, 0 if unknown
 * or already fired.  A cancelled timer never produces an event. */
int cm_loop_timer_cancel(struct cm_loop *loop, uint64_t id);

/* Fill *counts with what is still pending. */
void cm_loop_pending(struct cm_loop *loop, struct cm_loop_counts *counts);

/* Watch exactly these signals (replacing any previous set): they are
 * blocked with pthread_sigmask and read from a signalfd, each arrival queued
 * as a CM_EVENT_SIGNAL.  Allowed: SIGTERM SIGINT SIGHUP SIGQUIT SIGUSR1
 * SIGUSR2.  CM_ERR (res "invalid") on any other signal. */
int cm_loop_signal_watch(struct cm_loop *loop, const int *signos, size_t n,
                         struct cm_result *res);

/* Stop watching all signals: pending ones are consumed, then the mask is
 * restored to what it was before watching. */
void cm_loop_signal_unwatch(struct cm_loop *loop);

/* Signal names without "SIG": "TERM" -> SIGTERM; 0 when not allowed. */
int cm_loop_signal_number(const char *name);
/* The reverse; NULL when not one of the allowed signals. */
const char *cm_loop_signal_name(int signo);

#endif
