/* work.c - the worker pool behind cm_work_submit (see work.h).
 *
 * One mutex guards two lists: the queue (submitted, not started) and the
 * finished jobs.  A worker that finishes a job moves it to the finished
 * list and bumps an eventfd the loop watches; the loop thread then takes
 * the list, calls each job's done() and queues its event.  So done() and
 * the events only ever happen on the loop thread.
 */
#include "work.h"
#include "loop_impl.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct work_item {
    struct work_item *next;
    uint64_t id;
    cm_work_fn *run;
    cm_work_done_fn *done;
    void *arg;
};

struct work_list {
    struct work_item *head, *tail;
};

struct cm_work_state {
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a job was queued, or the pool is stopping */
    pthread_cond_t drained;   /* running went to 0 */
    struct work_list queue, finished;
    size_t running, idle;     /* workers in run(), workers waiting for a job */
    int stopping;
    pthread_t threads[CM_WORK_THREADS];
    size_t nthreads;
    int efd;
    struct cm_watch *watch;
    size_t outstanding;       /* loop thread only: submitted, not yet reported */
};

static struct cm_work_state *state(struct cm_loop *loop) { return *cm_loop_work_slot(loop); }

static void list_push(struct work_list *l, struct work_item *it)
{
    it->next = NULL;
    if (l->tail) l->tail->next = it; else l->head = it;
    l->tail = it;
}

static struct work_item *list_take(struct work_list *l)
{
    struct work_item *all = l->head;
    l->head = l->tail = NULL;
    return all;
}

static void *worker_main(void *p)
{
    struct cm_work_state *s = p;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        struct work_item *it;
        while (!s->queue.head && !s->stopping) {
            s->idle++;
            pthread_cond_wait(&s->wake, &s->mu);
            s->idle--;
        }
        if (!s->queue.head) break; /* stopping, and nothing left that was queued */
        it = s->queue.head;
        s->queue.head = it->next;
        if (!s->queue.head) s->queue.tail = NULL;
        s->running++;
        pthread_mutex_unlock(&s->mu);

        it->run(it->arg);

        pthread_mutex_lock(&s->mu);
        s->running--;
        list_push(&s->finished, it);
        {
            uint64_t one = 1;
            /* EAGAIN only if the counter would overflow: the loop is awake anyway */
            ssize_t n = write(s->efd, &one, sizeof one);
            (void)n;
        }
        if (s->running == 0) pthread_cond_broadcast(&s->drained);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Start one more worker, with every signal blocked (a thread inherits its
 * creator's mask): a SIGTERM must reach the loop's signalfd, not a worker. */
static int start_worker(struct cm_work_state *s, struct cm_result *res)
{
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->threads[s->nthreads], NULL, worker_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return cm_fail(res, "thread", "cannot start a worker thread: %s", strerror(rc));
    s->nthreads++;
    return CM_OK;
}

/* Report finished jobs: done(arg, 1) and a CM_EVENT_WORK each (post = 0:
 * no event, for reset and shutdown, which drop events anyway). */
static void report(struct cm_loop *loop, struct cm_work_state *s, struct work_item *it, int post)
{
    while (it) {
        struct work_item *next = it->next;
        struct cm_event *ev = NULL;
        if (post && !(ev = cm_event_new(CM_EVENT_WORK, it->id))) {
            /* out of memory: keep the rest for the next wake-up rather than lose them */
            uint64_t one = 1;
            ssize_t n;
            pthread_mutex_lock(&s->mu);
            while (it) {
                next = it->next;
                list_push(&s->finished, it);
                it = next;
            }
            pthread_mutex_unlock(&s->mu);
            n = write(s->efd, &one, sizeof one);
            (void)n;
            return;
        }
        s->outstanding--;
        if (it->done) it->done(it->arg, 1);
        if (ev) cm_loop_post(loop, ev);
        free(it);
        it = next;
    }
}

static void on_eventfd(struct cm_loop *loop, struct cm_watch *w, uint32_t revents)
{
    struct cm_work_state *s = state(loop);
    uint64_t n;
    struct work_item *done;
    (void)revents;
    while (read(w->fd, &n, sizeof n) < 0 && errno == EINTR) {}
    pthread_mutex_lock(&s->mu);
    done = list_take(&s->finished);
    pthread_mutex_unlock(&s->mu);
    report(loop, s, done, 1);
}

int cm_work_init(struct cm_loop *loop, struct cm_result *res)
{
    struct cm_work_state *s = calloc(1, sizeof *s);
    if (!s) return cm_fail(res, "ENOMEM", "out of memory");
    s->efd = -1;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return cm_fail(res, "thread", "cannot make the worker pool's mutex");
    }
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->drained, NULL);
    *cm_loop_work_slot(loop) = s;
    return CM_OK;
}

