/* The worker thread pool: see include/remora/pool.h and docs/threads.md.
 *
 * One mutex guards everything. Workers sleep on work_cv until the FIFO has a
 * job or they are asked to leave; rm_pool_free() sleeps on exit_cv until the
 * last worker left. A serial queue keeps its own FIFO and feeds the pool's
 * FIFO one job at a time: the next job moves over only when the previous one
 * returned, so its jobs never overlap and keep their order.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "remora/pool.h"

enum { DEFAULT_MAX_THREADS = 256, DEFAULT_MAX_PENDING = 4096 };

typedef struct job {
  struct job *next;
  rm_job_fn fn;
  void *arg;
  rm_pool_queue *queue; /* the serial queue it came from, or NULL */
} job;

typedef struct joblist {
  job *head, *tail;
} joblist;

typedef struct worker {
  struct worker *next;
  rm_pool *pool;
  pthread_t tid;
  int exited; /* the thread returned, or is about to: join it */
} worker;

struct rm_pool_queue {
  rm_pool_queue *prev, *next; /* the pool's list of queues */
  rm_pool *pool;
  joblist jobs; /* waiting behind the one in flight */
  int busy;     /* one of its jobs is in the pool's FIFO or running */
  int closed;   /* rm_pool_queue_free() was called */
};

struct rm_pool {
  pthread_mutex_t lock;
  pthread_cond_t work_cv; /* workers: a job arrived, or leave */
  pthread_cond_t exit_cv; /* rm_pool_free(): a worker left */
  joblist jobs;
  rm_pool_queue *queues;
  worker *workers;
  int threads; /* workers alive and not leaving */
  int target;  /* what rm_pool_resize() asked for */
  int pending, running;
  int stopping;
  int max_threads, max_pending;
  size_t stack_size;
  rm_alloc_fn alloc;
  void *alloc_ud;
};

/* The submit_then record. It outlives its job on the way to the loop thread,
 * maybe the pool too, so it carries the allocator that frees it. */
typedef struct then {
  rm_loop *loop;
  rm_job_fn work, done;
  void *arg;
  int status;
  rm_alloc_fn alloc;
  void *alloc_ud;
} then;

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

static void *pool_alloc(rm_pool *pool, size_t n) {
  return pool->alloc(pool->alloc_ud, NULL, 0, n);
}

static void pool_free_mem(rm_pool *pool, void *p, size_t n) {
  pool->alloc(pool->alloc_ud, p, n, 0);
}

static void list_push(joblist *l, job *j) {
  j->next = NULL;
  if (l->tail) l->tail->next = j;
  else l->head = j;
  l->tail = j;
}

static job *list_pop(joblist *l) {
  job *j = l->head;
  if (j) {
    l->head = j->next;
    if (!l->head) l->tail = NULL;
  }
  return j;
}

/* Moves all of src to the end of dst. */
static void list_append(joblist *dst, joblist *src) {
  if (!src->head) return;
  if (dst->tail) dst->tail->next = src->head;
  else dst->head = src->head;
  dst->tail = src->tail;
  src->head = src->tail = NULL;
}

static int resolve_threads(int n) {
  if (n >= 0) return n;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus < 2 ? 2 : (int)cpus;
}

/* ---- workers ---- */

/* Called with the lock held: takes a queue off the pool's list. */
static void queue_unlink(rm_pool *pool, rm_pool_queue *q) {
  if (q->prev) q->prev->next = q->next;
  else pool->queues = q->next;
  if (q->next) q->next->prev = q->prev;
}

/* Called with the lock held after a serial queue's job returned: hands its
 * next job to the pool's FIFO, or marks it idle. Returns the queue if it is
 * now closed and idle, for the caller to free. */
