/* The runtime's construction and the `ba` table: ba.socket, ba.timer,
 * ba.sleep, ba.json, trace. Also the public embedding API (remora/lua.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lualib.h>
#include "remora/lua.h"
#include "lua/rt.h"
#include "lua/lhttp.h"

void rm__rt_register(lua_State *L, rm_rt *rt);
int rm_open_tls(lua_State *L);   /* ba.create (ltls.c) */

enum { DEFAULT_QUEUELEN = 16 * 1024 };

/* trace(...): a log line with the caller's file and line. */
static int ba_trace(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  luaL_Buffer b;
  lua_Debug ar;
  int n = lua_gettop(L);   /* before the buffer puts its own slot on the stack */
  luaL_buffinit(L, &b);
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
    lua_pushfstring(L, "%s:%d:", ar.short_src, ar.currentline);
    luaL_addvalue(&b);
  }
  for (int i = 1; i <= n; i++) {
    luaL_addchar(&b, ' ');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  rm_loop_log(rt->loop, RM_LOG_INFO, "%s", lua_tostring(L, -1));
  return 0;
}

/* ba.clock(): milliseconds on a monotonic clock (any thread). */
static int ba_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
  return 1;
}

/* Parts of `ba` that are plainest in Lua. cjson is Debian's lua-cjson. */
static const char PRELUDE[] =
  "local ba = ...\n"
  "local ok, cjson = pcall(require, 'cjson')\n"
  "if ok then\n"
  "  local J = cjson.new()\n"
  "  if J.encode_empty_table_as_object then J.encode_empty_table_as_object(false) end\n"
  "  ba.json = { null = J.null, encode = function(v)\n"
  "      local ok, s = pcall(J.encode, v) if ok then return s end return nil, s end,\n"
  "    decode = function(s)\n"
  "      local ok, v = pcall(J.decode, s) if ok then return v end return nil, v end }\n"
  "end\n";

static int open_ba(lua_State *L) {
  lua_newtable(L);
  rm_open_timer(L);
  rm_open_socket(L);
  lua_getfield(L, -2, "sleep");
  lua_setfield(L, -2, "sleep");      /* ba.socket.sleep is ba.sleep */
  lua_setfield(L, -2, "socket");
  rm_open_tls(L);                    /* after ba.socket: it adds the TLS socket methods */
  lua_setfield(L, -2, "create");
  rm_open_thread(L);
  lua_setfield(L, -2, "thread");
  rm_open_http(L);                   /* ba.socket.req2sock/sock2req, require "httpc" */
  lua_pushcfunction(L, ba_clock);
  lua_setfield(L, -2, "clock");
  lua_pushliteral(L, "remora 0.1");
  lua_setfield(L, -2, "version");
  if (luaL_loadbuffer(L, PRELUDE, sizeof PRELUDE - 1, "=ba") == LUA_OK) {
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  return 1;
}

/* The Lua memory limit: the state's allocator counts its bytes and says no
 * past the limit, but only while a coroutine runs on the dispatcher, where
 * the failure is a Lua error that ends that coroutine alone. Elsewhere (C
 * glue between callbacks, worker threads) a refusal would be an unprotected
 * error, a panic: those small allocations may go over. Every call holds the
 * Lua lock, so the counter needs no lock of its own. */
typedef struct lua_budget {
  rm_alloc_fn alloc;
  void *ud;
  rm_rt *rt;
  size_t used, limit;
} lua_budget;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lua_budget *b = ud;
  size_t old = ptr ? osize : 0;   /* for a new block osize is its type, not a size */
  if (nsize > old && b->used - old + nsize > b->limit && b->rt->running &&
      rm_loop_on_thread(b->rt->loop))
    return NULL;   /* Lua collects garbage and retries once before it raises */
  void *p = b->alloc(b->ud, ptr, osize, nsize);
  if (p || nsize == 0) b->used = b->used - old + nsize;
  return p;
}

/* cfg->max_memory, else $REMORA_LUA_MEMORY (bytes, or with a k/m/g suffix). */
static size_t memory_limit(const rm_lua_config *cfg) {
  const char *env = getenv("REMORA_LUA_MEMORY");
  if (cfg && cfg->max_memory) return cfg->max_memory;
  if (!env || !*env) return 0;
  char *end;
  unsigned long long n = strtoull(env, &end, 10);
  switch (*end | 0x20) {
  case 'k': n <<= 10; break;
  case 'm': n <<= 20; break;
  case 'g': n <<= 30; break;
  }
  return (size_t)n;
}

