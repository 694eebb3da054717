/* The worker thread pool: jobs run exactly once, serial queues keep order,
 * resizing, bounds, shutdown with blocked and queued jobs, results posted back
 * to a real event loop. Waits are on condition variables, never on time; every
 * wait has a generous bound so a broken pool fails instead of hanging. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "remora/loop.h"
#include "remora/pool.h"
#include "tests/unit/check.h"

enum { BOUND_MS = 10000 };

/* ---- a counter threads can wait on ---- */

typedef struct counter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int n;
} counter;

static void counter_init(counter *c) {
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->n = 0;
}

static void counter_destroy(counter *c) {
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
}

static void counter_add(counter *c, int d) {
  pthread_mutex_lock(&c->mu);
  c->n += d;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int counter_get(counter *c) {
  pthread_mutex_lock(&c->mu);
  int n = c->n;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* Waits until the counter reaches at least n; returns 0 if the bound passed. */
static int counter_wait(counter *c, int n) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += BOUND_MS / 1000;
  int ok = 1;
  pthread_mutex_lock(&c->mu);
  while (c->n < n && ok) ok = pthread_cond_timedwait(&c->cv, &c->mu, &until) == 0 || c->n >= n;
  pthread_mutex_unlock(&c->mu);
  return ok;
}

/* Polls a pool until it has the given number of threads (they leave
 * asynchronously after a shrink). Returns 0 if the bound passed. */
static int wait_threads(rm_pool *pool, int n) {
  for (int i = 0; i < BOUND_MS; i++) {
    rm_pool_stats st;
    rm_pool_stats_get(pool, &st);
    if (st.threads == n) return 1;
    usleep(1000);
  }
  return 0;
}

/* ---- jobs ---- */

/* Counts runs per slot: each slot must end at exactly 1. */
typedef struct tally {
  counter done;
  int *runs;
  int cancelled;
} tally;

typedef struct slot {
  tally *t;
  int i;
} slot;

static void tally_job(void *arg, int status) {
  slot *s = arg;
  if (status == RM_OK) __atomic_fetch_add(&s->t->runs[s->i], 1, __ATOMIC_RELAXED);
  else __atomic_fetch_add(&s->t->cancelled, 1, __ATOMIC_RELAXED);
  counter_add(&s->t->done, 1);
}

/* Blocks until a gate opens, after saying it started. */
typedef struct gate {
  counter started, open;
} gate;

static void gate_job(void *arg, int status) {
  gate *g = arg;
  if (status != RM_OK) return;
  counter_add(&g->started, 1);
  counter_wait(&g->open, 1);
}

static void gate_init(gate *g) {
  counter_init(&g->started);
  counter_init(&g->open);
}

static void gate_destroy(gate *g) {
  counter_destroy(&g->started);
  counter_destroy(&g->open);
}

/* ---- many submitters ---- */

enum { SUBMITTERS = 8, PER_SUBMITTER = 4000 };

typedef struct submitter {
  rm_pool *pool;
  slot *slots;
  int rejected;
} submitter;

static void *submit_many(void *arg) {
  submitter *s = arg;
  for (int i = 0; i < PER_SUBMITTER; i++) {
    int rc;
    /* A full queue is the submitter's problem: it waits and retries. */
    while ((rc = rm_pool_submit(s->pool, tally_job, &s->slots[i])) == RM_EFULL) usleep(100);
    if (rc < 1) s->rejected++;
  }
  return NULL;
}

static void test_many_submitters_run_once(void) {
  enum { N = SUBMITTERS * PER_SUBMITTER };
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 4, .max_pending = 512});
  CHECK(pool != NULL);
  if (!pool) return;
  tally t = {.runs = calloc(N, sizeof(int))};
  slot *slots = malloc(N * sizeof *slots);
  counter_init(&t.done);
  for (int i = 0; i < N; i++) slots[i] = (slot){&t, i};

  pthread_t th[SUBMITTERS];
  submitter sub[SUBMITTERS];
  for (int i = 0; i < SUBMITTERS; i++) {
    sub[i] = (submitter){pool, slots + i * PER_SUBMITTER, 0};
    pthread_create(&th[i], NULL, submit_many, &sub[i]);
  }
  for (int i = 0; i < SUBMITTERS; i++) {
    pthread_join(th[i], NULL);
    CHECK_EQ(sub[i].rejected, 0);
  }
  CHECK(counter_wait(&t.done, N));
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);

  int bad = 0;
  for (int i = 0; i < N; i++) bad += t.runs[i] != 1;
  CHECK_EQ(bad, 0);
  CHECK_EQ(t.cancelled, 0);
  counter_destroy(&t.done);
  free(t.runs);
  free(slots);
}

