/* loop_impl.h - what the loop's units (loop, http, httpd, proc) share.
 *
 * Private to core/loop.c, core/http.c, core/httpd.c, core/tlsalpn.c, core/proc.c,
 * core/work.c: fd
 * watchers, internal (monotonic) timers, the id map and the event queue.
 * Everything runs on the one loop thread.
 */
#ifndef CM_LOOP_IMPL_H
#define CM_LOOP_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

struct cm_watch;
typedef void cm_watch_fn(struct cm_loop *loop, struct cm_watch *w, uint32_t revents);

/* An fd registered with epoll.  Deleting one only marks it dead and parks it
 * until the end of the current dispatch: an epoll batch may still hold a
 * pointer to it, so it must outlive the batch (its owner need not). */
struct cm_watch {
    int fd;
    uint32_t events;
    int dead;
    cm_watch_fn *on_io;
    void *owner;
    struct cm_watch *next_dead;
};

/* Add fd with EPOLL* events; NULL (res filled) on failure.  The fd stays
 * owned by the caller, who closes it after cm_loop_watch_del. */
struct cm_watch *cm_loop_watch_add(struct cm_loop *loop, int fd, uint32_t events,
                                   cm_watch_fn *on_io, void *owner, struct cm_result *res);
/* Change the interest set; CM_ERR when epoll refuses. */
int cm_loop_watch_mod(struct cm_loop *loop, struct cm_watch *w, uint32_t events,
                      struct cm_result *res);
/* Unregister (before the fd is closed) and release; NULL is fine. */
void cm_loop_watch_del(struct cm_loop *loop, struct cm_watch *w);

/* An internal timer on the monotonic clock, embedded in its owner. */
struct cm_itimer;
typedef void cm_itimer_fn(struct cm_loop *loop, struct cm_itimer *t);
struct cm_itimer {
    double deadline;    /* cm_clock_monotonic() seconds */
    size_t idx;         /* heap slot + 1; 0 = not armed */
    cm_itimer_fn *fire;
};

/* Arm (or re-arm) t at a monotonic deadline; CM_ERR when out of memory. */
int cm_loop_itimer_set(struct cm_loop *loop, struct cm_itimer *t, double deadline,
                       struct cm_result *res);
/* Disarm; harmless when not armed. */
void cm_loop_itimer_stop(struct cm_loop *loop, struct cm_itimer *t);

/* Kinds of things the id map holds. */
enum cm_id_kind { CM_ID_TIMER = 1, CM_ID_DEADLINE, CM_ID_HTTP, CM_ID_EXEC, CM_ID_SERVER,
                  CM_ID_HTTPD_REQUEST, CM_ID_TLS_SERVER };

/* A fresh id (never 0). */
uint64_t cm_loop_new_id(struct cm_loop *loop);
/* Map id -> (kind, ptr); CM_ERR when out of memory. */
int cm_loop_id_put(struct cm_loop *loop, uint64_t id, enum cm_id_kind kind, void *ptr,
                   struct cm_result *res);
/* The object for id when it has that kind, else NULL. */
void *cm_loop_id_get(struct cm_loop *loop, uint64_t id, enum cm_id_kind kind);
void cm_loop_id_del(struct cm_loop *loop, uint64_t id);

/* A zeroed event of a kind (NULL when out of memory). */
struct cm_event *cm_event_new(enum cm_event_kind kind, uint64_t id);
/* Queue ev (the loop owns it). */
void cm_loop_post(struct cm_loop *loop, struct cm_event *ev);

/* A growable byte buffer with a hard cap. */
struct cm_buf {
    char *data;
    size_t len, cap;
};
/* Append n bytes, keeping a NUL after them; CM_ERR when out of memory. */
int cm_buf_append(struct cm_buf *b, const void *p, size_t n);
void cm_buf_free(struct cm_buf *b);

/* Set O_NONBLOCK; CM_ERR with errno otherwise. */
int cm_fd_nonblock(int fd);

/* Per-unit hooks the loop calls (each unit owns its state in the loop). */
struct cm_http_state;
struct cm_proc_state;
struct cm_httpd_state;
struct cm_tlsalpn_state;
struct cm_work_state;
struct cm_http_state **cm_loop_http_slot(struct cm_loop *loop);
struct cm_proc_state **cm_loop_proc_slot(struct cm_loop *loop);
struct cm_httpd_state **cm_loop_httpd_slot(struct cm_loop *loop);
struct cm_tlsalpn_state **cm_loop_tlsalpn_slot(struct cm_loop *loop);
struct cm_work_state **cm_loop_work_slot(struct cm_loop *loop);

/* http.c */
int cm_http_init(struct cm_loop *loop, struct cm_result *res);
void cm_http_reset(struct cm_loop *loop);   /* cancel all transfers */
void cm_http_destroy(struct cm_loop *loop); /* also the multi handle */
size_t cm_http_count(struct cm_loop *loop);
/* proc.c */
int cm_proc_init(struct cm_loop *loop, struct cm_result *res);
void cm_proc_reset(struct cm_loop *loop);   /* kill all; reap in background */
void cm_proc_destroy(struct cm_loop *loop); /* kill all and reap now */
size_t cm_proc_count(struct cm_loop *loop);
void cm_proc_on_sigchld(struct cm_loop *loop);
/* httpd.c */
int cm_httpd_init(struct cm_loop *loop, struct cm_result *res);
void cm_httpd_reset(struct cm_loop *loop);  /* close all servers */
void cm_httpd_destroy(struct cm_loop *loop);
size_t cm_httpd_count(struct cm_loop *loop);
/* tlsalpn.c */
int cm_tlsalpn_init(struct cm_loop *loop, struct cm_result *res);
void cm_tlsalpn_reset(struct cm_loop *loop);  /* close all servers */
void cm_tlsalpn_destroy(struct cm_loop *loop);
size_t cm_tlsalpn_count(struct cm_loop *loop);
/* work.c */
int cm_work_init(struct cm_loop *loop, struct cm_result *res);
void cm_work_reset(struct cm_loop *loop);   /* drop queued jobs, wait for running ones */
void cm_work_destroy(struct cm_loop *loop); /* the same, then join the threads */

/* loop.c: SIGCHLD through the signalfd, for systems without pidfd.
 * CM_ERR when the signalfd cannot be set up. */
int cm_loop_want_sigchld(struct cm_loop *loop, struct cm_result *res);
/* The signals a spawned child must get back at their defaults. */
void cm_loop_child_sigdefaults(struct cm_loop *loop, void *sigset_out /* sigset_t * */);

#endif
