/* lua/rt.h: the Lua runtime on the dispatcher: one Lua state, its lock, and
 * the coroutines the bindings suspend and resume.
 *
 * Every coroutine remora starts (socket coroutines, the main chunk, timers,
 * pages) has an rm_co record, found through the thread's extra space. A
 * binding that must wait calls rm_co_suspend() with a continuation; whoever
 * ends the wait calls rm_co_wake(), which queues the coroutine; the queue is
 * run by rm_rt_run_ready(), the one place where coroutines are resumed. */
#ifndef REMORA_LUA_RT_H
#define REMORA_LUA_RT_H

#include <pthread.h>
#include <lua.h>
#include <lauxlib.h>
#include "remora/conn.h"

typedef struct rm_rt rm_rt;
typedef struct rm_co rm_co;
typedef struct rm_sock rm_sock;
typedef struct rm_pool rm_pool;

/* Why a suspended coroutine was resumed. */
enum { RM_WAKE_READY = 1, RM_WAKE_TIMEOUT, RM_WAKE_CLOSED, RM_WAKE_SHUTDOWN };

/* What it waits for (for sock:state() and for unlinking on wake). */
enum { RM_WAIT_NONE, RM_WAIT_READ, RM_WAIT_WRITE, RM_WAIT_ACCEPT, RM_WAIT_CONNECT,
       RM_WAIT_SLEEP, RM_WAIT_DISABLED, RM_WAIT_RESOLVE, RM_WAIT_OTHER };

/* Coroutine flags. */
enum {
  RM_CO_BARE_YIELD = 1,     /* a bare coroutine.yield is allowed (timers) */
  RM_CO_SHUTDOWN_SEEN = 2   /* it was told "sysshutdown"; waiting again is an error */
};

/* One per live coroutine: an idle WebSocket's coroutine keeps one, so the
 * record is kept to 104 bytes (a 112-byte malloc chunk): the queue links
 * share a word, and the small fields share another. */
struct rm_co {
  rm_rt *rt;
  lua_State *L;
  rm_co *prev, *next;    /* every live coroutine, for shutdown */
  /* A coroutine is in at most one queue: once woken, on_wake has taken it
   * out of the queue it waited in (wnext) before it joins the ready queue. */
  union {
    rm_co *rnext;        /* the ready queue */
    rm_co *wnext;        /* a queue of waiting writers (rm_co_append) */
  };
  rm_sock *sock;         /* the socket this coroutine owns, if any */
  rm_sock *wait_sock;    /* the socket it waits on, if any */
  rm_timer *timer;       /* the timeout of the current wait */
  void (*on_wake)(rm_co *co);  /* unlinks the coroutine from what it waited on */
  void *wait_data;       /* for on_wake: what the wait registered elsewhere */
  /* Runs when the coroutine ends; result: it returned a true first value. */
  void (*on_done)(rm_co *co, int result);
  void *data;            /* for on_done */
  int ref;               /* registry anchor of the thread */
  unsigned waiting : 4;  /* RM_WAIT_*, nonzero while suspended by a binding */
  unsigned wake : 3;     /* RM_WAKE_* after resumption */
  unsigned ready : 1;    /* in the ready queue */
  unsigned yielded : 1;  /* after a bare yield: was the first value true? */
  unsigned flags : 3;    /* RM_CO_* */
  unsigned nargs : 20;   /* values moved onto its stack for the resume (< LUAI_MAXSTACK) */
};

/* Work for later (rm_rt_later): a record the caller owns, valid until fn runs. */
typedef struct rm_rt_task rm_rt_task;
struct rm_rt_task {
  rm_rt_task *next;
  void (*fn)(rm_rt *rt, rm_rt_task *t);
};

enum { RM_RT_SPARE_THREADS = 32 };   /* finished coroutine threads kept for reuse */

struct rm_rt {
  rm_loop *loop;
  lua_State *L;
  /* The Lua lock, held by whichever thread runs Lua: a ticket lock, handed
   * over in arrival order so neither the dispatcher nor a worker starves. */
  pthread_mutex_t lock_mu;
  pthread_cond_t lock_cv;
  unsigned long lock_next, lock_serving;
  rm_pool *pool;         /* worker threads; NULL when there are none */
  rm_co *all;
  rm_co *ready_head, *ready_tail;
  rm_rt_task *later_head, *later_tail;   /* rm_rt_later */
  lua_State *running;    /* the coroutine being resumed, or NULL */
  int shutting_down, nco, dev;
  int threads;           /* configured worker count (-1: per CPU) */
  size_t queuelen;       /* default write queue bound of new sockets */
  int nsockets, nlisteners, nudp;
  /* Threads of ended coroutines (registry refs), reused by rm_co_new: a
   * page per request would otherwise make and collect one each time. */
  int spare[RM_RT_SPARE_THREADS], nspare;
};

rm_rt *rm_rt_get(lua_State *L);
/* A module's C record for this Lua state: size zeroed bytes kept in the
 * registry under key, made on the first call; gc (may be NULL) runs when
 * the state closes. */
