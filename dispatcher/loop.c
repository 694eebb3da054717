/* The event loop: fd watches over a backend, a timer heap, and a queue of
 * work posted from other threads. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "dispatcher/internal.h"

struct rm__post { rm__post *next; void (*fn)(void *); void *arg; };

struct rm_timer {
  rm_loop *loop;
  rm_timer_cb cb;
  void *ud;
  uint64_t when, repeat, seq;
  int index;  /* position in the heap, -1 when inactive */
  int ref;
};

const char *rm_strerror(int err) {
  switch (err) {
  case RM_OK: return "ok";
  case RM_EAGAIN: return "would block";
  case RM_ENOMEM: return "out of memory";
  case RM_EINVAL: return "invalid argument";
  case RM_ECLOSED: return "closed";
  case RM_EIO: return "i/o error";
  case RM_EFULL: return "queue full";
  case RM_ETIMEDOUT: return "timed out";
  case RM_ERESOLVE: return "cannot resolve";
  case RM_ECONNECT: return "cannot connect";
  case RM_ELIMIT: return "limit reached";
  default: return "unknown error";
  }
}

/* ---- memory ---------------------------------------------------------- */

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  if (nsize == 0) { free(ptr); return NULL; }
  return realloc(ptr, nsize);
}

void *rm_loop_alloc(rm_loop *loop, size_t n) { return loop->alloc(loop->alloc_ud, NULL, 0, n); }
void *rm_loop_realloc(rm_loop *loop, void *p, size_t osize, size_t nsize) {
  return loop->alloc(loop->alloc_ud, p, osize, nsize);
}
void rm_loop_free_mem(rm_loop *loop, void *p, size_t n) { if (p) loop->alloc(loop->alloc_ud, p, n, 0); }
rm_alloc_fn rm_loop_allocator(const rm_loop *loop, void **ud) { if (ud) *ud = loop->alloc_ud; return loop->alloc; }

/* ---- logging --------------------------------------------------------- */

static void default_log(void *ud, int level, const char *msg) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  char ts[32];
  time_t t = time(NULL);
  struct tm tm;
  strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
  fprintf(stderr, "%s remora %s: %s\n", ts, names[level & 3], msg);
}

void rm_loop_set_logger(rm_loop *loop, rm_log_fn fn, void *ud, int max_level) {
  loop->log = fn ? fn : default_log;
  loop->log_ud = ud;
  loop->log_level = max_level;
}

