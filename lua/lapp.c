/* lua/lapp.c: directory applications.
 *
 * An app is a directory served by the HTTP server, with an environment of its
 * own: a table whose __index is _G, where `app` refers to the table itself.
 * Its `.preload` script runs once in that environment when the app starts
 * (as a coroutine, so it may start cosockets and timers); `require` there and
 * in the app's pages finds the app's modules in `.lua/` first (`.lua/a/b.lua`
 * for "a.b"), loaded into the same environment, before the global ones. When
 * the app stops, its `onunload()` runs, if it defined one. Every page
 * environment has the app's environment behind it (see lhttp.c).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lua/lhttp.h"

enum { DEFAULT_MAX_QUEUE = 256 * 1024 };

/* Returns the environment and the page environments' metatable. */
static const char APP_LUA[] =
  "local dir = ...\n"
  "local env = setmetatable({}, {__index = _G})\n"
  "env.app = env\n"
  "local loaded, path = {}, dir .. '/.lua/?.lua;' .. dir .. '/.lua/?/init.lua'\n"
  "function env.require(name)\n"
  "  local m = loaded[name]\n"
  "  if m ~= nil then return m end\n"
  "  local file = package.searchpath(name, path)\n"
  "  if not file then return require(name) end\n"
  "  local fn, err = loadfile(file, 'bt', env)\n"
  "  if not fn then error(err, 2) end\n"
  "  m = fn(name, file)\n"
  "  if m == nil then m = true end\n"
  "  loaded[name] = m\n"
  "  return m\n"
  "end\n"
  "return env, {__index = env}\n";

/* Runs dir/.preload in the app's environment, as a coroutine. */
static void run_preload(rm_app *a) {
  lua_State *L = a->rt->L;
  char file[4096];
  snprintf(file, sizeof file, "%s/.preload", a->dir);
  if (access(file, R_OK) != 0) return;
  if (luaL_loadfilex(L, file, "bt") != LUA_OK) {
    rm_loop_log(a->rt->loop, RM_LOG_ERROR, "app %s: %s", a->dir, lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->env);
  lua_setupvalue(L, -2, 1);   /* its _ENV */
  rm_co_run(rm_co_new(a->rt, L, 0, NULL, 0));
  rm_rt_run_ready(a->rt);
}

rm_app *rm_app_new(rm_rt *rt, const char *dir, int dev, int pool) {
  lua_State *L = rt->L;
  rm__lhttp_open(L);
  rm_app *a = calloc(1, sizeof *a);
  if (!a || !(a->dir = strdup(dir))) { free(a); return NULL; }
  a->rt = rt;
  a->h = rm_lhttp_get(L);
  a->dev = dev;
  a->pool = pool;
  a->max_queue = DEFAULT_MAX_QUEUE;
  if (luaL_loadbuffer(L, APP_LUA, sizeof APP_LUA - 1, "=app") != LUA_OK) {
    rm_loop_log(rt->loop, RM_LOG_ERROR, "app: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    free(a->dir);
    free(a);
    return NULL;
  }
  lua_pushstring(L, dir);
  lua_call(L, 1, 2);
  a->envmt = luaL_ref(L, LUA_REGISTRYINDEX);
  a->env = luaL_ref(L, LUA_REGISTRYINDEX);
  run_preload(a);
  return a;
}

void rm_app_free(rm_app *a) {
  lua_State *L = a->rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->env);
  if (lua_getfield(L, -1, "onunload") == LUA_TFUNCTION) {
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
      rm_loop_log(a->rt->loop, RM_LOG_ERROR, "app %s: onunload: %s", a->dir, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, a->env);
  luaL_unref(L, LUA_REGISTRYINDEX, a->envmt);
  free(a->dir);
  free(a);
}
