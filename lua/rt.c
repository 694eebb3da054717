/* The Lua runtime: the coroutine records, the one resume point, the ready
 * queue, errors and shutdown. See rt.h. */
#include <string.h>
#include <time.h>
#include "lua/rt.h"

static const char RT_KEY = 'R';   /* registry key: its address */

rm_rt *rm_rt_get(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  rm_rt *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return rt;
}

static rm_co **co_slot(lua_State *L) { return (rm_co **)lua_getextraspace(L); }

void *rm_rt_record(lua_State *L, const void *key, size_t size, lua_CFunction gc) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    memset(lua_newuserdatauv(L, size, 0), 0, size);
    if (gc) {
      lua_createtable(L, 0, 1);
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
      lua_setmetatable(L, -2);
    }
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
  void *p = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return p;
}

/* coroutine.resume and coroutine.close refuse a coroutine remora runs: one
 * suspended in a binding would wake early with the caller's values (and be
 * resumed again, dead, when its wait ended), one closed would leave its
 * wait behind. The original function is the upvalue. */
static int guarded(lua_State *L) {
  lua_State *T = lua_tothread(L, 1);
  if (T && *co_slot(T)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume or close a coroutine remora runs (a socket, timer or page coroutine)");
    return 2;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static void guard(lua_State *L, const char *name) {
  lua_getfield(L, -1, name);
  lua_pushcclosure(L, guarded, 1);
  lua_setfield(L, -2, name);
}

void rm__rt_register(lua_State *L, rm_rt *rt) {
  lua_pushlightuserdata(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    guard(L, "resume");
    guard(L, "close");
  }
  lua_pop(L, 1);
}

rm_co *rm_co_current(lua_State *L) {
  rm_co *co = *co_slot(L);
  if (!co || co->L != L || !rm_loop_on_thread(co->rt->loop)) return NULL;
  return co;
}

/* ---- the Lua lock ---- */

void rm_rt_lock_init(rm_rt *rt) {
  pthread_mutex_init(&rt->lock_mu, NULL);
  pthread_cond_init(&rt->lock_cv, NULL);
  rt->lock_next = rt->lock_serving = 0;
}

void rm_rt_lock_destroy(rm_rt *rt) {
  pthread_mutex_destroy(&rt->lock_mu);
  pthread_cond_destroy(&rt->lock_cv);
}

void rm_rt_enter(rm_rt *rt) {
  pthread_mutex_lock(&rt->lock_mu);
  unsigned long ticket = rt->lock_next++;
  while (ticket != rt->lock_serving) pthread_cond_wait(&rt->lock_cv, &rt->lock_mu);
  pthread_mutex_unlock(&rt->lock_mu);
}

void rm_rt_leave(rm_rt *rt) {
  pthread_mutex_lock(&rt->lock_mu);
  rt->lock_serving++;
  if (rt->lock_next != rt->lock_serving) pthread_cond_broadcast(&rt->lock_cv);
  pthread_mutex_unlock(&rt->lock_mu);
}

void rm_rt_leave_ready(rm_rt *rt) {
  rm_rt_run_ready(rt);
  rm_rt_leave(rt);
}

void rm_rt_yield_lock(rm_rt *rt) {
  pthread_mutex_lock(&rt->lock_mu);
  int waiting = rt->lock_next - rt->lock_serving > 1;
  pthread_mutex_unlock(&rt->lock_mu);
  if (!waiting) return;
  rm_rt_leave(rt);
  rm_rt_enter(rt);   /* behind the waiters: they run first */
}

typedef struct on_loop_call { rm_rt *rt; void (*fn)(rm_rt *, void *); void *ud; } on_loop_call;

static void run_on_loop(void *arg) {
  on_loop_call c = *(on_loop_call *)arg;
  rm_loop_free_mem(c.rt->loop, arg, sizeof(on_loop_call));
  rm_rt_enter(c.rt);
  c.fn(c.rt, c.ud);
  rm_rt_run_ready(c.rt);
  rm_rt_leave(c.rt);
}

int rm_rt_on_loop(rm_rt *rt, void (*fn)(rm_rt *, void *), void *ud) {
  if (rm_loop_on_thread(rt->loop)) { fn(rt, ud); return RM_OK; }
  on_loop_call *c = rm_loop_alloc(rt->loop, sizeof(*c));
  if (!c) return RM_ENOMEM;
  *c = (on_loop_call){rt, fn, ud};
  int rc = rm_loop_post(rt->loop, run_on_loop, c);
  if (rc != RM_OK) rm_loop_free_mem(rt->loop, c, sizeof(*c));
  return rc;
}

const char *rm_errstr(int err) {
  switch (err) {
  case RM_ECLOSED: return "socketclosed";
  case RM_ETIMEDOUT: return "timeout";
  case RM_ERESOLVE: return "cannotresolve";
  case RM_ECONNECT: return "cannotconnect";
  case RM_ENOMEM: return "malloc";
  case RM_EINVAL: return "incorrectuse";
  case RM_ELIMIT: return "cannotconnect";
  default: return "failed";
  }
}

int rm_push_error(lua_State *L, const char *reason) {
  lua_pushnil(L);
  lua_pushstring(L, reason);
  return 2;
}

static int push_traceback(lua_State *L) {
  luaL_traceback(L, lua_touserdata(L, 1), lua_touserdata(L, 2), 0);
  return 1;
}

/* The traceback is built in a protected call, with no coroutine marked as
 * running so the Lua memory limit (lba.c) lets it through: when the error was
 * "not enough memory" the log still says where. Should memory really run
 * out, the message alone is logged (an unprotected failure would be a panic,
 * the end of the process). */
int rm_push_addr(lua_State *L, const struct sockaddr *sa) {
  char ip[64];
  int port;
  int v6 = rm_addr_format(sa, ip, sizeof ip, &port);
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  lua_pushboolean(L, v6);
  return 3;
}

int rm_push_sockname(lua_State *L, int fd, int peer) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &len) : getsockname(fd, (struct sockaddr *)&ss, &len);
  if (fd < 0 || rc != 0) return rm_push_error(L, "socketclosed");
  return rm_push_addr(L, (struct sockaddr *)&ss);
}