/* ---- serial queues ---- */

enum { QUEUES = 4, PER_QUEUE = 2000 };

typedef struct serial {
  int seen[PER_QUEUE]; /* written by whichever worker runs the job */
  int count;
  int inside; /* jobs of this queue running right now: must stay <= 1 */
  int overlap;
  counter *done;
} serial;

typedef struct serial_job {
  serial *s;
  int i;
} serial_job;

static void serial_step(void *arg, int status) {
  serial_job *j = arg;
  serial *s = j->s;
  if (__atomic_add_fetch(&s->inside, 1, __ATOMIC_SEQ_CST) != 1) s->overlap = 1;
  /* No lock: the pool orders the jobs of one queue. TSan checks that claim. */
  s->seen[s->count++] = j->i;
  __atomic_sub_fetch(&s->inside, 1, __ATOMIC_SEQ_CST);
  counter_add(s->done, 1);
}

/* Opens a gate from inside a serial queue. */
static void open_gate(void *arg, int status) {
  counter_add(&((gate *)arg)->open, 1);
}

static void test_serial_queues_keep_order(void) {
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 4, .max_pending = QUEUES * PER_QUEUE + 16});
  CHECK(pool != NULL);
  if (!pool) return;
  counter done;
  counter_init(&done);
  serial *s = calloc(QUEUES, sizeof *s);
  serial_job *jobs = malloc(QUEUES * PER_QUEUE * sizeof *jobs);
  rm_pool_queue *q[QUEUES];
  for (int k = 0; k < QUEUES; k++) {
    q[k] = rm_pool_queue_new(pool);
    CHECK(q[k] != NULL);
    s[k].done = &done;
  }

  /* A plain job blocks a worker until a serial job opens its gate: the two
   * can only both finish if serial queues run beside other jobs. */
  gate g;
  gate_init(&g);
  CHECK(rm_pool_submit(pool, gate_job, &g) >= 1);
  CHECK(counter_wait(&g.started, 1));

  for (int i = 0; i < PER_QUEUE; i++) {
    for (int k = 0; k < QUEUES; k++) {
      serial_job *j = &jobs[k * PER_QUEUE + i];
      *j = (serial_job){&s[k], i};
      CHECK(rm_pool_queue_submit(q[k], serial_step, j) >= 1);
    }
    if (i == PER_QUEUE / 2) CHECK(rm_pool_queue_submit(q[0], open_gate, &g) >= 1);
  }
  CHECK(counter_wait(&done, QUEUES * PER_QUEUE));
  for (int k = 0; k < QUEUES; k++) {
    int bad = 0;
    for (int i = 0; i < PER_QUEUE; i++) bad += s[k].seen[i] != i;
    CHECK_EQ(s[k].count, PER_QUEUE);
    CHECK_EQ(bad, 0);
    CHECK_EQ(s[k].overlap, 0);
  }
  CHECK_EQ(counter_get(&g.open), 1);
  for (int k = 0; k < QUEUES; k++) rm_pool_queue_free(q[k]);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  gate_destroy(&g);
  counter_destroy(&done);
  free(jobs);
  free(s);
}

/* Idle serial queues hold no thread: one worker serves many queues. */
static void test_serial_queues_share_one_worker(void) {
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 1});
  CHECK(pool != NULL);
  if (!pool) return;
  enum { NQ = 16 };
  counter done;
  counter_init(&done);
  serial s = {.done = &done};
  serial_job jobs[NQ];
  rm_pool_queue *q[NQ];
  for (int k = 0; k < NQ; k++) {
    q[k] = rm_pool_queue_new(pool);
    jobs[k] = (serial_job){&s, k};
    CHECK(rm_pool_queue_submit(q[k], serial_step, &jobs[k]) >= 1);
    CHECK(counter_wait(&done, k + 1));
  }
  CHECK_EQ(s.count, NQ);
  /* Freeing a queue with jobs still queued lets them run first. */
  for (int k = 0; k < NQ; k++) {
    CHECK(rm_pool_queue_submit(q[k], serial_step, &jobs[k]) >= 1);
    rm_pool_queue_free(q[k]);
  }
  CHECK(counter_wait(&done, 2 * NQ));
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  counter_destroy(&done);
}

