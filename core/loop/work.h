/* work.h - blocking jobs on a small pool of worker threads.
 *
 * Some work cannot be made non-blocking (fsync above all): it runs on a
 * worker thread while the loop goes on.  A job is a function and its
 * argument; the pool runs `run(arg)` on one of its threads (started on
 * first use, at most CM_WORK_THREADS), then, back on the loop thread, calls
 * `done(arg, 1)` and queues a CM_EVENT_WORK with the job's id.  `run` must
 * not touch the loop, Lua or anything else the loop thread uses without a
 * lock: it gets arg and nothing else.
 *
 * A job is never cancelled once running.  cm_loop_reset and
 * cm_loop_shutdown wait for the running jobs to finish (done(arg, 1), no
 * event) and drop the queued ones that had not started (done(arg, 0)):
 * a job is either not started or finished, never abandoned halfway.
 * Worker threads block every signal, so signals stay the loop's.
 */
#ifndef CM_WORK_H
#define CM_WORK_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "result.h"

#define CM_WORK_THREADS 4

typedef void cm_work_fn(void *arg);
/* ran: 1 when run(arg) completed, 0 when the job was dropped unstarted. */
typedef void cm_work_done_fn(void *arg, int ran);

/* Queue a job; its id (the CM_EVENT_WORK's), or 0 with res filled ("ENOMEM",
 * "thread": no worker could be started, "eventfd"). */
uint64_t cm_work_submit(struct cm_loop *loop, cm_work_fn *run, cm_work_done_fn *done, void *arg,
                        struct cm_result *res);

/* Jobs submitted and not yet reported (queued, running or finished but not
 * yet seen by the loop). */
size_t cm_work_count(struct cm_loop *loop);

/* Worker threads started so far (tests). */
size_t cm_work_threads(struct cm_loop *loop);

#endif