void rm_loop_log(rm_loop *loop, int level, const char *fmt, ...) {
  if (level > loop->log_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  loop->log(loop->log_ud, level, msg);
}

/* ---- creation -------------------------------------------------------- */

static const rm__backend *pick_backend(const char *name) {
  if (!name) name = getenv("REMORA_BACKEND");
  if (name && strcmp(name, "poll") == 0) return &rm__backend_poll;
#ifdef __linux__
  if (!name || !*name || strcmp(name, "epoll") == 0) return &rm__backend_epoll;
  return NULL;
#else
  return (!name || !*name) ? &rm__backend_poll : NULL;
#endif
}

static void wake_read(rm_loop *loop, int fd, int events, void *ud);

rm_loop *rm_loop_new(const rm_loop_config *cfg) {
  rm_loop_config c = cfg ? *cfg : (rm_loop_config){0};
  rm_alloc_fn alloc = c.alloc ? c.alloc : default_alloc;
  const rm__backend *be = pick_backend(c.backend);
  if (!be) return NULL;
  rm_loop *loop = alloc(c.alloc_ud, NULL, 0, sizeof(rm_loop));
  if (!loop) return NULL;
  memset(loop, 0, sizeof(*loop));
  loop->alloc = alloc;
  loop->alloc_ud = c.alloc_ud;
  loop->log = default_log;
  loop->log_level = RM_LOG_INFO;
  loop->be = be;
  loop->max_fds = c.max_fds;
  loop->max_conns = c.max_conns > 0 ? c.max_conns : 0;
  if (loop->max_fds <= 0) {
    struct rlimit rl;
    loop->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (int)rl.rlim_cur : 65536;
  }
  loop->nfired_max = 256;
  loop->fired = rm_loop_alloc(loop, sizeof(rm__fired) * loop->nfired_max);
  int p[2] = {-1, -1};
  pthread_mutex_init(&loop->post_mu, NULL);
  pthread_cond_init(&loop->post_cv, NULL);
  loop->be_state = loop->fired ? be->create(loop) : NULL;
  if (!loop->be_state || pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) goto fail;
  loop->wake_rd = p[0];
  loop->wake_wr = p[1];
  if (rm_loop_watch(loop, loop->wake_rd, RM_READ, wake_read, NULL) != RM_OK) goto fail;
  rm_loop_update_time(loop);
  loop->thread = pthread_self();
  return loop;
fail:
  if (p[0] >= 0) { close(p[0]); close(p[1]); loop->wake_rd = loop->wake_wr = -1; }
  rm_loop_free(loop);
  return NULL;
}

void rm_loop_free(rm_loop *loop) {
  if (!loop) return;
  rm__conn_free_released(loop);
  /* Helper threads still resolving names will post into this loop: wait. */
  pthread_mutex_lock(&loop->post_mu);
  while (loop->resolvers > 0) pthread_cond_wait(&loop->post_cv, &loop->post_mu);
  for (rm__post *p = loop->post_head, *next; p; p = next) { next = p->next; RM__FREE(loop, p); }
  pthread_mutex_unlock(&loop->post_mu);
  if (loop->wake_rd > 0) { close(loop->wake_rd); close(loop->wake_wr); }
  if (loop->be_state) loop->be->destroy(loop, loop->be_state);
  rm_loop_free_mem(loop, loop->watches, sizeof(rm__watch) * loop->nwatches);
  rm_loop_free_mem(loop, loop->fired, sizeof(rm__fired) * loop->nfired_max);
  rm_loop_free_mem(loop, loop->heap, sizeof(rm_timer *) * loop->capheap);
  pthread_mutex_destroy(&loop->post_mu);
  pthread_cond_destroy(&loop->post_cv);
  loop->alloc(loop->alloc_ud, loop, sizeof(*loop), 0);
}

const char *rm_loop_backend(const rm_loop *loop) { return loop->be->name; }
int rm_loop_fd(const rm_loop *loop) { return loop->be->fd(loop->be_state); }
void rm_loop_stop(rm_loop *loop) { loop->stopped = 1; }
void rm_loop_ref(rm_loop *loop) { loop->refs++; }
void rm_loop_unref(rm_loop *loop) { loop->refs--; }
int rm_loop_alive(const rm_loop *loop) { return loop->refs > 0; }
int rm_loop_on_thread(const rm_loop *loop) { return pthread_equal(loop->thread, pthread_self()); }

void rm_loop_set_wait_hooks(rm_loop *loop, void (*before)(void *), void (*after)(void *), void *ud) {
  loop->before_wait = before;
  loop->after_wait = after;
  loop->hook_ud = ud;
}

static uint64_t clock_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t rm_loop_now(const rm_loop *loop) { return loop->now; }
void rm_loop_update_time(rm_loop *loop) { loop->now = clock_ms(); }

/* ---- fd watches ------------------------------------------------------ */

static int grow_watches(rm_loop *loop, int fd) {
  if (fd >= loop->max_fds) return RM_ELIMIT;
  int n = loop->nwatches ? loop->nwatches : 64;
  while (n <= fd) n *= 2;
  if (n > loop->max_fds) n = loop->max_fds;
  rm__watch *w = rm_loop_realloc(loop, loop->watches, sizeof(rm__watch) * loop->nwatches, sizeof(rm__watch) * n);
  if (!w) return RM_ENOMEM;
  memset(w + loop->nwatches, 0, sizeof(rm__watch) * (n - loop->nwatches));
  loop->watches = w;
  loop->nwatches = n;
  return RM_OK;
}

int rm_loop_watch(rm_loop *loop, int fd, int events, rm_io_cb cb, void *ud) {
  if (fd < 0) return RM_EINVAL;
  if (fd >= loop->nwatches) {
    if (!events) return RM_OK;
    int rc = grow_watches(loop, fd);
    if (rc != RM_OK) return rc;
  }
  rm__watch *w = &loop->watches[fd];
  events &= RM_READ | RM_WRITE;
  if (w->events != events) {
    int rc = loop->be->set(loop, loop->be_state, fd, w->events, events);
    if (rc != RM_OK) return rc;
  }
  w->events = events;
  w->cb = events ? cb : NULL;
  w->ud = events ? ud : NULL;
  return RM_OK;
}

int rm_loop_unwatch(rm_loop *loop, int fd) { return rm_loop_watch(loop, fd, 0, NULL, NULL); }

void rm__loop_closing(rm_loop *loop, int fd) {
  if (fd < 0 || fd >= loop->nwatches || !loop->watches[fd].events) return;
  if (loop->be->closing) loop->be->closing(loop, loop->be_state, fd);
  else loop->be->set(loop, loop->be_state, fd, loop->watches[fd].events, 0);
  loop->watches[fd] = (rm__watch){NULL, NULL, 0};
}

int rm__loop_reserve(rm_loop *loop, int fd) {
  if (fd < 0) return RM_EINVAL;
  int rc = fd < loop->nwatches ? RM_OK : grow_watches(loop, fd);
  if (rc == RM_OK && loop->be->reserve) rc = loop->be->reserve(loop, loop->be_state, fd);
  return rc;
}

int rm__loop_conn_room(const rm_loop *loop) {
  return loop->max_conns == 0 || loop->nconns < loop->max_conns;
}

int rm_loop_pollfds(const rm_loop *loop, struct pollfd *out, int max) {
  int fd = rm_loop_fd(loop), n = 0;
  if (fd >= 0) {  /* the backend's own descriptor stands for every watch */
    if (max > 0) out[0] = (struct pollfd){.fd = fd, .events = POLLIN};
    return 1;
  }
  for (int i = 0; i < loop->nwatches; i++) {
    int ev = loop->watches[i].events;
    if (!ev) continue;
    if (n < max)
      out[n] = (struct pollfd){.fd = i, .events = (short)(((ev & RM_READ) ? POLLIN : 0) | ((ev & RM_WRITE) ? POLLOUT : 0))};
    n++;
  }
  return n;
}

/* ---- timers ---------------------------------------------------------- */

static int timer_before(const rm_timer *a, const rm_timer *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_place(rm_loop *loop, int i, rm_timer *t) { loop->heap[i] = t; t->index = i; }

static void heap_up(rm_loop *loop, int i) {
  rm_timer *t = loop->heap[i];
  while (i > 0) {
    int parent = (i - 1) / 2;
    if (!timer_before(t, loop->heap[parent])) break;
    heap_place(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_place(loop, i, t);
}

static void heap_down(rm_loop *loop, int i) {
  rm_timer *t = loop->heap[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= loop->nheap) break;
    if (c + 1 < loop->nheap && timer_before(loop->heap[c + 1], loop->heap[c])) c++;
    if (!timer_before(loop->heap[c], t)) break;
    heap_place(loop, i, loop->heap[c]);
    i = c;
  }
  heap_place(loop, i, t);
}

static void heap_remove(rm_loop *loop, rm_timer *t) {
  int i = t->index;
  rm_timer *last = loop->heap[--loop->nheap];
  t->index = -1;
  if (i == loop->nheap) return;
  heap_place(loop, i, last);
  heap_down(loop, i);
  heap_up(loop, last->index);
}

rm_timer *rm_timer_new(rm_loop *loop, rm_timer_cb cb, void *ud) {
  rm_timer *t = RM__NEW(loop, rm_timer);
  if (!t) return NULL;
  *t = (rm_timer){.loop = loop, .cb = cb, .ud = ud, .index = -1, .ref = 1};
  return t;
}

static int heap_insert(rm_loop *loop, rm_timer *t) {
  if (loop->nheap == loop->capheap) {
    int n = loop->capheap ? loop->capheap * 2 : 16;
    rm_timer **h = rm_loop_realloc(loop, loop->heap, sizeof(*h) * loop->capheap, sizeof(*h) * n);
    if (!h) return RM_ENOMEM;
    loop->heap = h;
    loop->capheap = n;
  }
  t->seq = loop->timer_seq++;
  heap_place(loop, loop->nheap++, t);
  heap_up(loop, t->index);
  return RM_OK;
}

/* Puts an inactive timer in the heap, due at when. */
static void timer_schedule(rm_timer *t, uint64_t when) {
  rm_loop *loop = t->loop;
  t->when = when;
  if (heap_insert(loop, t) != RM_OK) {
    rm_loop_log(loop, RM_LOG_ERROR, "timer: out of memory, timer not started");
    return;
  }
  if (t->ref) loop->refs++;
}

/* Counted from the clock, not from the iteration's cached time: a callback
 * that starts a timer late in a busy iteration must not see it fire early. */
void rm_timer_start(rm_timer *t, uint64_t ms, uint64_t repeat_ms) {
  rm_timer_stop(t);
  t->repeat = repeat_ms;
  timer_schedule(t, clock_ms() + ms);
}

void rm_timer_stop(rm_timer *t) {
  if (t->index < 0) return;
  heap_remove(t->loop, t);
  if (t->ref) t->loop->refs--;
}

int rm_timer_active(const rm_timer *t) { return t->index >= 0; }

void rm_timer_unref(rm_timer *t) {
  if (!t->ref) return;
  t->ref = 0;
  if (t->index >= 0) t->loop->refs--;
}

void rm_timer_free(rm_timer *t) {
  if (!t) return;
  rm_timer_stop(t);
  RM__FREE(t->loop, t);
}

/* Runs the timers that are due. A repeating timer is rescheduled before its
 * callback runs, so the callback may stop or restart it. */
static int run_timers(rm_loop *loop) {
  int n = 0;
  uint64_t seq_limit = loop->timer_seq;  /* timers started by callbacks wait a turn */
  while (loop->nheap > 0) {
    rm_timer *t = loop->heap[0];
    if (t->when > loop->now || t->seq >= seq_limit) break;
    rm_timer_stop(t);
    if (t->repeat) {  /* keep the period without drifting, but never schedule in the past */
      uint64_t next = t->when + t->repeat;
      timer_schedule(t, next > loop->now ? next : loop->now);
    }
    t->cb(t, t->ud);
    n++;
  }
  return n;
}

/* Other threads append to the post queue under its mutex; the loop thread
 * only peeks without it to decide whether to sleep. */
static int posts_pending(rm_loop *loop) {
  return __atomic_load_n(&loop->post_head, __ATOMIC_ACQUIRE) != NULL;
}

/* Reads the clock: a host polling on its own asks this after its own work. */
int rm_loop_timeout(rm_loop *loop) {
  if (posts_pending(loop) || loop->stopped) return 0;
  rm_loop_update_time(loop);
  if (loop->nheap == 0) return -1;
  uint64_t when = loop->heap[0]->when;
  return when <= loop->now ? 0 : (int)(when - loop->now > 86400000 ? 86400000 : when - loop->now);
}

/* ---- posted work ----------------------------------------------------- */

int rm_loop_post(rm_loop *loop, void (*fn)(void *), void *arg) {
  pthread_mutex_lock(&loop->post_mu);
  rm__post *p = RM__NEW(loop, rm__post);
  if (!p) { pthread_mutex_unlock(&loop->post_mu); return RM_ENOMEM; }
  *p = (rm__post){NULL, fn, arg};
  if (loop->post_tail) loop->post_tail->next = p;
  else __atomic_store_n(&loop->post_head, p, __ATOMIC_RELEASE);
  loop->post_tail = p;
  int wake = !loop->wake_pending;
  loop->wake_pending = 1;
  pthread_mutex_unlock(&loop->post_mu);
  if (wake) {
    char c = 1;
    ssize_t r = write(loop->wake_wr, &c, 1);  /* a full pipe is already a wake-up */
    (void)r;
  }
  return RM_OK;
}

static void wake_read(rm_loop *loop, int fd, int events, void *ud) {
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {}
}

static int run_posts(rm_loop *loop) {
  pthread_mutex_lock(&loop->post_mu);
  rm__post *p = loop->post_head;
  __atomic_store_n(&loop->post_head, NULL, __ATOMIC_RELEASE);
  loop->post_tail = NULL;
  loop->wake_pending = 0;
  pthread_mutex_unlock(&loop->post_mu);
  int n = 0;
  while (p) {
    rm__post *next = p->next;
    p->fn(p->arg);
    pthread_mutex_lock(&loop->post_mu);   /* the allocator may not be thread-safe */
    RM__FREE(loop, p);
    pthread_mutex_unlock(&loop->post_mu);
    p = next;
    n++;
  }
  return n;
}

/* ---- running ---------------------------------------------------------- */

int rm_loop_run_once(rm_loop *loop, int timeout_ms) {
  /* Written only when another thread takes the loop over: workers read it. */
  if (!pthread_equal(loop->thread, pthread_self())) loop->thread = pthread_self();
  int t = rm_loop_timeout(loop);
  if (timeout_ms >= 0 && (t < 0 || t > timeout_ms)) t = timeout_ms;
  if (loop->before_wait) loop->before_wait(loop->hook_ud);
  int nfired = loop->be->wait(loop, loop->be_state, t, loop->fired, loop->nfired_max);
  if (loop->after_wait) loop->after_wait(loop->hook_ud);
  rm_loop_update_time(loop);
  int n = 0;
  for (int i = 0; i < nfired; i++) {
    int fd = loop->fired[i].fd;
    if (fd >= loop->nwatches) continue;
    rm__watch *w = &loop->watches[fd];  /* an earlier callback may have changed it */
    int ev = loop->fired[i].events & (w->events | RM_ERROR);
    if (w->cb && ev) { w->cb(loop, fd, ev, w->ud); n++; }
  }
  n += run_timers(loop);
  n += run_posts(loop);
  return n;
}

int rm_loop_run(rm_loop *loop) {
  loop->stopped = 0;
  while (!loop->stopped && (loop->refs > 0 || posts_pending(loop))) rm_loop_run_once(loop, -1);
  return RM_OK;
}