/* ---- resize ---- */

static void test_resize_under_load(void) {
  static const int sizes[] = {8, 1, 16, 3, 1, 6};
  enum { STEP = 3000, N = 6 * STEP };
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 2, .max_pending = N, .max_threads = 16});
  CHECK(pool != NULL);
  if (!pool) return;
  tally t = {.runs = calloc(N, sizeof(int))};
  slot *slots = malloc(N * sizeof *slots);
  counter_init(&t.done);

  /* A job that is running while the pool shrinks must finish. */
  gate g;
  gate_init(&g);
  CHECK(rm_pool_submit(pool, gate_job, &g) >= 1);
  CHECK(counter_wait(&g.started, 1));

  for (int i = 0; i < N; i++) {
    if (i % STEP == 0) CHECK_EQ(rm_pool_resize(pool, sizes[i / STEP]), RM_OK);
    slots[i] = (slot){&t, i};
    CHECK(rm_pool_submit(pool, tally_job, &slots[i]) >= 1);
  }
  CHECK_EQ(rm_pool_resize(pool, 17), RM_EFULL);
  CHECK_EQ(rm_pool_resize(pool, 4), RM_OK);
  CHECK(counter_wait(&t.done, N));
  CHECK(wait_threads(pool, 4));

  /* Shrink to zero with the gated job still running: it keeps its thread
   * until it returns, then the thread leaves. */
  CHECK_EQ(rm_pool_resize(pool, 0), RM_OK);
  CHECK(wait_threads(pool, 1));
  rm_pool_stats st;
  rm_pool_stats_get(pool, &st);
  CHECK_EQ(st.running, 1);
  counter_add(&g.open, 1);
  CHECK(wait_threads(pool, 0));

  int bad = 0;
  for (int i = 0; i < N; i++) bad += t.runs[i] != 1;
  CHECK_EQ(bad, 0);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  gate_destroy(&g);
  counter_destroy(&t.done);
  free(t.runs);
  free(slots);
}

/* ---- bounds and errors ---- */

static void nop_job(void *arg, int status) {}

static void test_full_queue(void) {
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 1, .max_pending = 4});
  CHECK(pool != NULL);
  if (!pool) return;
  gate g;
  gate_init(&g);
  CHECK_EQ(rm_pool_submit(pool, gate_job, &g), 1);
  CHECK(counter_wait(&g.started, 1));
  rm_pool_queue *q = rm_pool_queue_new(pool);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), 1);
  CHECK_EQ(rm_pool_queue_submit(q, nop_job, NULL), 2);
  CHECK_EQ(rm_pool_queue_submit(q, nop_job, NULL), 3); /* waits in the queue */
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), 4);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), RM_EFULL);
  CHECK_EQ(rm_pool_queue_submit(q, nop_job, NULL), RM_EFULL);

  rm_pool_stats st;
  rm_pool_stats_get(pool, &st);
  CHECK_EQ(st.threads, 1);
  CHECK_EQ(st.pending, 4);
  CHECK_EQ(st.running, 1);

  CHECK_EQ(rm_pool_submit(pool, NULL, NULL), RM_EINVAL);
  counter_add(&g.open, 1);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  gate_destroy(&g);
}