void rm_rt_log_error(rm_rt *rt, lua_State *co, const char *what) {
  lua_State *L = rt->L, *running = rt->running;
  const char *msg = lua_tostring(co, -1);
  if (!msg) msg = luaL_typename(co, -1);
  lua_pushcfunction(L, push_traceback);
  lua_pushlightuserdata(L, co);
  lua_pushlightuserdata(L, (void *)msg);
  rt->running = NULL;
  int status = lua_pcall(L, 2, 1, 0);
  rt->running = running;
  if (status == LUA_OK)
    rm_loop_log(rt->loop, RM_LOG_ERROR, "%s: %s", what, lua_tostring(L, -1));
  else
    rm_loop_log(rt->loop, RM_LOG_ERROR, "%s: %s (no traceback: out of memory)", what, msg);
  lua_pop(L, 1);
}

/* A worker waits for the dispatcher to say done, the Lua lock released. */
typedef struct latch {
  int done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} latch;

static void latch_init(latch *l) {
  l->done = 0;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
}

static void latch_open(latch *l) {
  pthread_mutex_lock(&l->mu);
  l->done = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

/* Waits (when armed: what opens it was posted) and frees the latch. */
static void latch_wait(rm_rt *rt, latch *l, int armed) {
  if (armed) {
    rm_rt_leave(rt);
    pthread_mutex_lock(&l->mu);
    while (!l->done) pthread_cond_wait(&l->cv, &l->mu);   /* the loop runs posts even at shutdown */
    pthread_mutex_unlock(&l->mu);
    rm_rt_enter(rt);
  }
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
}

typedef struct sync_call {
  void (*fn)(rm_rt *, void *);
  void *ud;
  latch done;
} sync_call;

static void run_sync(rm_rt *rt, void *ud) {
  sync_call *c = ud;
  c->fn(rt, c->ud);
  latch_open(&c->done);
}

int rm_rt_on_loop_wait(rm_rt *rt, void (*fn)(rm_rt *, void *), void *ud) {
  if (rm_loop_on_thread(rt->loop)) { fn(rt, ud); return RM_OK; }
  sync_call c = {.fn = fn, .ud = ud};
  latch_init(&c.done);
  int rc = rm_rt_on_loop(rt, run_sync, &c);
  latch_wait(rt, &c.done, rc == RM_OK);
  return rc;
}

typedef struct delegate_call { lua_State *L; lua_CFunction f; int nargs, status, nres; } delegate_call;

static void run_delegate(rm_rt *rt, void *ud) {
  delegate_call *d = ud;
  int base = lua_gettop(d->L) - d->nargs;
  lua_pushcfunction(d->L, d->f);
  lua_insert(d->L, base + 1);
  d->status = lua_pcall(d->L, d->nargs, LUA_MULTRET, 0);
  d->nres = lua_gettop(d->L) - base;
}

int rm_rt_delegate_n(lua_State *L, lua_CFunction f, int nargs) {
  delegate_call d = {L, f, nargs, LUA_OK, 0};
  if (rm_rt_on_loop_wait(rm_rt_get(L), run_delegate, &d) != RM_OK) return luaL_error(L, "out of memory");
  if (d.status != LUA_OK) return lua_error(L);
  return d.nres;
}

int rm_rt_delegate(lua_State *L, lua_CFunction f) { return rm_rt_delegate_n(L, f, lua_gettop(L)); }

/* rm_rt_delegate_co: f runs as a coroutine on the dispatcher, which may
 * suspend; its results wait in a registry table for the worker. */
typedef struct co_call {
  lua_State *L;          /* the worker's, holding f's arguments until the start */
  lua_CFunction f;
  int nargs, status, ref;
  latch done;            /* opened when the coroutine has ended */
} co_call;

static int co_call_k(lua_State *L, int status, lua_KContext ctx) {
  co_call *c = (co_call *)ctx;
  int n = lua_gettop(L);   /* f's results, or its error */
  c->status = status == LUA_YIELD ? LUA_OK : status;
  lua_createtable(L, n, 1);
  lua_insert(L, 1);
  for (int i = n; i >= 1; i--) lua_rawseti(L, 1, i);
  lua_pushinteger(L, n);
  lua_setfield(L, 1, "n");
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int co_call_body(lua_State *L) {
  co_call *c = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushcfunction(L, c->f);
  lua_insert(L, 1);
  return co_call_k(L, lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, (lua_KContext)c, co_call_k),
                   (lua_KContext)c);
}

/* The coroutine ended (or was killed before its results): the worker goes on. */
static void co_call_done(rm_co *co, int result) {
  latch_open(&((co_call *)co->data)->done);
}

static void co_call_start(rm_rt *rt, void *ud) {
  co_call *c = ud;
  lua_pushlightuserdata(c->L, c);
  lua_pushcclosure(c->L, co_call_body, 1);
  lua_insert(c->L, -(c->nargs + 1));
  rm_co *co = rm_co_new(rt, c->L, c->nargs, NULL, 0);
  co->data = c;
  co->on_done = co_call_done;
  rm_co_run(co);
}

int rm_rt_delegate_co(lua_State *L, lua_CFunction f, int nargs) {
  rm_rt *rt = rm_rt_get(L);
  co_call c = {.L = L, .f = f, .nargs = nargs, .status = LUA_OK, .ref = LUA_NOREF};
  latch_init(&c.done);
  int rc = rm_rt_on_loop_wait(rt, co_call_start, &c);
  latch_wait(rt, &c.done, rc == RM_OK);   /* shutdown ends the coroutine too */
  if (rc != RM_OK) return luaL_error(L, "out of memory");
  if (c.ref == LUA_NOREF) return rm_push_error(L, "sysshutdown");
  lua_rawgeti(L, LUA_REGISTRYINDEX, c.ref);
  luaL_unref(L, LUA_REGISTRYINDEX, c.ref);
  lua_getfield(L, -1, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "results");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));
  if (c.status != LUA_OK) return lua_error(L);
  return n;
}

