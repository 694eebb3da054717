/* ba.timer and the sleeps. A timer's function runs as a coroutine, so it may
 * use socket calls that suspend; it repeats while it returns true, or, in
 * coroutine style, is resumed at each interval while it yields true. */
#include <time.h>
#include "lua/rt.h"

#define TIMER_MT "ba.timer"

typedef struct {
  rm_rt *rt;
  rm_timer *t;
  int fn, self;        /* registry references: the function; the object while active */
  rm_co *co;           /* the coroutine of a running or yielded call */
  uint64_t ms;
} ltimer;

static void ltimer_stop(ltimer *lt) {
  rm_timer_stop(lt->t);
  if (lt->co && !lt->co->waiting) rm_co_kill(lt->co);  /* a coroutine-style timer that yielded */
  luaL_unref(lt->rt->L, LUA_REGISTRYINDEX, lt->self);
  lt->self = LUA_NOREF;
}

static void call_done(rm_co *co, int result) {
  ltimer *lt = co->data;
  lt->co = NULL;
  if (!result) ltimer_stop(lt);
}

/* One tick: start the function, or resume the coroutine that yielded. A call
 * still waiting on a socket lets the tick pass. */
static void tick(ltimer *lt) {
  if (lt->co) {
    if (lt->co->waiting) return;
    if (rm_co_run(lt->co) && !lt->co->yielded) ltimer_stop(lt);
    return;
  }
  lua_State *L = lt->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, lt->fn);
  rm_co *co = rm_co_new(lt->rt, L, 0, NULL, RM_CO_BARE_YIELD);
  co->on_done = call_done;
  co->data = lt;
  lt->co = co;
  if (rm_co_run(co) && !co->waiting && !co->yielded) ltimer_stop(lt);
}

static void on_timer(rm_timer *t, void *ud) {
  ltimer *lt = ud;
  rm_rt_enter(lt->rt);
  tick(lt);
  rm_rt_run_ready(lt->rt);
  rm_rt_leave(lt->rt);
}

static ltimer *check(lua_State *L) { return luaL_checkudata(L, 1, TIMER_MT); }

static int timer_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  rm_rt *rt = rm_rt_get(L);
  RM_ON_LOOP(L, rt, timer_new);
  ltimer *lt = lua_newuserdatauv(L, sizeof(ltimer), 0);
  *lt = (ltimer){.rt = rt, .fn = LUA_NOREF, .self = LUA_NOREF};
  luaL_setmetatable(L, TIMER_MT);
  lt->t = rm_timer_new(rt->loop, on_timer, lt);
  if (!lt->t) return luaL_error(L, "out of memory");
  lua_pushvalue(L, 1);
  lt->fn = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* timer:set(ms [, keepref [, runnow]]). An active timer is always kept alive
 * (keepref is accepted for compatibility): a running timer that vanished with
 * the garbage collector would be a silent bug. */
static int timer_set(lua_State *L) {
  ltimer *lt = check(L);
  RM_ON_LOOP(L, lt->rt, timer_set);
  lua_Integer ms = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ms >= 0, 2, "interval must not be negative");
  lt->ms = (uint64_t)ms;
  if (lt->self == LUA_NOREF) {
    lua_pushvalue(L, 1);
    lt->self = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  rm_timer_start(lt->t, lt->ms, lt->ms ? lt->ms : 1);
  if (lua_toboolean(L, 4)) tick(lt);
  lua_settop(L, 1);
  return 1;
}

static int timer_reset(lua_State *L) {
  ltimer *lt = check(L);
  RM_ON_LOOP(L, lt->rt, timer_reset);
  if (!lua_isnoneornil(L, 2)) lt->ms = (uint64_t)luaL_checkinteger(L, 2);
  if (lt->self == LUA_NOREF) return 0;
  rm_timer_start(lt->t, lt->ms, lt->ms ? lt->ms : 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int timer_cancel(lua_State *L) {
  ltimer *lt = check(L);
  RM_ON_LOOP(L, lt->rt, timer_cancel);
  int was = rm_timer_active(lt->t);
  if (lt->self != LUA_NOREF) ltimer_stop(lt);
  lua_pushboolean(L, was);
  return 1;
}

static void free_timer(rm_rt *rt, void *t) { rm_timer_free(t); }

static int timer_gc(lua_State *L) {
  ltimer *lt = check(L);
  if (lt->t) rm_rt_on_loop(lt->rt, free_timer, lt->t);   /* the loop's heap is the loop's */
  lt->t = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, lt->fn);
  return 0;
}

/* ---- sleeping ---- */

static int slept_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake == RM_WAKE_SHUTDOWN) return rm_push_error(L, "sysshutdown");
  lua_pushboolean(L, 1);
  return 1;
}

/* ba.socket.sleep(ms) and ba.sleep(ms): in a coroutine on the dispatcher only
 * the coroutine waits; elsewhere the calling thread does. */
static int ba_sleep(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  rm_co *co = rm_co_current(L);
  if (co) return rm_co_suspend(L, co, RM_WAIT_SLEEP, NULL, ms < 0 ? 0 : (long)ms, slept_k, 0);
  rm_rt *rt = rm_rt_get(L);
  if (rm_loop_on_thread(rt->loop))
    return luaL_error(L, "sleep would block the dispatcher: call it from a coroutine or a thread job");
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  rm_rt_leave(rt);
  nanosleep(&ts, NULL);
  rm_rt_enter(rt);
  lua_pushboolean(L, 1);
  return 1;
}

int rm_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {{"set", timer_set}, {"reset", timer_reset}, {"cancel", timer_cancel}, {NULL, NULL}};
  luaL_newmetatable(L, TIMER_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, timer_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, timer_new);
  lua_setfield(L, -2, "timer");      /* on the ba table below the metatable */
  lua_pushcfunction(L, ba_sleep);
  lua_setfield(L, -2, "sleep");
  return 0;
}