static void test_zero_workers(void) {
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 0});
  CHECK(pool != NULL);
  if (!pool) return;
  rm_pool_queue *q = rm_pool_queue_new(pool);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), RM_EINVAL);
  CHECK_EQ(rm_pool_queue_submit(q, nop_job, NULL), RM_EINVAL);
  CHECK_EQ(rm_pool_submit_then(pool, (rm_loop *)1, nop_job, nop_job, NULL), RM_EINVAL);

  /* Growing makes it usable; shrinking back refuses again. */
  int runs = 0;
  tally t = {.runs = &runs};
  slot s = {&t, 0};
  counter_init(&t.done);
  CHECK_EQ(rm_pool_resize(pool, 1), RM_OK);
  CHECK_EQ(rm_pool_submit(pool, tally_job, &s), 1);
  CHECK(counter_wait(&t.done, 1));
  CHECK_EQ(rm_pool_resize(pool, 0), RM_OK);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), RM_EINVAL);
  CHECK_EQ(rm_pool_resize(pool, 257), RM_EFULL);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  counter_destroy(&t.done);
}

static void test_config(void) {
  rm_pool_stats st;
  rm_pool *pool = rm_pool_new(NULL);
  CHECK(pool != NULL);
  if (pool) {
    rm_pool_stats_get(pool, &st);
    CHECK(st.threads >= 2);
    CHECK_EQ(rm_pool_resize(pool, 1), RM_OK);
    CHECK_EQ(rm_pool_resize(pool, -1), RM_OK);
    CHECK(wait_threads(pool, st.threads));
    CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  }
  pool = rm_pool_new(&(rm_pool_config){.threads = 2, .stack_size = 256 * 1024});
  CHECK(pool != NULL);
  if (pool) CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  CHECK(rm_pool_new(&(rm_pool_config){.threads = 5, .max_threads = 4}) == NULL);
  CHECK(rm_pool_new(&(rm_pool_config){.threads = 1, .stack_size = 1}) == NULL);
}

/* ---- shutdown ---- */

typedef struct reader {
  int fd;
  counter started;
  long got; /* what read() returned once woken */
} reader;

static void read_job(void *arg, int status) {
  reader *r = arg;
  char c;
  counter_add(&r->started, 1);
  r->got = read(r->fd, &c, 1);
}

typedef struct waker {
  rm_pool *pool;
  int fd;
} waker;

/* What a caller does to wake blocked jobs: once the pool says it is stopping,
 * end what they block on. */
static void *wake_when_stopping(void *arg) {
  waker *w = arg;
  for (int i = 0; i < BOUND_MS && !rm_pool_stopping(w->pool); i++) usleep(1000);
  close(w->fd);
  return NULL;
}

static void test_shutdown_queued_and_blocked(void) {
  enum { QUEUED = 50 };
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 1});
  CHECK(pool != NULL);
  if (!pool) return;
  int p[2];
  CHECK_EQ(pipe(p), 0);
  reader r = {.fd = p[0], .got = -2};
  counter_init(&r.started);
  CHECK_EQ(rm_pool_submit(pool, read_job, &r), 1);
  CHECK(counter_wait(&r.started, 1));

  tally t = {.runs = calloc(QUEUED, sizeof(int))};
  counter_init(&t.done);
  slot slots[QUEUED];
  rm_pool_queue *q = rm_pool_queue_new(pool);
  for (int i = 0; i < QUEUED; i++) {
    slots[i] = (slot){&t, i};
    if (i % 2) CHECK(rm_pool_submit(pool, tally_job, &slots[i]) >= 1);
    else CHECK(rm_pool_queue_submit(q, tally_job, &slots[i]) >= 1);
  }

  pthread_t th;
  waker w = {pool, p[1]};
  pthread_create(&th, NULL, wake_when_stopping, &w);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  pthread_join(th, NULL);

  CHECK_EQ(r.got, 0); /* woken by end of file, not by the pool */
  CHECK_EQ(t.cancelled, QUEUED);
  int ran = 0;
  for (int i = 0; i < QUEUED; i++) ran += t.runs[i];
  CHECK_EQ(ran, 0);
  close(p[0]);
  counter_destroy(&r.started);
  counter_destroy(&t.done);
  free(t.runs);
}