static rm_pool_queue *queue_advance(rm_pool *pool, rm_pool_queue *q) {
  job *next = list_pop(&q->jobs);
  if (next) {
    list_push(&pool->jobs, next);
    pthread_cond_signal(&pool->work_cv);
    return NULL;
  }
  q->busy = 0;
  if (!q->closed) return NULL;
  queue_unlink(pool, q);
  return q;
}

static void *worker_main(void *ud) {
  worker *w = ud;
  rm_pool *pool = w->pool;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (!pool->jobs.head && pool->threads <= pool->target)
      pthread_cond_wait(&pool->work_cv, &pool->lock);
    if (pool->threads > pool->target) break;
    job *j = list_pop(&pool->jobs);
    pool->pending--;
    pool->running++;
    pthread_mutex_unlock(&pool->lock);

    rm_pool_queue *q = j->queue;
    j->fn(j->arg, RM_OK);
    pool_free_mem(pool, j, sizeof *j);

    pthread_mutex_lock(&pool->lock);
    pool->running--;
    if (q && (q = queue_advance(pool, q))) pool_free_mem(pool, q, sizeof *q);
  }
  pool->threads--;
  w->exited = 1;
  pthread_cond_broadcast(&pool->exit_cv);
  /* Another worker may be needed for the job this one leaves behind. */
  if (pool->jobs.head) pthread_cond_signal(&pool->work_cv);
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

/* Called with the lock held. Workers block every signal they can, so that
 * signals go to the threads that expect them. */
static int spawn_worker(rm_pool *pool) {
  worker *w = pool_alloc(pool, sizeof *w);
  if (!w) return RM_ENOMEM;
  w->pool = pool;
  w->exited = 0;

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  int rc = pool->stack_size ? pthread_attr_setstacksize(&attr, pool->stack_size) : 0;
  if (rc == 0) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&w->tid, &attr, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    pool_free_mem(pool, w, sizeof *w);
    return rc == EINVAL ? RM_EINVAL : RM_EIO; /* EINVAL: a bad stack_size */
  }
  w->next = pool->workers;
  pool->workers = w;
  pool->threads++;
  return RM_OK;
}

/* Joins and frees the workers that left. Takes the lock only to unlink them:
 * joining while holding it would wait on a thread that wants it. */
static void reap_workers(rm_pool *pool) {
  worker *gone = NULL, **pw;
  pthread_mutex_lock(&pool->lock);
  for (pw = &pool->workers; *pw;) {
    worker *w = *pw;
    if (w->exited) {
      *pw = w->next;
      w->next = gone;
      gone = w;
    } else {
      pw = &w->next;
    }
  }
  pthread_mutex_unlock(&pool->lock);
  while (gone) {
    worker *next = gone->next;
    pthread_join(gone->tid, NULL);
    pool_free_mem(pool, gone, sizeof *gone);
    gone = next;
  }
}

/* ---- the pool ---- */