void rm_rt_pause(rm_rt *rt, long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  rm_rt_leave(rt);
  nanosleep(&ts, NULL);
  rm_rt_enter(rt);
}

/* ---- coroutine records ---- */

static void co_free(rm_co *co) {
  rm_rt *rt = co->rt;
  if (co->prev) co->prev->next = co->next; else rt->all = co->next;
  if (co->next) co->next->prev = co->prev;
  rt->nco--;
  *co_slot(co->L) = NULL;
  if (co->timer) rm_timer_free(co->timer);
  /* An ended thread is as good as new once its stack is empty (a failed
   * one was reset by co_resume or rm_co_kill, which leaves it LUA_OK). */
  if (lua_status(co->L) == LUA_OK && rt->nspare < RM_RT_SPARE_THREADS && !rt->shutting_down) {
    lua_settop(co->L, 0);
    rt->spare[rt->nspare++] = co->ref;
  } else {
    luaL_unref(rt->L, LUA_REGISTRYINDEX, co->ref);
  }
  rm_loop_unref(rt->loop);
  rm_loop_free_mem(rt->loop, co, sizeof(*co));
}

/* The coroutine ended, normally or not: release what it owned. */
static void co_finish(rm_co *co, int result) {
  if (co->on_done) co->on_done(co, result);
  rm_sock *s = co->sock;
  co->sock = NULL;
  if (s) rm_sock_owner_done(s);
  co_free(co);
}