void *rm_rt_record(lua_State *L, const void *key, size_t size, lua_CFunction gc);
/* The remora coroutine running L if L may be suspended here, else NULL. */
rm_co *rm_co_current(lua_State *L);
/* Makes a coroutine of fn(args...) (the function and nargs values on top of
 * L, popped) without running it; rm_co_run() then runs it to its first
 * suspension and returns whether it is still alive. Between the two the
 * caller can record the coroutine wherever it will be looked for. */
rm_co *rm_co_new(rm_rt *rt, lua_State *L, int nargs, rm_sock *owner, int flags);
int rm_co_run(rm_co *co);
/* Ends a coroutine suspended by a bare yield (a timer that stopped). */
void rm_co_kill(rm_co *co);
/* Suspends the running coroutine; k runs when it is resumed, and reads
 * co->wake. timeout_ms < 0 waits without a deadline. */
int rm_co_suspend(lua_State *L, rm_co *co, int why, rm_sock *on, long timeout_ms,
                  lua_KFunction k, lua_KContext ctx);
/* Ends a wait: the coroutine runs from the ready queue. nargs values on top
 * of `from` are moved to it (may be 0 / NULL). */
void rm_co_wake(rm_co *co, int reason);
void rm_co_wake_with(rm_co *co, lua_State *from, int nargs);
void rm_rt_run_ready(rm_rt *rt);
/* Queues of waiting coroutines linked through wnext, by head and tail (a
 * socket's writers): co joins at the tail, or leaves from anywhere. */
void rm_co_append(rm_co **head, rm_co **tail, rm_co *co);
void rm_co_unlink(rm_co **head, rm_co **tail, rm_co *co);
/* Runs t->fn once the Lua call in progress has returned to the outermost
 * rm_rt_run_ready, after the coroutines it woke: for work that must not nest
 * inside that call (the page of a pipelined request, made ready by the end
 * of the previous page), without a trip through the loop. */
void rm_rt_later(rm_rt *rt, rm_rt_task *t);

/* The Lua lock around every entry into Lua from the dispatcher or a worker. */
void rm_rt_lock_init(rm_rt *rt);
void rm_rt_lock_destroy(rm_rt *rt);
void rm_rt_enter(rm_rt *rt);
void rm_rt_leave(rm_rt *rt);
/* How a dispatcher callback that woke coroutines ends: runs the ready queue,
 * then releases the lock. */
void rm_rt_leave_ready(rm_rt *rt);
/* Lets a waiting thread run Lua, if one waits (long Lua code calls this). */
void rm_rt_yield_lock(rm_rt *rt);
/* Runs fn(ud) on the dispatcher thread, with the Lua lock, from any thread:
 * at once when called there, else posted. For workers touching dispatcher
 * objects (sockets, timers), which only the dispatcher may change. */
int rm_rt_on_loop(rm_rt *rt, void (*fn)(rm_rt *rt, void *ud), void *ud);
/* The same, but a worker waits (the Lua lock released) until fn has run. */
int rm_rt_on_loop_wait(rm_rt *rt, void (*fn)(rm_rt *rt, void *ud), void *ud);
/* Runs the C function f with L's stack (its arguments) on the dispatcher
 * thread while the calling worker waits; returns f's results on L, or
 * re-raises its error. How a worker uses objects only the dispatcher may
 * change: the function runs there exactly as if called there. */
int rm_rt_delegate(lua_State *L, lua_CFunction f);
int rm_rt_delegate_n(lua_State *L, lua_CFunction f, int nargs);   /* the top nargs values */
/* The same for a function that may suspend (a TLS handshake): f runs with
 * the top nargs values as a coroutine of its own on the dispatcher, and the
 * worker waits, the Lua lock released, until it has ended. */
int rm_rt_delegate_co(lua_State *L, lua_CFunction f, int nargs);
#define RM_ON_LOOP(L, rt, f) \
  do { if (!rm_loop_on_thread((rt)->loop)) return rm_rt_delegate((L), (f)); } while (0)
/* A worker waits ms (the Lua lock released). */
void rm_rt_pause(rm_rt *rt, long ms);

/* ba.thread and the worker pool (lthread.c). */
int rm_open_thread(lua_State *L);
void rm_thread_shutdown(rm_rt *rt);

/* Logs a Lua error with the traceback of thread co (may be NULL). */
void rm_rt_log_error(rm_rt *rt, lua_State *co, const char *what);
/* Resumes every suspended coroutine with "sysshutdown". */
void rm_rt_shutdown(rm_rt *rt);

/* Barracuda's error strings for dispatcher errors. */
const char *rm_errstr(int err);
int rm_push_error(lua_State *L, const char *reason);   /* nil, reason */
/* Pushes ip, port, isIPv6 of an address; returns 3. */
int rm_push_addr(lua_State *L, const struct sockaddr *sa);
/* Pushes the peer's (peer != 0) or our own address of a connected fd, as
 * ip, port, isIPv6, or nil, "socketclosed". */
int rm_push_sockname(lua_State *L, int fd, int peer);

/* The modules. */
int rm_open_socket(lua_State *L);   /* ba.socket */
int rm_open_timer(lua_State *L);    /* ba.timer, ba.sleep */
void rm_sock_owner_done(rm_sock *s);  /* the owning coroutine ended */

#endif
