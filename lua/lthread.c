/* ba.thread: Lua functions run on the worker pool. A job holds the Lua lock
 * while it runs Lua and releases it wherever it waits (blocking sockets,
 * ba.sleep), so the dispatcher and other jobs run meanwhile. Each job keeps
 * the loop alive until it is done. */
#include <string.h>
#include "remora/pool.h"
#include "lua/rt.h"

#define QUEUE_MT "ba.thread.queue"
enum { FAIR_HOOK_COUNT = 4000 };   /* instructions between offers of the lock */

typedef struct job { rm_rt *rt; int fn; } job;

static int traceback(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

static void job_work(void *arg, int status) {
  job *j = arg;
  rm_rt *rt = j->rt;
  if (status != RM_OK) return;          /* cancelled at shutdown */
  rm_rt_enter(rt);
  lua_State *T = lua_newthread(rt->L);
  int tref = luaL_ref(rt->L, LUA_REGISTRYINDEX);
  lua_pushcfunction(T, traceback);
  lua_rawgeti(T, LUA_REGISTRYINDEX, j->fn);
  if (lua_pcall(T, 0, 0, 1) != LUA_OK)
    rm_loop_log(rt->loop, RM_LOG_ERROR, "error in thread job: %s", lua_tostring(T, -1));
  luaL_unref(rt->L, LUA_REGISTRYINDEX, tref);
  rm_rt_leave(rt);
}

static void job_done(void *arg, int status) {
  job *j = arg;
  rm_rt *rt = j->rt;
  rm_rt_enter(rt);
  luaL_unref(rt->L, LUA_REGISTRYINDEX, j->fn);
  rm_rt_leave(rt);
  rm_loop_unref(rt->loop);
  rm_loop_free_mem(rt->loop, j, sizeof(*j));
}

static void ref_loop(rm_rt *rt, void *ud) { rm_loop_ref(rt->loop); }
static void unref_loop(rm_rt *rt, void *ud) { rm_loop_unref(rt->loop); }

static rm_pool *get_pool(lua_State *L, rm_rt *rt) {
  if (!rt->pool) {
    void *ud;
    rm_alloc_fn alloc = rm_loop_allocator(rt->loop, &ud);
    rm_pool_config cfg = {.threads = rt->threads, .alloc = alloc, .alloc_ud = ud};
    rt->pool = rm_pool_new(&cfg);
    if (!rt->pool) luaL_error(L, "ba.thread: cannot start the worker pool");
  }
  return rt->pool;
}

/* Submits fn (at idx) to the pool or to a serial queue. */
static int submit(lua_State *L, int idx, rm_pool_queue *q) {
  rm_rt *rt = rm_rt_get(L);
  luaL_checktype(L, idx, LUA_TFUNCTION);
  if (rt->shutting_down) return rm_push_error(L, "sysshutdown");
  rm_pool *pool = get_pool(L, rt);
  job *j = rm_loop_alloc(rt->loop, sizeof(*j));
  if (!j) return rm_push_error(L, "malloc");
  lua_pushvalue(L, idx);
  *j = (job){rt, luaL_ref(L, LUA_REGISTRYINDEX)};
  rm_rt_on_loop(rt, ref_loop, NULL);   /* before the job can finish: posts keep order */
  int rc = q ? rm_pool_queue_submit_then(q, rt->loop, job_work, job_done, j)
             : rm_pool_submit_then(pool, rt->loop, job_work, job_done, j);
  if (rc < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, j->fn);
    rm_loop_free_mem(rt->loop, j, sizeof(*j));
    rm_rt_on_loop(rt, unref_loop, NULL);
    return rm_push_error(L, rc == RM_EINVAL ? "nothreads" : rc == RM_EFULL ? "queuefull" : "failed");
  }
  lua_pushinteger(L, rc);
  return 1;
}

/* ba.thread.run(fn): the number of jobs pending. */
static int thread_run(lua_State *L) { return submit(L, 1, NULL); }

/* ba.thread.create(): a queue whose jobs run one at a time, in order. */
static int thread_create(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  rm_pool_queue **q = lua_newuserdatauv(L, sizeof(*q), 0);
  *q = rm_pool_queue_new(get_pool(L, rt));
  if (!*q) return luaL_error(L, "ba.thread.create: out of memory");
  luaL_setmetatable(L, QUEUE_MT);
  return 1;
}

static int queue_run(lua_State *L) {
  rm_pool_queue **q = luaL_checkudata(L, 1, QUEUE_MT);
  if (!*q) return rm_push_error(L, "sysshutdown");
  return submit(L, 2, *q);
}

static int queue_gc(lua_State *L) {
  rm_pool_queue **q = luaL_checkudata(L, 1, QUEUE_MT);
  rm_rt *rt = rm_rt_get(L);
  if (*q && rt->pool) rm_pool_queue_free(*q);   /* its queued jobs still run */
  *q = NULL;
  return 0;
}

/* ba.thread.configure([n]): the number of workers, optionally changing it. */
static int thread_configure(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  rm_pool *pool = get_pool(L, rt);
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "thread count must not be negative");
    if (rm_pool_resize(pool, (int)n) != RM_OK) return rm_push_error(L, "failed");
  }
  rm_pool_stats st;
  rm_pool_stats_get(pool, &st);
  lua_pushinteger(L, st.threads);
  return 1;
}

/* Long Lua code offers the lock to waiting threads now and then, so a busy
 * job cannot starve the dispatcher, nor a busy dispatcher a job. */
static void fair_hook(lua_State *L, lua_Debug *ar) {
  rm_rt *rt = rm_rt_get(L);
  if (rt->pool) rm_rt_yield_lock(rt);
}

int rm_open_thread(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"run", thread_run}, {"create", thread_create}, {"configure", thread_configure}, {NULL, NULL}};
  static const luaL_Reg qmethods[] = {{"run", queue_run}, {NULL, NULL}};
  luaL_newmetatable(L, QUEUE_MT);
  luaL_newlib(L, qmethods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, queue_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_sethook(L, fair_hook, LUA_MASKCOUNT, FAIR_HOOK_COUNT);   /* new threads inherit it */
  luaL_newlib(L, funcs);
  return 1;
}

/* Stops the pool: queued jobs are cancelled, running ones hear "sysshutdown"
 * at their next wait. Called with the Lua lock held; releases it while the
 * workers finish, and runs the loop so their posts are answered. */
void rm_thread_shutdown(rm_rt *rt) {
  if (!rt->pool) return;
  rm_pool_stop(rt->pool);
  rm_rt_leave(rt);
  int rc, tries = 0;
  while ((rc = rm_pool_free(rt->pool, 20)) == RM_ETIMEDOUT && tries++ < 100)
    rm_loop_run_once(rt->loop, 0);
  while (rm_loop_run_once(rt->loop, 0) > 0) {}   /* the last job_done posts */
  rm_rt_enter(rt);
  if (rc == RM_ETIMEDOUT) rm_loop_log(rt->loop, RM_LOG_ERROR, "thread jobs did not finish in 2 s");
  else rt->pool = NULL;
}
