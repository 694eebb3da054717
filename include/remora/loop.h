/* remora/loop.h: the event dispatcher.
 *
 * One loop per thread that drives it. It multiplexes file descriptors (epoll on
 * Linux, poll everywhere), runs timers with millisecond resolution, and accepts
 * work posted from other threads. It knows nothing of Lua, TLS or HTTP.
 *
 * Two ways to drive it: rm_loop_run() owns the calling thread until the loop
 * has nothing left to do or rm_loop_stop() is called; rm_loop_run_once() is one
 * step for a host with its own main loop (see rm_loop_fd()).
 */
#ifndef REMORA_LOOP_H
#define REMORA_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <poll.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: every C call that can fail returns one of these (negative). */
enum {
  RM_OK = 0,
  RM_EAGAIN = -1,   /* would block: try again when the loop says so */
  RM_ENOMEM = -2,   /* the allocator said no */
  RM_EINVAL = -3,   /* bad argument or call in the wrong state */
  RM_ECLOSED = -4,  /* the connection is closed or closing */
  RM_EIO = -5,      /* the system call failed; see errno-derived detail */
  RM_EFULL = -6,    /* a configured bound would be exceeded */
  RM_ETIMEDOUT = -7,
  RM_ERESOLVE = -8, /* name resolution failed */
  RM_ECONNECT = -9, /* the connection could not be established */
  RM_ELIMIT = -10   /* a connection or fd limit was reached */
};
const char *rm_strerror(int err);

/* The allocator: one function with Lua's lua_Alloc contract. nsize == 0 frees
 * and returns NULL; otherwise it returns a block of nsize bytes or NULL. It is
 * called on the loop's thread and on any thread that calls rm_loop_post()
 * (name lookups do): a host with other threads gives a thread-safe one. */
typedef void *(*rm_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

typedef struct rm_loop rm_loop;

typedef struct rm_loop_config {
  const char *backend;  /* "epoll", "poll", or NULL: $REMORA_BACKEND, else epoll */
  int max_fds;          /* highest fd + 1 the loop may watch; 0: RLIMIT_NOFILE */
  rm_alloc_fn alloc;    /* NULL: the C library's malloc family */
  void *alloc_ud;
  /* Connections (rm_conn, open or still closing) the loop holds at most; past
   * it listeners refuse new peers (accept, then close at once) and
   * rm_conn_new/rm_conn_connect fail, while existing connections go on.
   * 0: no cap but max_fds. */
  int max_conns;
} rm_loop_config;

rm_loop *rm_loop_new(const rm_loop_config *cfg); /* cfg may be NULL */
void rm_loop_free(rm_loop *loop);
const char *rm_loop_backend(const rm_loop *loop);

/* Runs until rm_loop_stop() or until nothing holds a reference. Returns RM_OK. */
int rm_loop_run(rm_loop *loop);
/* One step: waits at most timeout_ms (-1: as long as needed, 0: not at all)
 * for events, then runs what is due. Returns the number of callbacks run. */
int rm_loop_run_once(rm_loop *loop, int timeout_ms);
void rm_loop_stop(rm_loop *loop);
/* A host that has its own poll(): wait for rm_loop_fd() to be readable, or
 * rm_loop_timeout() ms, then call rm_loop_run_once(loop, 0). rm_loop_fd() is
 * -1 when the backend has no descriptor of its own (poll): such a host adds
 * rm_loop_pollfds() to its poll set instead, which works for every backend. */
int rm_loop_fd(const rm_loop *loop);
int rm_loop_timeout(rm_loop *loop);
/* Fills out[0..max) with what the loop waits on (POLLIN/POLLOUT set in
 * events) and returns how many entries that takes, which may exceed max: call
 * again with a bigger array then. Valid until the next call into the loop. */
int rm_loop_pollfds(const rm_loop *loop, struct pollfd *out, int max);

/* What keeps rm_loop_run() going: references taken by open connections,
 * listeners, active timers, and any host object that calls rm_loop_ref(). */
void rm_loop_ref(rm_loop *loop);
void rm_loop_unref(rm_loop *loop);
int rm_loop_alive(const rm_loop *loop);

/* Milliseconds on a monotonic clock, updated once per loop iteration. */
uint64_t rm_loop_now(const rm_loop *loop);
void rm_loop_update_time(rm_loop *loop);

/* Memory through the loop's allocator. */
void *rm_loop_alloc(rm_loop *loop, size_t n);
void *rm_loop_realloc(rm_loop *loop, void *p, size_t osize, size_t nsize);
void rm_loop_free_mem(rm_loop *loop, void *p, size_t n);
rm_alloc_fn rm_loop_allocator(const rm_loop *loop, void **ud);

/* Thread-safe: runs fn(arg) on the loop's thread during a later iteration, in
 * the order posted. The only call another thread may make on a loop. */
int rm_loop_post(rm_loop *loop, void (*fn)(void *arg), void *arg);
/* Is the caller the thread that runs the loop (the last one to run it)? */
int rm_loop_on_thread(const rm_loop *loop);

/* Log lines from the loop and the layers above it go through one function per
 * loop (default: standard error with a time stamp). */
enum { RM_LOG_ERROR, RM_LOG_WARN, RM_LOG_INFO, RM_LOG_DEBUG };
typedef void (*rm_log_fn)(void *ud, int level, const char *msg);
void rm_loop_set_logger(rm_loop *loop, rm_log_fn fn, void *ud, int max_level);
void rm_loop_log(rm_loop *loop, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Hooks around the backend's wait: a host that shares its state with other
 * threads (remora's Lua lock) releases it in before and takes it in after. */
void rm_loop_set_wait_hooks(rm_loop *loop, void (*before)(void *), void (*after)(void *), void *ud);

/* File descriptor watches. events is a mask of RM_READ | RM_WRITE; setting it
 * to 0 stops watching. The callback receives the events that are ready, plus
 * RM_ERROR on a hang-up or error condition. One watch per fd. */
enum { RM_READ = 1, RM_WRITE = 2, RM_ERROR = 4 };
typedef void (*rm_io_cb)(rm_loop *loop, int fd, int events, void *ud);
int rm_loop_watch(rm_loop *loop, int fd, int events, rm_io_cb cb, void *ud);
int rm_loop_unwatch(rm_loop *loop, int fd);

/* Timers: one-shot (repeat_ms == 0) or repeating. Owned by the caller;
 * rm_timer_free() stops one first. A timer holds a loop reference while active
 * unless rm_timer_unref() was called. */
typedef struct rm_timer rm_timer;
typedef void (*rm_timer_cb)(rm_timer *t, void *ud);
rm_timer *rm_timer_new(rm_loop *loop, rm_timer_cb cb, void *ud);
void rm_timer_start(rm_timer *t, uint64_t ms, uint64_t repeat_ms);
void rm_timer_stop(rm_timer *t);
int rm_timer_active(const rm_timer *t);
void rm_timer_unref(rm_timer *t);
void rm_timer_free(rm_timer *t);

#ifdef __cplusplus
}
#endif
#endif
