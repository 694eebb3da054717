/* request:session() and ba.session: server-side sessions found by a cookie.
 *
 * A session is a Lua table the pages fill as they like (its methods come
 * through its metatable); the store maps the cookie's id to it. Ids are 128
 * random bits from getrandom(2) and only ids the store handed out are
 * accepted, so a client cannot choose its own (session fixation). The store
 * is bounded: an expired session is dropped when it is next looked up and
 * by a sweep at most once a minute, and a new session past the maximum is
 * refused rather than evicting someone else's. */
#include <lauxlib.h>
#include <sys/random.h>

#include "lua/lhttp.h"

/* 22 characters of base64url: the id of a new session, or nil. */
static int new_id(lua_State *L) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char b[18];   /* 16 random bytes, padded to a multiple of 3 */
  char id[24];
  if (getrandom(b, 16, 0) != 16) return 0;
  b[16] = b[17] = 0;
  for (int i = 0, o = 0; i < 18; i += 3) {
    unsigned v = (unsigned)b[i] << 16 | (unsigned)b[i + 1] << 8 | b[i + 2];
    for (int k = 18; k >= 0; k -= 6) id[o++] = abc[(v >> k) & 63];
  }
  lua_pushlstring(L, id, 22);
  return 1;
}

static const char SESSION_LUA[] =
  "local M, new_id = ...\n"
  "local cfg = {cookie = 'remora_sid', timeout = 1200, max = 10000}\n"
  "local store, count, swept = {}, 0, os.time()\n"
  "local state = setmetatable({}, {__mode = 'k'})   -- session -> its id and times\n"
  "local S = {}\n"
  "local SMT = {__index = S, __name = 'session'}\n"
  "local function drop(id) store[id] = nil count = count - 1 end\n"
  "local function expired(st, now) return now - st.last > st.timeout end\n"
  "local function sweep(now)\n"
  "  swept = now\n"
  "  for id, s in pairs(store) do if expired(state[s], now) then drop(id) end end\n"
  "end\n"
  "function M:session(create)\n"
  "  local now = os.time()\n"
  "  if now - swept >= 60 then sweep(now) end\n"
  "  local id = self:cookie(cfg.cookie)\n"
  "  local s = id and store[id]\n"
  "  if s then\n"
  "    local st = state[s]\n"
  "    if not expired(st, now) then st.last = now return s end\n"
  "    drop(id)\n"
  "  end\n"
  "  if not create then return nil end\n"
  "  if self:committed() then return nil, 'response committed' end\n"
  "  if count >= cfg.max then sweep(now) end\n"
  "  if count >= cfg.max then\n"
  "    trace('session: refused, the store holds its maximum of ' .. cfg.max)\n"
  "    return nil, 'too many sessions'\n"
  "  end\n"
  "  id = new_id()\n"
  "  if not id then return nil, 'no random source' end\n"
  "  s = setmetatable({}, SMT)\n"
  "  state[s] = {id = id, created = now, last = now, timeout = cfg.timeout}\n"
  "  store[id], count = s, count + 1\n"
  "  self:setheader('Set-Cookie', cfg.cookie .. '=' .. id .. '; Path=/; HttpOnly; SameSite=Lax'\n"
  "    .. (self:issecure() and '; Secure' or ''), true)\n"
  "  return s\n"
  "end\n"
  "function S:id() return state[self].id end\n"
  "function S:creationtime() return state[self].created end\n"
  "function S:lasttime() return state[self].last end\n"
  "function S:maxinactiveinterval(secs)\n"
  "  local st = state[self]\n"
  "  if secs ~= nil then\n"
  "    if math.type(secs) ~= 'integer' or secs < 1 then error('maxinactiveinterval: seconds >= 1', 2) end\n"
  "    st.timeout = secs\n"
  "  end\n"
  "  return st.timeout\n"
  "end\n"
  "S.lifetime = S.maxinactiveinterval\n"
  "function S:terminate()\n"
  "  local id = state[self].id\n"
  "  if store[id] == self then drop(id) end\n"
  "end\n"
  "local B = {}\n"
  "function B.config(t)\n"
  "  if t ~= nil then\n"
  "    for k, v in pairs(t) do\n"
  "      if cfg[k] == nil or type(v) ~= type(cfg[k]) then error('session.config: bad option ' .. tostring(k), 2) end\n"
  "    end\n"
  "    for k, v in pairs(t) do cfg[k] = v end\n"
  "  end\n"
  "  return {cookie = cfg.cookie, timeout = cfg.timeout, max = cfg.max}\n"
  "end\n"
  "function B.count() return count end\n"
  "return B\n";

static const char SESSION_KEY = 'S';

void rm__lsession_open(lua_State *L) {
  luaL_loadbuffer(L, SESSION_LUA, sizeof SESSION_LUA - 1, "=session");
  lua_pushvalue(L, -2);
  lua_pushcfunction(L, new_id);
  lua_call(L, 2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SESSION_KEY);
}

void rm__lsession_push(lua_State *L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &SESSION_KEY); }