/* The one resume point: runs co until it suspends or ends, and handles
 * errors and stray yields the same way for every kind of coroutine. */
static void co_resume(rm_co *co, int nargs) {
  rm_rt *rt = co->rt;
  lua_State *prev = rt->running;
  int nres;
  rt->running = co->L;
  int status = lua_resume(co->L, prev, nargs, &nres);
  rt->running = prev;
  if (status == LUA_YIELD) {
    if (co->waiting) return;           /* suspended by a binding: it will be woken */
    co->yielded = nres > 0 && lua_toboolean(co->L, -nres);
    lua_pop(co->L, nres);
    if (co->flags & RM_CO_BARE_YIELD) return;  /* the owner (a timer) resumes it */
    lua_pushliteral(co->L, "invalid yield: a socket coroutine may only be suspended by remora's calls");
    status = LUA_ERRRUN;
  }
  int result = status == LUA_OK && nres > 0 && lua_toboolean(co->L, -nres);
  if (status != LUA_OK) {
    rm_rt_log_error(rt, co->L, "error in coroutine");
    lua_resetthread(co->L);   /* closes its to-be-closed variables */
  }
  co_finish(co, result);
}

void rm_co_kill(rm_co *co) {
  if (co->on_wake) co->on_wake(co);   /* whatever it waited on forgets it */
  lua_resetthread(co->L);
  co_finish(co, 0);
}

/* nargs is a 20-bit field: no Lua stack holds more values. */
_Static_assert(LUAI_MAXSTACK < (1 << 20), "rm_co.nargs is too narrow for this Lua");