static void test_shutdown_deadline(void) {
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 2});
  CHECK(pool != NULL);
  if (!pool) return;
  gate g;
  gate_init(&g);
  CHECK_EQ(rm_pool_submit(pool, gate_job, &g), 1);
  CHECK(counter_wait(&g.started, 1));

  /* The job cannot return before the gate opens: the deadline must pass,
   * and the pool must stay usable for a second try. */
  CHECK_EQ(rm_pool_free(pool, 20), RM_ETIMEDOUT);
  CHECK_EQ(rm_pool_stopping(pool), 1);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), RM_ECLOSED);
  CHECK(rm_pool_queue_new(pool) == NULL);
  CHECK_EQ(rm_pool_resize(pool, 3), RM_ECLOSED);
  counter_add(&g.open, 1);
  CHECK_EQ(rm_pool_free(pool, -1), RM_OK);
  gate_destroy(&g);
}

/* ---- the caller's allocator ---- */

typedef struct arena {
  long live; /* bytes handed out and not yet returned */
  int fail;  /* refuse every allocation */
} arena;

static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  arena *a = ud;
  if (nsize == 0) {
    if (ptr) __atomic_sub_fetch(&a->live, (long)osize, __ATOMIC_RELAXED);
    free(ptr);
    return NULL;
  }
  if (__atomic_load_n(&a->fail, __ATOMIC_RELAXED)) return NULL;
  void *p = realloc(ptr, nsize);
  if (p) __atomic_add_fetch(&a->live, (long)nsize - (ptr ? (long)osize : 0), __ATOMIC_RELAXED);
  return p;
}

static void test_allocator(void) {
  arena a = {0};
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 3, .alloc = arena_alloc, .alloc_ud = &a});
  CHECK(pool != NULL);
  if (!pool) return;
  CHECK(a.live > 0);
  rm_pool_queue *q = rm_pool_queue_new(pool);
  counter done;
  counter_init(&done);
  serial s = {.done = &done};
  serial_job jobs[100];
  for (int i = 0; i < 100; i++) {
    jobs[i] = (serial_job){&s, i};
    CHECK(rm_pool_queue_submit(q, serial_step, &jobs[i]) >= 1);
  }
  CHECK(counter_wait(&done, 100));
  __atomic_store_n(&a.fail, 1, __ATOMIC_RELAXED);
  CHECK_EQ(rm_pool_submit(pool, nop_job, NULL), RM_ENOMEM);
  CHECK(rm_pool_queue_new(pool) == NULL);
  CHECK_EQ(rm_pool_resize(pool, 6), RM_ENOMEM);
  rm_pool_stats st;
  rm_pool_stats_get(pool, &st);
  CHECK_EQ(st.threads, 3);
  __atomic_store_n(&a.fail, 0, __ATOMIC_RELAXED);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  CHECK_EQ(a.live, 0);
  counter_destroy(&done);
}

/* ---- results back to a real event loop ---- */

enum { LOOP_QUEUES = 3, LOOP_JOBS = 300 };

typedef struct loop_test {
  rm_loop *loop;
  int order[LOOP_QUEUES][LOOP_JOBS]; /* touched on the loop thread only */
  int count[LOOP_QUEUES];
  int worked[LOOP_QUEUES]; /* touched by the queue's jobs only */
  int off_thread, bad_status, outstanding;
  int direct;
} loop_test;

typedef struct loop_job {
  loop_test *lt;
  int q, i;
} loop_job;

static void loop_work(void *arg, int status) {
  loop_job *j = arg;
  j->lt->worked[j->q]++;
}

static void loop_done(void *arg, int status) {
  loop_job *j = arg;
  loop_test *lt = j->lt;
  if (!rm_loop_on_thread(lt->loop)) lt->off_thread++;
  if (status != RM_OK) lt->bad_status++;
  lt->order[j->q][lt->count[j->q]++] = j->i;
  if (--lt->outstanding == 0) rm_loop_unref(lt->loop);
}

/* A job may also post to the loop itself. */
static void direct_done(void *arg) {
  loop_test *lt = arg;
  lt->direct++;
  if (--lt->outstanding == 0) rm_loop_unref(lt->loop);
}

static void direct_job(void *arg, int status) {
  loop_test *lt = arg;
  rm_loop_post(lt->loop, direct_done, lt);
}