rm_lua *rm_lua_new(rm_loop *loop, const rm_lua_config *cfg) {
  void *ud;
  rm_alloc_fn alloc = rm_loop_allocator(loop, &ud);
  rm_rt *rt = rm_loop_alloc(loop, sizeof(rm_rt));
  if (!rt) return NULL;
  memset(rt, 0, sizeof(*rt));
  size_t limit = memory_limit(cfg);
  if (limit) {
    lua_budget *b = rm_loop_alloc(loop, sizeof(*b));
    if (!b) { rm_loop_free_mem(loop, rt, sizeof(*rt)); return NULL; }
    *b = (lua_budget){alloc, ud, rt, 0, limit};
    alloc = budget_alloc;
    ud = b;
  }
  rt->loop = loop;
  rt->queuelen = cfg && cfg->queuelen ? cfg->queuelen : DEFAULT_QUEUELEN;
  rt->dev = cfg ? cfg->dev : 0;
  rt->threads = cfg ? cfg->threads : -1;
  rt->L = lua_newstate(alloc, ud);
  if (!rt->L) {
    if (limit) rm_loop_free_mem(loop, ud, sizeof(lua_budget));
    rm_loop_free_mem(loop, rt, sizeof(*rt));
    return NULL;
  }
  rm_rt_lock_init(rt);
  lua_State *L = rt->L;
  *(void **)lua_getextraspace(L) = NULL;   /* new threads copy it: none is a remora coroutine */
  luaL_openlibs(L);
  rm__rt_register(L, rt);
  open_ba(L);
  lua_setglobal(L, "ba");
  lua_pushcfunction(L, ba_trace);
  lua_setglobal(L, "trace");
  return rt;
}

lua_State *rm_lua_state(rm_lua *rt) { return rt->L; }
void rm_lua_lock(rm_lua *rt) { rm_rt_enter(rt); }
void rm_lua_unlock(rm_lua *rt) { rm_rt_leave(rt); }

void rm_lua_preload(rm_lua *rt, const char *name, lua_CFunction open) {
  luaL_getsubtable(rt->L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(rt->L, open);
  lua_setfield(rt->L, -2, name);
  lua_pop(rt->L, 1);
}

static int run_loaded(rm_rt *rt, int nargs) {
  rm_co *co = rm_co_new(rt, rt->L, nargs, NULL, 0);
  rm_co_run(co);
  rm_rt_run_ready(rt);
  return 0;
}

int rm_lua_run_file(rm_lua *rt, const char *path, int argc, char **argv) {
  lua_State *L = rt->L;
  lua_createtable(L, argc, 1);
  lua_pushstring(L, path);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfile(L, path) != LUA_OK) {
    rm_loop_log(rt->loop, RM_LOG_ERROR, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return run_loaded(rt, argc);
}

int rm_lua_run_string(rm_lua *rt, const char *chunk, const char *name) {
  if (luaL_loadbuffer(rt->L, chunk, strlen(chunk), name) != LUA_OK) {
    rm_loop_log(rt->loop, RM_LOG_ERROR, "%s", lua_tostring(rt->L, -1));
    lua_pop(rt->L, 1);
    return -1;
  }
  return run_loaded(rt, 0);
}

void rm_lua_shutdown(rm_lua *rt) { rm_rt_shutdown(rt); }

void rm_lua_free(rm_lua *rt) {
  rm_loop *loop = rt->loop;
  rm_rt_shutdown(rt);
  rm_thread_shutdown(rt);
  if (rt->pool) return;   /* a job still runs Lua: the state cannot go (logged) */
  /* Coroutines still listed were never resumed again: release them. */
  while (rt->all) rm_co_kill(rt->all);
  void *ud;
  int budgeted = lua_getallocf(rt->L, &ud) == budget_alloc;
  lua_close(rt->L);
  if (budgeted) rm_loop_free_mem(loop, ud, sizeof(lua_budget));
  rm_rt_lock_destroy(rt);
  rm_loop_free_mem(loop, rt, sizeof(*rt));
}