/* The eventfd, made on the first submit: a process that never submits a job
 * pays nothing. */
static int ensure_eventfd(struct cm_loop *loop, struct cm_work_state *s, struct cm_result *res)
{
    if (s->efd >= 0) return CM_OK;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) return cm_fail(res, "eventfd", "eventfd: %s", strerror(errno));
    s->watch = cm_loop_watch_add(loop, s->efd, EPOLLIN, on_eventfd, NULL, res);
    if (!s->watch) {
        close(s->efd);
        s->efd = -1;
        return CM_ERR;
    }
    return CM_OK;
}

uint64_t cm_work_submit(struct cm_loop *loop, cm_work_fn *run, cm_work_done_fn *done, void *arg,
                        struct cm_result *res)
{
    struct cm_work_state *s = state(loop);
    struct work_item *it;
    if (!s || !run) {
        cm_fail(res, "invalid", "no worker pool or no job function");
        return 0;
    }
    if (ensure_eventfd(loop, s, res) != CM_OK) return 0;
    it = calloc(1, sizeof *it);
    if (!it) {
        cm_fail(res, "ENOMEM", "out of memory");
        return 0;
    }
    it->id = cm_loop_new_id(loop);
    it->run = run;
    it->done = done;
    it->arg = arg;
    pthread_mutex_lock(&s->mu);
    /* one more thread when none is free to take it, up to the cap; failing
     * to start one is only an error when there is none at all */
    if (s->idle == 0 && s->nthreads < CM_WORK_THREADS && start_worker(s, res) != CM_OK &&
        s->nthreads == 0) {
        pthread_mutex_unlock(&s->mu);
        free(it);
        return 0;
    }
    list_push(&s->queue, it);
    s->outstanding++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    return it->id;
}

size_t cm_work_count(struct cm_loop *loop)
{
    struct cm_work_state *s = state(loop);
    return s ? s->outstanding : 0;
}

size_t cm_work_threads(struct cm_loop *loop)
{
    struct cm_work_state *s = state(loop);
    size_t n;
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    n = s->nthreads;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void cm_work_reset(struct cm_loop *loop)
{
    struct cm_work_state *s = state(loop);
    struct work_item *dropped, *done;
    uint64_t n;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    dropped = list_take(&s->queue);
    pthread_mutex_unlock(&s->mu);
    /* the dropped ones first: nothing of theirs runs, so their owners may
     * let go of them before the running ones finish */
    while (dropped) {
        struct work_item *next = dropped->next;
        s->outstanding--;
        if (dropped->done) dropped->done(dropped->arg, 0);
        free(dropped);
        dropped = next;
    }
    pthread_mutex_lock(&s->mu);
    while (s->running > 0) pthread_cond_wait(&s->drained, &s->mu);
    done = list_take(&s->finished);
    pthread_mutex_unlock(&s->mu);
    report(loop, s, done, 0);
    if (s->efd >= 0) (void)!read(s->efd, &n, sizeof n);
}

void cm_work_destroy(struct cm_loop *loop)
{
    struct cm_work_state *s = state(loop);
    size_t i;
    if (!s) return;
    cm_work_reset(loop);
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->mu);
    for (i = 0; i < s->nthreads; i++) pthread_join(s->threads[i], NULL);
    if (s->watch) cm_loop_watch_del(loop, s->watch);
    if (s->efd >= 0) close(s->efd);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *cm_loop_work_slot(loop) = NULL;
}