rm_co *rm_co_new(rm_rt *rt, lua_State *L, int nargs, rm_sock *owner, int flags) {
  rm_co *co = rm_loop_alloc(rt->loop, sizeof(*co));
  if (!co) luaL_error(L, "out of memory");
  memset(co, 0, sizeof(*co));
  lua_State *T;
  if (rt->nspare) {
    co->ref = rt->spare[--rt->nspare];
    lua_rawgeti(L, LUA_REGISTRYINDEX, co->ref);
    T = lua_tothread(L, -1);
    lua_pop(L, 1);
  } else {
    T = lua_newthread(L);
    co->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  co->rt = rt;
  co->L = T;
  co->sock = owner;
  co->flags = flags;
  *co_slot(T) = co;
  co->next = rt->all;
  if (rt->all) rt->all->prev = co;
  rt->all = co;
  rt->nco++;
  rm_loop_ref(rt->loop);
  lua_xmove(L, T, nargs + 1);
  co->nargs = nargs;
  return co;
}

/* Runs a new coroutine, or resumes one that yielded by itself (a timer). */
int rm_co_run(rm_co *co) {
  lua_State *T = co->L;
  int n = co->nargs;
  co->nargs = 0;
  co_resume(co, n);
  return *co_slot(T) == co;
}

/* ---- waiting ---- */

static void wait_timeout(rm_timer *t, void *ud) {
  rm_co *co = ud;
  rm_rt *rt = co->rt;   /* co may end, and be freed, while the queue runs */
  rm_rt_enter(rt);
  rm_co_wake(co, RM_WAKE_TIMEOUT);
  rm_rt_leave_ready(rt);
}

int rm_co_suspend(lua_State *L, rm_co *co, int why, rm_sock *on, long timeout_ms,
                  lua_KFunction k, lua_KContext ctx) {
  if (co->rt->shutting_down) {   /* nothing will wake it again */
    co->wait_sock = on;   /* the caller registered the wait: undone as a wake would */
    if (co->on_wake) co->on_wake(co);
    co->on_wake = NULL;
    co->wait_sock = NULL;
    if (co->flags & RM_CO_SHUTDOWN_SEEN)
      return luaL_error(L, "sysshutdown: the process is stopping; this coroutine must end");
    co->flags |= RM_CO_SHUTDOWN_SEEN;
    co->wake = RM_WAKE_SHUTDOWN;
    return k(L, LUA_YIELD, ctx);
  }
  co->waiting = why;
  co->wait_sock = on;
  co->wake = 0;
  if (timeout_ms >= 0) {
    if (!co->timer && !(co->timer = rm_timer_new(co->rt->loop, wait_timeout, co)))
      return luaL_error(L, "out of memory");
    rm_timer_start(co->timer, (uint64_t)timeout_ms, 0);
  }
  return lua_yieldk(L, 0, ctx, k);
}

void rm_co_wake(rm_co *co, int reason) {
  if (!co->waiting || co->ready) return;   /* the first reason wins */
  rm_rt *rt = co->rt;
  if (co->on_wake) co->on_wake(co);
  co->on_wake = NULL;
  co->wait_sock = NULL;
  if (co->timer) rm_timer_stop(co->timer);
  co->wake = reason;
  co->ready = 1;
  co->rnext = NULL;
  if (rt->ready_tail) rt->ready_tail->rnext = co; else rt->ready_head = co;
  rt->ready_tail = co;
}

void rm_co_append(rm_co **head, rm_co **tail, rm_co *co) {
  co->wnext = NULL;
  if (*tail) (*tail)->wnext = co; else *head = co;
  *tail = co;
}

void rm_co_unlink(rm_co **head, rm_co **tail, rm_co *co) {
  rm_co **pp = head, *prev = NULL;
  while (*pp && *pp != co) { prev = *pp; pp = &(*pp)->wnext; }
  if (!*pp) return;
  *pp = co->wnext;
  if (*tail == co) *tail = prev;
  co->wnext = NULL;
}

void rm_co_wake_with(rm_co *co, lua_State *from, int nargs) {
  if (!co->waiting || co->ready) { lua_pop(from, nargs); return; }
  lua_xmove(from, co->L, nargs);
  co->nargs = nargs;
  rm_co_wake(co, RM_WAKE_READY);
}

void rm_rt_later(rm_rt *rt, rm_rt_task *t) {
  t->next = NULL;
  if (rt->later_tail) rt->later_tail->next = t; else rt->later_head = t;
  rt->later_tail = t;
}

void rm_rt_run_ready(rm_rt *rt) {
  if (rt->running) return;   /* the outermost resume drains the queues */
  for (;;) {
    rm_co *co = rt->ready_head;
    if (co) {
      rt->ready_head = co->rnext;
      if (!rt->ready_head) rt->ready_tail = NULL;
      co->ready = 0;
      co->waiting = RM_WAIT_NONE;
      int n = co->nargs;
      co->nargs = 0;
      co_resume(co, n);
      continue;
    }
    rm_rt_task *t = rt->later_head;
    if (!t) return;
    rt->later_head = t->next;
    if (!rt->later_head) rt->later_tail = NULL;
    t->fn(rt, t);
  }
}

void rm_rt_shutdown(rm_rt *rt) {
  rt->shutting_down = 1;
  for (rm_co *co = rt->all; co; co = co->next) {
    if (co->waiting && !co->ready) co->flags |= RM_CO_SHUTDOWN_SEEN;
    rm_co_wake(co, RM_WAKE_SHUTDOWN);
  }
  rm_rt_run_ready(rt);
}