static void test_results_posted_to_loop(void) {
  rm_loop *loop = rm_loop_new(NULL);
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 4, .max_pending = LOOP_QUEUES * LOOP_JOBS + 1});
  CHECK(loop != NULL);
  CHECK(pool != NULL);
  if (!loop || !pool) return;
  loop_test *lt = calloc(1, sizeof *lt);
  loop_job *jobs = malloc(LOOP_QUEUES * LOOP_JOBS * sizeof *jobs);
  rm_pool_queue *q[LOOP_QUEUES];
  lt->loop = loop;
  lt->outstanding = LOOP_QUEUES * LOOP_JOBS + 1;
  rm_loop_ref(loop); /* until the last result arrived */

  /* The loop thread has not run yet; jobs may start posting at once. */
  for (int k = 0; k < LOOP_QUEUES; k++) q[k] = rm_pool_queue_new(pool);
  CHECK(rm_pool_submit(pool, direct_job, lt) >= 1);
  for (int i = 0; i < LOOP_JOBS; i++)
    for (int k = 0; k < LOOP_QUEUES; k++) {
      loop_job *j = &jobs[k * LOOP_JOBS + i];
      *j = (loop_job){lt, k, i};
      CHECK(rm_pool_queue_submit_then(q[k], loop, loop_work, loop_done, j) >= 1);
    }
  CHECK_EQ(rm_loop_run(loop), RM_OK);

  CHECK_EQ(lt->outstanding, 0);
  CHECK_EQ(lt->off_thread, 0);
  CHECK_EQ(lt->bad_status, 0);
  CHECK_EQ(lt->direct, 1);
  for (int k = 0; k < LOOP_QUEUES; k++) {
    int bad = 0;
    for (int i = 0; i < LOOP_JOBS; i++) bad += lt->order[k][i] != i;
    CHECK_EQ(lt->count[k], LOOP_JOBS);
    CHECK_EQ(lt->worked[k], LOOP_JOBS);
    CHECK_EQ(bad, 0);
  }
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  rm_loop_free(loop);
  free(jobs);
  free(lt);
}

/* Jobs cancelled by shutdown still hear back on the loop, with RM_ECLOSED. */
typedef struct cancel_test {
  rm_loop *loop;
  int ok, closed, worked;
  int outstanding;
} cancel_test;

static void cancel_work(void *arg, int status) {
  ((cancel_test *)arg)->worked++;
}

static void cancel_done(void *arg, int status) {
  cancel_test *ct = arg;
  if (status == RM_OK) ct->ok++;
  else if (status == RM_ECLOSED) ct->closed++;
  if (--ct->outstanding == 0) rm_loop_unref(ct->loop);
}

static void test_cancelled_results_posted_to_loop(void) {
  enum { N = 10 };
  rm_loop *loop = rm_loop_new(NULL);
  rm_pool *pool = rm_pool_new(&(rm_pool_config){.threads = 1});
  CHECK(loop != NULL);
  CHECK(pool != NULL);
  if (!loop || !pool) return;
  gate g;
  gate_init(&g);
  cancel_test ct = {.loop = loop, .outstanding = N};
  rm_loop_ref(loop);
  CHECK_EQ(rm_pool_submit(pool, gate_job, &g), 1);
  CHECK(counter_wait(&g.started, 1));
  for (int i = 0; i < N; i++) CHECK(rm_pool_submit_then(pool, loop, cancel_work, cancel_done, &ct) >= 1);
  rm_pool_stop(pool);
  counter_add(&g.open, 1);
  CHECK_EQ(rm_pool_free(pool, BOUND_MS), RM_OK);
  CHECK_EQ(rm_loop_run(loop), RM_OK);
  CHECK_EQ(ct.worked, 0);
  CHECK_EQ(ct.ok, 0);
  CHECK_EQ(ct.closed, N);
  rm_loop_free(loop);
  gate_destroy(&g);
}

int main(void) {
  RUN(test_many_submitters_run_once);
  RUN(test_serial_queues_keep_order);
  RUN(test_serial_queues_share_one_worker);
  RUN(test_resize_under_load);
  RUN(test_full_queue);
  RUN(test_zero_workers);
  RUN(test_config);
  RUN(test_shutdown_queued_and_blocked);
  RUN(test_shutdown_deadline);
  RUN(test_allocator);
  RUN(test_results_posted_to_loop);
  RUN(test_cancelled_results_posted_to_loop);
  return CHECK_DONE();
}