rm_pool *rm_pool_new(const rm_pool_config *cfg) {
  rm_pool_config def = {.threads = -1};
  if (!cfg) cfg = &def;
  rm_alloc_fn alloc = cfg->alloc ? cfg->alloc : default_alloc;
  int max_threads = cfg->max_threads > 0 ? cfg->max_threads : DEFAULT_MAX_THREADS;
  int threads = resolve_threads(cfg->threads);
  if (threads > max_threads) return NULL;

  rm_pool *pool = alloc(cfg->alloc_ud, NULL, 0, sizeof *pool);
  if (!pool) return NULL;
  *pool = (rm_pool){0};
  pool->alloc = alloc;
  pool->alloc_ud = cfg->alloc_ud;
  pool->max_threads = max_threads;
  pool->max_pending = cfg->max_pending > 0 ? cfg->max_pending : DEFAULT_MAX_PENDING;
  pool->stack_size = cfg->stack_size;

  /* rm_pool_free() waits with a deadline: measure it on a clock that does
   * not jump. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->work_cv, NULL);
  pthread_cond_init(&pool->exit_cv, &ca);
  pthread_condattr_destroy(&ca);

  if (rm_pool_resize(pool, threads) != RM_OK) {
    rm_pool_free(pool, -1);
    return NULL;
  }
  return pool;
}

int rm_pool_resize(rm_pool *pool, int n) {
  int rc = RM_OK;
  n = resolve_threads(n);
  pthread_mutex_lock(&pool->lock);
  if (pool->stopping) rc = RM_ECLOSED;
  else if (n > pool->max_threads) rc = RM_EFULL;
  else {
    pool->target = n;
    while (rc == RM_OK && pool->threads < n) rc = spawn_worker(pool);
    if (rc != RM_OK) pool->target = pool->threads;
    if (pool->threads > pool->target) pthread_cond_broadcast(&pool->work_cv);
  }
  pthread_mutex_unlock(&pool->lock);
  reap_workers(pool);
  return rc;
}

void rm_pool_stats_get(rm_pool *pool, rm_pool_stats *out) {
  pthread_mutex_lock(&pool->lock);
  out->threads = pool->threads;
  out->pending = pool->pending;
  out->running = pool->running;
  pthread_mutex_unlock(&pool->lock);
}

/* The one way in for every submit call: q is NULL for the pool's own FIFO. */
static int submit(rm_pool *pool, rm_pool_queue *q, rm_job_fn fn, void *arg) {
  if (!fn) return RM_EINVAL;
  job *j = pool_alloc(pool, sizeof *j);
  if (!j) return RM_ENOMEM;
  j->fn = fn;
  j->arg = arg;
  j->queue = q;

  int rc;
  pthread_mutex_lock(&pool->lock);
  if (pool->stopping || (q && q->closed)) rc = RM_ECLOSED;
  else if (pool->target == 0) rc = RM_EINVAL; /* nobody would ever run it */
  else if (pool->pending >= pool->max_pending) rc = RM_EFULL;
  else {
    if (q && q->busy) {
      list_push(&q->jobs, j);
    } else {
      if (q) q->busy = 1;
      list_push(&pool->jobs, j);
      pthread_cond_signal(&pool->work_cv);
    }
    rc = ++pool->pending;
  }
  pthread_mutex_unlock(&pool->lock);
  if (rc < 0) pool_free_mem(pool, j, sizeof *j);
  return rc;
}

int rm_pool_submit(rm_pool *pool, rm_job_fn fn, void *arg) {
  return submit(pool, NULL, fn, arg);
}

/* ---- results back to the loop ---- */

static void then_finish(then *t, int status) {
  t->done(t->arg, status);
  t->alloc(t->alloc_ud, t, sizeof *t, 0);
}

static void then_done(void *ud) {
  then *t = ud;
  then_finish(t, t->status);
}

static void then_run(void *ud, int status) {
  then *t = ud;
  if (status == RM_OK) t->work(t->arg, RM_OK);
  t->status = status;
  int rc = rm_loop_post(t->loop, then_done, t);
  if (rc != RM_OK) then_finish(t, rc);
}

static int submit_then(rm_pool *pool, rm_pool_queue *q, rm_loop *loop, rm_job_fn work,
                       rm_job_fn done, void *arg) {
  if (!loop || !work || !done) return RM_EINVAL;
  then *t = pool_alloc(pool, sizeof *t);
  if (!t) return RM_ENOMEM;
  *t = (then){loop, work, done, arg, RM_OK, pool->alloc, pool->alloc_ud};
  int rc = submit(pool, q, then_run, t);
  if (rc < 0) pool_free_mem(pool, t, sizeof *t);
  return rc;
}

int rm_pool_submit_then(rm_pool *pool, rm_loop *loop, rm_job_fn work, rm_job_fn done, void *arg) {
  return submit_then(pool, NULL, loop, work, done, arg);
}

/* ---- serial queues ---- */

rm_pool_queue *rm_pool_queue_new(rm_pool *pool) {
  rm_pool_queue *q = pool_alloc(pool, sizeof *q);
  if (!q) return NULL;
  *q = (rm_pool_queue){.pool = pool};
  pthread_mutex_lock(&pool->lock);
  if (pool->stopping) {
    pthread_mutex_unlock(&pool->lock);
    pool_free_mem(pool, q, sizeof *q);
    return NULL;
  }
  q->next = pool->queues;
  if (q->next) q->next->prev = q;
  pool->queues = q;
  pthread_mutex_unlock(&pool->lock);
  return q;
}

int rm_pool_queue_submit(rm_pool_queue *q, rm_job_fn fn, void *arg) {
  return submit(q->pool, q, fn, arg);
}

int rm_pool_queue_submit_then(rm_pool_queue *q, rm_loop *loop, rm_job_fn work, rm_job_fn done,
                              void *arg) {
  return submit_then(q->pool, q, loop, work, done, arg);
}

void rm_pool_queue_free(rm_pool_queue *q) {
  rm_pool *pool = q->pool;
  pthread_mutex_lock(&pool->lock);
  q->closed = 1;
  if (q->busy) q = NULL; /* the worker that runs its last job frees it */
  else queue_unlink(pool, q);
  pthread_mutex_unlock(&pool->lock);
  if (q) pool_free_mem(pool, q, sizeof *q);
}

/* ---- shutdown ---- */

void rm_pool_stop(rm_pool *pool) {
  joblist cancel = {0};
  pthread_mutex_lock(&pool->lock);
  if (!pool->stopping) {
    pool->stopping = 1;
    pool->target = 0;
    /* The pool's FIFO first: it holds the oldest job of each busy queue. */
    list_append(&cancel, &pool->jobs);
    for (rm_pool_queue *q = pool->queues; q; q = q->next) list_append(&cancel, &q->jobs);
    pool->pending = 0;
    pthread_cond_broadcast(&pool->work_cv);
  }
  pthread_mutex_unlock(&pool->lock);
  /* Cancelled jobs run on this thread, without the lock, like any job. */
  for (job *j; (j = list_pop(&cancel));) {
    j->fn(j->arg, RM_ECLOSED);
    pool_free_mem(pool, j, sizeof *j);
  }
}

int rm_pool_stopping(rm_pool *pool) {
  pthread_mutex_lock(&pool->lock);
  int stopping = pool->stopping;
  pthread_mutex_unlock(&pool->lock);
  return stopping;
}

/* Waits, with the lock held, until no worker is alive or the deadline passed. */
static int wait_workers(rm_pool *pool, int deadline_ms) {
  struct timespec until = {0};
  if (deadline_ms >= 0) {
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += deadline_ms / 1000;
    until.tv_nsec += (long)(deadline_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  }
  while (pool->threads > 0) {
    int rc = deadline_ms < 0 ? pthread_cond_wait(&pool->exit_cv, &pool->lock)
                             : pthread_cond_timedwait(&pool->exit_cv, &pool->lock, &until);
    if (rc == ETIMEDOUT && pool->threads > 0) return RM_ETIMEDOUT;
  }
  return RM_OK;
}

int rm_pool_free(rm_pool *pool, int deadline_ms) {
  rm_pool_stop(pool);
  pthread_mutex_lock(&pool->lock);
  int rc = wait_workers(pool, deadline_ms);
  pthread_mutex_unlock(&pool->lock);
  if (rc != RM_OK) return rc;
  reap_workers(pool);

  while (pool->queues) {
    rm_pool_queue *q = pool->queues;
    pool->queues = q->next;
    pool_free_mem(pool, q, sizeof *q);
  }
  pthread_mutex_destroy(&pool->lock);
  pthread_cond_destroy(&pool->work_cv);
  pthread_cond_destroy(&pool->exit_cv);
  pool_free_mem(pool, pool, sizeof *pool);
  return RM_OK;
}
