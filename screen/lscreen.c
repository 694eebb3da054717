/* screen/lscreen.c: the screen engine as the Lua module "screen".
 *
 *   local scr, err = screen.open([display])
 *   scr:size() -> w, h      scr:fd() -> n      scr:poll() -> changed
 *   scr:drain() -> drawn (X events only; the grab waits for the next poll)
 *   scr:viewer([{quality=, png_level=, max_colours=}]) -> viewer
 *   viewer:frame() -> string or nil      viewer:reset()
 *   scr:input(msg) -> true[, reply] or nil, reason, close_code
 *   scr:close()
 *
 * Bad client input never raises: input() returns nil, a reason and the
 * WebSocket close code that fits. Only programming errors (wrong argument
 * types, a closed screen) raise. Memory comes from the Lua state's allocator.
 */
#include <lua.h>
#include <lauxlib.h>
#include "screen/screen.h"

#define SCREEN_MT "remora.screen"
#define VIEWER_MT "remora.screen.viewer"

typedef struct lscreen {
  rm_screen *s;
} lscreen;

typedef struct lviewer {
  rm_screen_viewer *v;
} lviewer;

static rm_screen *check_screen(lua_State *L, int idx)
{
  lscreen *u = luaL_checkudata(L, idx, SCREEN_MT);
  if (!u->s) luaL_error(L, "screen is closed");
  return u->s;
}

static int l_open(lua_State *L)
{
  rm_screen_config cfg = {0};
  char err[128];
  lscreen *u;
  cfg.display = luaL_optstring(L, 1, NULL);
  cfg.alloc = lua_getallocf(L, &cfg.alloc_ud);
  u = lua_newuserdatauv(L, sizeof *u, 0);
  u->s = NULL;
  luaL_setmetatable(L, SCREEN_MT);
  if (rm_screen_open(&cfg, &u->s, err, sizeof err) < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

static int l_size(lua_State *L)
{
  int w, h;
  rm_screen_size(check_screen(L, 1), &w, &h);
  lua_pushinteger(L, w);
  lua_pushinteger(L, h);
  return 2;
}

static int l_fd(lua_State *L)
{
  lua_pushinteger(L, rm_screen_fd(check_screen(L, 1)));
  return 1;
}

/* poll and drain: true/false, or nil, "X connection lost". */
static int changed_result(lua_State *L, int rc)
{
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "X connection lost");
    return 2;
  }
  lua_pushboolean(L, rc);
  return 1;
}

static int l_poll(lua_State *L)
{
  return changed_result(L, rm_screen_poll(check_screen(L, 1)));
}

static int l_drain(lua_State *L)
{
  return changed_result(L, rm_screen_drain(check_screen(L, 1)));
}

/* The WebSocket close code a failed input message calls for. */
static int close_code(int rc)
{
  return rc == RM_EFULL ? 1009 : rc == RM_EINVAL ? 1007 : 1011;
}

static int l_input(lua_State *L)
{
  rm_screen *s = check_screen(L, 1);
  size_t len, reply_len;
  const char *msg = luaL_checklstring(L, 2, &len), *why = "error";
  uint8_t reply[RM_SCREEN_REPLY_MAX];
  int rc = rm_screen_input(s, (const uint8_t *)msg, len, reply, &reply_len, &why);
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, why);
    lua_pushinteger(L, close_code(rc));
    return 3;
  }
  lua_pushboolean(L, 1);
  if (!reply_len) return 1;
  lua_pushlstring(L, (const char *)reply, reply_len);
  return 2;
}

static int opt_field(lua_State *L, const char *name, int lo, int hi)
{
  int v = 0;
  if (lua_getfield(L, 2, name) != LUA_TNIL) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "viewer option '%s' must be an integer", name);
    if (lua_tointeger(L, -1) < lo || lua_tointeger(L, -1) > hi)
      luaL_error(L, "viewer option '%s' must be in %d..%d", name, lo, hi);
    v = (int)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int l_viewer(lua_State *L)
{
  rm_screen *s = check_screen(L, 1);
  rm_screen_viewer_config cfg = {0};
  lviewer *u;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    cfg.quality = opt_field(L, "quality", 1, 100);
    cfg.png_level = opt_field(L, "png_level", 1, 9);
    cfg.max_colours = opt_field(L, "max_colours", 1, 256);
  }
  u = lua_newuserdatauv(L, sizeof *u, 1);
  u->v = NULL;
  luaL_setmetatable(L, VIEWER_MT);
  lua_pushvalue(L, 1); /* the viewer keeps its screen alive */
  lua_setiuservalue(L, -2, 1);
  if (rm_screen_viewer_new(s, &cfg, &u->v) < 0) luaL_error(L, "out of memory");
  return 1;
}

static int l_close(lua_State *L)
{
  lscreen *u = luaL_checkudata(L, 1, SCREEN_MT);
  rm_screen_close(u->s);
  u->s = NULL;
  return 0;
}

/* The viewer and the (open) screen it belongs to. */
static rm_screen_viewer *check_viewer(lua_State *L, rm_screen **s)
{
  lviewer *u = luaL_checkudata(L, 1, VIEWER_MT);
  lua_getiuservalue(L, 1, 1);
  *s = check_screen(L, -1);
  lua_pop(L, 1);
  if (!u->v) luaL_error(L, "viewer is closed");
  return u->v;
}

static int l_frame(lua_State *L)
{
  rm_screen *s;
  rm_screen_viewer *v = check_viewer(L, &s);
  const uint8_t *msg;
  size_t len;
  int rc = rm_screen_frame(s, v, &msg, &len);
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "out of memory");
    return 2;
  }
  if (rc == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, (const char *)msg, len);
  return 1;
}

static int l_reset(lua_State *L)
{
  rm_screen *s;
  rm_screen_viewer_reset(check_viewer(L, &s));
  return 0;
}

static int l_viewer_gc(lua_State *L)
{
  lviewer *u = luaL_checkudata(L, 1, VIEWER_MT);
  rm_screen_viewer_free(u->v);
  u->v = NULL;
  return 0;
}

static const luaL_Reg screen_methods[] = {
  {"size", l_size},   {"fd", l_fd},         {"poll", l_poll},   {"drain", l_drain}, {"input", l_input},
  {"viewer", l_viewer}, {"close", l_close}, {NULL, NULL}};

static const luaL_Reg viewer_methods[] = {{"frame", l_frame}, {"reset", l_reset}, {NULL, NULL}};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
}

int luaopen_screen(lua_State *L)
{
  static const luaL_Reg funcs[] = {{"open", l_open}, {NULL, NULL}};
  new_class(L, SCREEN_MT, screen_methods, l_close);
  new_class(L, VIEWER_MT, viewer_methods, l_viewer_gc);
  luaL_newlib(L, funcs);
  return 1;
}
