/* Internals shared by the files of dispatcher/: the loop structure and the
 * backend interface. Nothing outside dispatcher/ includes this. */
#ifndef REMORA_DISPATCHER_INTERNAL_H
#define REMORA_DISPATCHER_INTERNAL_H

#include <pthread.h>
#include "remora/loop.h"

typedef struct rm__fired { int fd, events; } rm__fired;

/* A multiplexer: the same five small functions for each backend, as in ae.c.
 * set() changes the interest of one fd from old to new (0 = none). */
typedef struct rm__backend {
  const char *name;
  void *(*create)(rm_loop *loop);
  void (*destroy)(rm_loop *loop, void *state);
  int (*set)(rm_loop *loop, void *state, int fd, int old_events, int new_events);
  int (*wait)(rm_loop *loop, void *state, int timeout_ms, rm__fired *out, int max);
  int (*fd)(const void *state);
  /* Optional: make room for fd now, so that set() on it cannot run out of
   * memory later (a connection learns it cannot be watched when it is made). */
  int (*reserve)(rm_loop *loop, void *state, int fd);
  /* Optional: fd is about to be closed; NULL: set() to no events. */
  int (*closing)(rm_loop *loop, void *state, int fd);
} rm__backend;

extern const rm__backend rm__backend_epoll;
extern const rm__backend rm__backend_poll;

typedef struct rm__watch { rm_io_cb cb; void *ud; int events; } rm__watch;
typedef struct rm__post rm__post;

struct rm_loop {
  const rm__backend *be;
  void *be_state;
  rm_alloc_fn alloc;
  void *alloc_ud;
  rm_log_fn log;
  void *log_ud;
  int log_level;

  rm__watch *watches; /* indexed by fd, grown on demand up to max_fds */
  int nwatches, max_fds;
  rm__fired *fired;
  int nfired_max;

  rm_timer **heap;    /* min-heap of active timers by (when, seq) */
  int nheap, capheap;
  uint64_t timer_seq;
  uint64_t now;

  int refs, stopped, nconns, max_conns;
  struct rm_conn *conns;   /* every connection, so rm_loop_free can end lingering ones */
  pthread_t thread;
  int has_thread;
  void (*before_wait)(void *);
  void (*after_wait)(void *);
  void *hook_ud;

  /* Work posted from other threads, woken through a pipe. */
  pthread_mutex_t post_mu;
  pthread_cond_t post_cv;
  rm__post *post_head, *post_tail;
  int wake_rd, wake_wr, wake_pending;
  int resolvers;      /* lookups running on helper threads */
};

/* fd is closed next: its watch goes (epoll drops a closed fd by itself). */
void rm__loop_closing(rm_loop *loop, int fd);
/* Room to watch fd without allocating later: RM_OK, RM_ENOMEM or RM_ELIMIT. */
int rm__loop_reserve(rm_loop *loop, int fd);
/* May one more connection be made (the max_conns cap)? */
int rm__loop_conn_room(const rm_loop *loop);
/* Frees the connections their owners closed that are still delivering
 * (conn.c): at rm_loop_free nothing will run them to their end. */
void rm__conn_free_released(rm_loop *loop);

#define RM__NEW(loop, type) ((type *)rm_loop_alloc((loop), sizeof(type)))
#define RM__FREE(loop, p) rm_loop_free_mem((loop), (p), sizeof(*(p)))

#endif
