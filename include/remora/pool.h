/* remora/pool.h: the worker thread pool.
 *
 * A pool is N threads that take jobs from one bounded FIFO queue. A job is a
 * function and an argument; it may block (a socket read, a file, a long
 * computation) without stalling the event loop. Serial queues give jobs that
 * must not overlap: they run one at a time, in the order submitted, on whichever
 * worker is free, so an idle serial queue holds no thread.
 *
 * The pool holds its own mutex only to move jobs around, never while a job runs.
 * It knows nothing of Lua: a user that needs a lock around its jobs (remora's
 * Lua lock) takes it inside its own job function. See docs/threads.md.
 */
#ifndef REMORA_POOL_H
#define REMORA_POOL_H

#include <stddef.h>
#include "remora/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rm_pool rm_pool;
typedef struct rm_pool_queue rm_pool_queue;

/* A job. The pool calls it exactly once: with status RM_OK on a worker to do
 * the work, or with status RM_ECLOSED on the thread that called rm_pool_stop()
 * (or rm_pool_free()) when the pool shut down before the job started. A
 * cancelled job must only release what arg holds. */
typedef void (*rm_job_fn)(void *arg, int status);

typedef struct rm_pool_config {
  int threads;        /* workers; < 0: online CPUs, at least 2. 0 is allowed:
                       * submitting then fails with RM_EINVAL until a resize */
  int max_threads;    /* bound for threads and rm_pool_resize(); 0: 256 */
  int max_pending;    /* queued jobs not yet running, serial queues included;
                       * 0: 4096 */
  size_t stack_size;  /* per worker; 0: the system default */
  rm_alloc_fn alloc;  /* NULL: realloc/free. Called from any thread. */
  void *alloc_ud;
} rm_pool_config;

typedef struct rm_pool_stats {
  int threads;  /* workers alive and not leaving */
  int pending;  /* submitted, not yet started */
  int running;  /* started, not yet returned */
} rm_pool_stats;

/* cfg may be NULL for the defaults. Returns NULL when memory or threads ran
 * out, or when cfg asks for more threads than max_threads. */
rm_pool *rm_pool_new(const rm_pool_config *cfg);

/* Queues fn(arg, RM_OK) to run on a worker. Returns the number of jobs
 * pending after this one was queued (>= 1), or RM_EINVAL (fn is NULL, or the
 * pool has zero threads), RM_EFULL, RM_ENOMEM, RM_ECLOSED (stopping). */
int rm_pool_submit(rm_pool *pool, rm_job_fn fn, void *arg);

/* Runs work(arg, RM_OK) on a worker, then done(arg, status) on the loop's
 * thread through rm_loop_post(). done always runs exactly once: status is RM_OK
 * after work ran, RM_ECLOSED when the pool shut down first (work is skipped).
 * Should rm_loop_post() itself fail, done runs on the worker with that error,
 * so it must then touch nothing but arg. Returns as rm_pool_submit(). */
int rm_pool_submit_then(rm_pool *pool, rm_loop *loop, rm_job_fn work, rm_job_fn done, void *arg);

/* Changes the number of workers (n < 0: online CPUs, at least 2). Growing
 * starts threads now; shrinking lets running jobs finish, then their threads
 * leave. Returns RM_OK, RM_EFULL (n > max_threads), RM_ECLOSED, or RM_ENOMEM /
 * RM_EIO when threads could not be started (those that did keep running). */
int rm_pool_resize(rm_pool *pool, int n);

void rm_pool_stats_get(rm_pool *pool, rm_pool_stats *out);

/* Serial queues. A queue belongs to its pool; the submit calls return as their
 * rm_pool_ counterparts, and their jobs count against the pool's max_pending.
 * rm_pool_queue_free() refuses new jobs at once and releases the queue after
 * its queued jobs ran; rm_pool_free() releases queues still open. */
rm_pool_queue *rm_pool_queue_new(rm_pool *pool);
int rm_pool_queue_submit(rm_pool_queue *q, rm_job_fn fn, void *arg);
int rm_pool_queue_submit_then(rm_pool_queue *q, rm_loop *loop, rm_job_fn work, rm_job_fn done, void *arg);
void rm_pool_queue_free(rm_pool_queue *q);

/* Shutdown, in two steps so the caller can wake blocked jobs in between.
 * rm_pool_stop() refuses new jobs, cancels the queued ones (calling each with
 * RM_ECLOSED, on the caller's thread) and tells the workers to leave once their
 * job returns. It does not wait. A job blocked in a system call is not
 * interrupted: blocking code checks rm_pool_stopping(), and the caller wakes
 * blocked sockets with shutdown(2) (or the write end of a pipe with close).
 * rm_pool_free() stops the pool if needed, waits up to deadline_ms (< 0: no
 * limit) for the running jobs, joins the workers and frees everything. If jobs
 * still run at the deadline it returns RM_ETIMEDOUT and frees nothing: the
 * pool stays valid, stopped, and rm_pool_free() may be called again. */
void rm_pool_stop(rm_pool *pool);
int rm_pool_stopping(rm_pool *pool);
int rm_pool_free(rm_pool *pool, int deadline_ms);

#ifdef __cplusplus
}
#endif
#endif
