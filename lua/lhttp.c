/* lua/lhttp.c: pages. The request/response object Barracuda's LSP pages
 * see (one object, both names), the page runner, and ba.socket.req2sock /
 * sock2req.
 *
 * Each request runs its page as a remora coroutine on the dispatcher, so a
 * page that reads a socket or sleeps suspends only itself. The answer is
 * buffered: a page that ends answers with Content-Length in one writev; a
 * page that flushes (or writes more than AUTO_FLUSH) commits the head with
 * chunked framing and goes on in chunks, waiting while the connection's queue
 * is over its bound. An error before the head went out becomes a 500 (the
 * traceback in the log, and in the body only in development mode); after it,
 * the connection is closed mid-body so the client sees the answer is cut.
 */
#include <ctype.h>
#include <stddef.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "lua/lhttp.h"
#include "lua/lsocket.h"

#define REQ_MT "ba.request"
enum { AUTO_FLUSH = 64 * 1024, MAX_FIELDS = 64, BUF_MIN = 4096 };
enum { UV_HEADERS = 1, UV_DATA = 2, UV_ERROR = 3, NUV = 3 };

static const char H_KEY = 'H', ABORT_KEY = 'A', SOCKS_KEY = 'S';   /* registry keys */

typedef struct rm_req {
  rm_http_exchange *x;   /* NULL once answered or handed away */
  rm_app *app;
  rm_co *co;             /* the page's coroutine, while it runs */
  rm_co *drain_waiter;   /* the page, waiting for the queue to drain */
  rm_co *parked;         /* a deferred page's ended coroutine, until close() */
  rm_co *body_waiter;    /* a coroutine waiting for more of the request body */
  size_t given;          /* rawrdr(): bytes of a whole body given */
  int streamed;          /* rawrdr() took pieces of a body still arriving */
  rm_rt_task start;      /* a page started later (a pipelined request) */
  int ref;               /* registry anchor while the page runs */
  int status, committed, final, broken, failed;
  int returned;          /* the page function returned or raised (else it was killed) */
  int deferred, closed;  /* response:deferred(); its close() came */
  int64_t content_length; /* setcontentlength(), or -1 */
  char *buf;
  size_t len, cap;
} rm_req;

enum { SPARE_REFS = 64 };

/* The page runner's record per Lua state: the public part, then registry
 * slots of ended requests, kept for new requests, and a registry reference
 * to the request objects' metatable (0 until the first request):
 * luaL_setmetatable would find it by its name each time. */
typedef struct lhttp_state {
  rm_lhttp pub;
  int nrefs;
  int refs[SPARE_REFS];
  int req_mt;
} lhttp_state;

static int lhttp_gc(lua_State *L) {
  rm_lhttp *h = lua_touserdata(L, 1);
  free(h->spare_buf);
  h->spare_buf = NULL;
  return 0;
}

rm_lhttp *rm_lhttp_get(lua_State *L) {
  return &((lhttp_state *)rm_rt_record(L, &H_KEY, sizeof(lhttp_state), lhttp_gc))->pub;
}

void rm_lhttp_set_default_server(rm_rt *rt, rm_http_server *s) {
  rm_lhttp *h = rm_lhttp_get(rt->L);
  if (!h->default_server) h->default_server = s;
}

/* Anchors the value on top (popped) in the registry until unanchor. A slot
 * an ended request gave back is reused as it is: one API call, where
 * luaL_ref and luaL_unref take five and four. A slot given back holds false,
 * not nil, so that the registry's border, where luaL_ref takes new slots,
 * never falls below it. */
static int anchor(lua_State *L, rm_lhttp *h) {
  lhttp_state *st = (lhttp_state *)h;
  if (!st->nrefs) return luaL_ref(L, LUA_REGISTRYINDEX);
  int ref = st->refs[--st->nrefs];
  lua_rawseti(L, LUA_REGISTRYINDEX, ref);
  return ref;
}

static void unanchor(lua_State *L, rm_lhttp *h, int ref) {
  lhttp_state *st = (lhttp_state *)h;
  if (ref < 0) return;
  if (st->nrefs == SPARE_REFS) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return;
  }
  lua_pushboolean(L, 0);
  lua_rawseti(L, LUA_REGISTRYINDEX, ref);
  st->refs[st->nrefs++] = ref;
}

/* The request object at 1. The methods hold the metatable as their upvalue:
 * comparing with it skips the registry lookup of luaL_checkudata, which
 * still raises the error (and serves functions without the upvalue). */
static rm_req *req_check(lua_State *L) {
  rm_req *r = lua_touserdata(L, 1);
  if (r && lua_getmetatable(L, 1)) {
    int ours = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ours) return r;
  }
  return luaL_checkudata(L, 1, REQ_MT);
}

/* The exchange of a live request, or a Lua error. */
static rm_http_exchange *live(lua_State *L, rm_req *r) {
  if (!r->x) luaL_error(L, "the request has expired (it lives as long as its page)");
  return r->x;
}

/* ---- the response buffer ---- */

/* Appends to the answer; nothing once the request expired, so that a
 * buffer only lives while r->x does and the object needs no finalizer. */
static void buf_add(lua_State *L, rm_req *r, const char *p, size_t n) {
  rm_lhttp *h = r->app->h;
  if (!r->x) return;
  if (!r->buf && h->spare_buf) {   /* the buffer of an earlier page */
    r->buf = h->spare_buf;
    r->cap = BUF_MIN;
    h->spare_buf = NULL;
  }
  if (r->len + n > r->cap) {
    size_t cap = r->cap ? r->cap : BUF_MIN;
    while (cap < r->len + n) cap *= 2;
    char *b = realloc(r->buf, cap);
    if (!b) luaL_error(L, "out of memory");
    r->buf = b;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, p, n);
  r->len += n;
}

static void buf_free(rm_req *r) {
  free(r->buf);
  r->buf = NULL;
  r->len = r->cap = 0;
}

/* At a page's end: its buffer becomes the runtime's spare, which the next
 * page takes instead of a malloc (most answers fit in BUF_MIN). */
static void buf_release(rm_req *r) {
  rm_lhttp *h = r->app->h;
  if (r->cap == BUF_MIN && !h->spare_buf) {
    h->spare_buf = r->buf;
    r->buf = NULL;
    r->len = r->cap = 0;
  }
  buf_free(r);
}

/* The response fields set by the page, as the server wants them. The
 * strings stay on L's stack (in the headers table) while used. */
static size_t collect_fields(lua_State *L, rm_req *r, int ud, rm_http_header *f) {
  size_t n = 0;
  int t = lua_gettop(L) + 1;
  if (lua_getiuservalue(L, ud, UV_HEADERS) != LUA_TTABLE) {   /* the page set none */
    f[n++] = (rm_http_header){"Content-Type", 12, "text/html; charset=utf-8", 24};
    return n;
  }
  if (lua_getfield(L, t, "content-type") == LUA_TNIL)
    f[n++] = (rm_http_header){"Content-Type", 12, "text/html; charset=utf-8", 24};
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, t)) {   /* lower name -> {Name, value, more values...} */
    lua_rawgeti(L, -1, 1);
    size_t nl, vl;
    const char *name = lua_tolstring(L, -1, &nl);
    for (lua_Integer i = 2; n < MAX_FIELDS && lua_rawgeti(L, -2, i) == LUA_TSTRING; i++) {
      f[n] = (rm_http_header){name, nl, lua_tolstring(L, -1, &vl), 0};
      f[n++].value_len = vl;
      lua_pop(L, 1);
    }
    lua_pop(L, 3);   /* the strings live on in the table */
  }
  return n;
}

/* Sends the head (and what is buffered) now. */
static int commit(lua_State *L, rm_req *r, int ud, int whole) {
  rm_http_header f[MAX_FIELDS];
  int top = lua_gettop(L);
  size_t n = collect_fields(L, r, ud, f);
  int framing = whole || r->content_length >= 0 ? RM_HTTP_FRAME_LENGTH : RM_HTTP_FRAME_CHUNKED;
  uint64_t length = whole ? r->len : (uint64_t)(r->content_length >= 0 ? r->content_length : 0);
  int rc = rm_http_x_begin(r->x, r->status, f, n, framing, length, r->buf, r->len);
  lua_settop(L, top);
  r->committed = 1;
  r->len = 0;
  if (rc != RM_OK) r->broken = 1;
  if (rc == RM_EINVAL || rc == RM_EFULL)
    rm_loop_log(r->app->rt->loop, RM_LOG_ERROR, "page %s: response head refused (%s)",
                rm_http_x_path(r->x), rm_strerror(rc));
  return rc;
}

static void send_buffered(lua_State *L, rm_req *r, int ud) {
  if (!r->committed) { commit(L, r, ud, 0); return; }
  if (r->len && !r->broken && rm_http_x_write(r->x, r->buf, r->len) != RM_OK) r->broken = 1;
  r->len = 0;
}

/* ---- writing ---- */

static int flush_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  lua_pushboolean(L, 1);
  return 1;
}

static void unlink_drain(rm_co *co) {
  rm_req *r = co->wait_data;
  r->drain_waiter = NULL;
}

/* Sends what is buffered; in the page's coroutine, waits while the
 * connection holds more than the app's bound. */
static int do_flush(lua_State *L, rm_req *r) {
  if (!r->x || r->final) { lua_pushboolean(L, r->x != NULL); return 1; }
  send_buffered(L, r, 1);
  if (r->broken) return rm_push_error(L, "socketclosed");
  rm_co *co = rm_co_current(L);
  if (co && !r->drain_waiter && rm_http_x_queued(r->x) > r->app->max_queue) {
    r->drain_waiter = co;
    co->wait_data = r;
    co->on_wake = unlink_drain;
    return rm_co_suspend(L, co, RM_WAIT_WRITE, NULL, -1, flush_k, 0);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int resp_flush(lua_State *L) {
  RM_ON_LOOP(L, rm_rt_get(L), resp_flush);   /* a page on a worker: the connection is the dispatcher's */
  return do_flush(L, req_check(L));
}

/* write(...) / print(...) / _emit(...): every argument through tostring. */
static int write_args(lua_State *L, rm_req *r, int first) {
  if (!r->x || r->final) return 0;
  for (int i = first, n = lua_gettop(L); i <= n; i++) {
    size_t len;
    /* Strings (and numbers) as they are: luaL_tolstring would look up a
     * __tostring metafield first, which dominated a small page's cost. */
    if (lua_type(L, i) == LUA_TSTRING) {
      const char *s = lua_tolstring(L, i, &len);
      buf_add(L, r, s, len);
      continue;
    }
    const char *s = luaL_tolstring(L, i, &len);
    buf_add(L, r, s, len);
    lua_pop(L, 1);
  }
  if (r->len > AUTO_FLUSH && !r->app->pool) {   /* pool pages flush only when they ask */
    lua_settop(L, 1);
    return do_flush(L, r);   /* may suspend the page: the return must be this call */
  }
  return 0;
}

static int resp_write(lua_State *L) { return write_args(L, req_check(L), 2); }

static int emit(lua_State *L) {
  rm_req *r = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  return write_args(L, r, 2);
}

/* ---- response methods ---- */

/* Sets (value NULL: removes) a response field of the object at ud; with
 * add, a value more for a name set before (Set-Cookie). The table is keyed
 * by the lower-case name, {Name, value, more values...}; it is made on the
 * first field (most pages set none). */
static void set_field(lua_State *L, int ud, const char *name, const char *value, int add) {
  luaL_Buffer b;
  if (lua_getiuservalue(L, ud, UV_HEADERS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, UV_HEADERS);
  }
  luaL_buffinit(L, &b);
  for (const char *p = name; *p; p++) luaL_addchar(&b, (char)tolower((unsigned char)*p));
  luaL_pushresult(&b);
  lua_pushvalue(L, -1);
  if (value && add && lua_rawget(L, -3) == LUA_TTABLE) {   /* {Name, value...}: one more */
    lua_pushstring(L, value);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 3);
    return;
  }
  lua_pop(L, 1);
  if (value) {
    lua_createtable(L, 2, 0);
    lua_pushstring(L, name);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, value);
    lua_rawseti(L, -2, 2);
  } else {
    lua_pushnil(L);
  }
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static int resp_setstatus(lua_State *L) {
  rm_req *r = req_check(L);
  lua_Integer s = luaL_checkinteger(L, 2);
  luaL_argcheck(L, s >= 100 && s <= 999, 2, "status out of range");
  if (r->committed) return 0;
  r->status = (int)s;
  return 0;
}

static int resp_setheader(lua_State *L) {
  rm_req *r = req_check(L);
  const char *name = luaL_checkstring(L, 2);
  const char *value = luaL_optstring(L, 3, NULL);
  if (r->committed) { lua_pushboolean(L, 0); return 1; }
  set_field(L, 1, name, value, lua_toboolean(L, 4));
  lua_pushboolean(L, 1);
  return 1;
}

static int resp_setcontenttype(lua_State *L) {
  req_check(L);
  lua_settop(L, 2);
  luaL_checkstring(L, 2);
  lua_pushliteral(L, "Content-Type");
  lua_insert(L, 2);
  return resp_setheader(L);
}

static int resp_setcontentlength(lua_State *L) {
  rm_req *r = req_check(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "negative length");
  if (!r->committed) r->content_length = n;
  return 0;
}

static int resp_setmaxage(lua_State *L) {
  req_check(L);
  lua_Integer n = luaL_checkinteger(L, 2);
  lua_settop(L, 1);
  lua_pushliteral(L, "Cache-Control");
  lua_pushfstring(L, "max-age=%d", (int)n);
  return resp_setheader(L);
}

static int resp_committed(lua_State *L) {
  rm_req *r = req_check(L);
  lua_pushboolean(L, r->committed || !r->x);
  return 1;
}

/* Drops what is buffered and the fields set; 0 once committed. */
static int reset(lua_State *L, rm_req *r, int ud) {
  if (r->committed) return 0;
  r->len = 0;
  r->status = 200;
  r->final = 0;
  r->content_length = -1;
  lua_pushnil(L);
  lua_setiuservalue(L, ud, UV_HEADERS);
  return 1;
}

static int resp_reset(lua_State *L) {
  lua_pushboolean(L, reset(L, req_check(L), 1));
  return 1;
}

/* The answer is decided: later writes are ignored. Returns 0 when it is
 * too late (committed). */
static int final_answer(lua_State *L, rm_req *r, int ud, int status, const char *type, const char *body) {
  if (!reset(L, r, ud)) return 0;
  r->status = status;
  set_field(L, ud, "Content-Type", type, 0);
  buf_add(L, r, body, strlen(body));
  r->final = 1;
  return 1;
}

static void html_escape(luaL_Buffer *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '<': luaL_addstring(b, "&lt;"); break;
    case '>': luaL_addstring(b, "&gt;"); break;
    case '&': luaL_addstring(b, "&amp;"); break;
    case '"': luaL_addstring(b, "&quot;"); break;
    default: luaL_addchar(b, *s);
    }
  }
}

static int resp_senderror(lua_State *L) {
  rm_req *r = req_check(L);
  int status = (int)luaL_checkinteger(L, 2);
  const char *msg = luaL_optstring(L, 3, rm_http_reason(status));
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "<html><body><h1>%d %s</h1><p>", status, rm_http_reason(status));
  luaL_addvalue(&b);
  html_escape(&b, msg);
  luaL_addstring(&b, "</p></body></html>\n");
  luaL_pushresult(&b);
  lua_pushboolean(L, final_answer(L, r, 1, status, "text/html; charset=utf-8", lua_tostring(L, -1)));
  return 1;
}

static int resp_sendredirect(lua_State *L) {
  rm_req *r = req_check(L);
  const char *url = luaL_checkstring(L, 2);
  int ok = final_answer(L, r, 1, lua_toboolean(L, 3) ? 301 : 302, "text/html; charset=utf-8",
                        "<html><body>Moved</body></html>\n");
  if (ok) set_field(L, 1, "Location", url, 0);
  lua_pushboolean(L, ok);
  return 1;
}

/* deferred(): the answer outlives the page; close() ends it. The page's
 * coroutine stays parked meanwhile (anchoring the object, woken by close()
 * or by shutdown), so the end is the same path as any page's. */
static int resp_deferred(lua_State *L) {
  rm_req *r = req_check(L);
  live(L, r);
  if (r->app->pool) return rm_push_error(L, "deferred: not with pages on the worker pool");
  r->deferred = 1;
  lua_settop(L, 1);
  return 1;
}

static int resp_close(lua_State *L) {
  RM_ON_LOOP(L, rm_rt_get(L), resp_close);
  rm_req *r = req_check(L);
  lua_pushboolean(L, r->x && !r->closed);
  r->closed = 1;
  if (r->parked) rm_co_wake(r->parked, RM_WAKE_READY);
  return 1;
}

static int resp_abort(lua_State *L) {
  req_check(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
  return lua_error(L);
}

/* ---- request methods ---- */

static const rm_http_request *req_of(lua_State *L, rm_req *r) { return rm_http_x_request(live(L, r)); }

static int req_method(lua_State *L) {
  const rm_http_request *q = req_of(L, req_check(L));
  lua_pushlstring(L, q->method.p, q->method.len);
  return 1;
}

static int req_header(lua_State *L) {
  const rm_http_request *q = req_of(L, req_check(L));
  if (lua_isnoneornil(L, 2)) {
    lua_createtable(L, 0, (int)q->nheaders);
    for (size_t i = 0; i < q->nheaders; i++) {
      lua_pushlstring(L, q->headers[i].name, q->headers[i].name_len);
      lua_pushlstring(L, q->headers[i].value, q->headers[i].value_len);
      lua_settable(L, -3);
    }
    return 1;
  }
  const rm_http_header *h = rm_http_header_find(q->headers, q->nheaders, luaL_checkstring(L, 2));
  if (!h) return 0;
  lua_pushlstring(L, h->value, h->value_len);
  return 1;
}

static int req_uri(lua_State *L) {
  lua_pushstring(L, rm_http_x_path(live(L, req_check(L))));
  return 1;
}

static int req_url(lua_State *L) {
  rm_req *r = req_check(L);
  const rm_http_request *q = req_of(L, r);
  const rm_http_header *host = rm_http_header_find(q->headers, q->nheaders, "Host");
  if (q->target.len && q->target.p[0] != '/') { lua_pushlstring(L, q->target.p, q->target.len); return 1; }
  lua_pushstring(L, rm_http_x_secure(r->x) ? "https://" : "http://");
  if (host) lua_pushlstring(L, host->value, host->value_len); else lua_pushliteral(L, "localhost");
  lua_pushlstring(L, q->target.p, q->target.len);
  lua_concat(L, 3);
  return 1;
}

static int req_version(lua_State *L) {
  const rm_http_request *q = req_of(L, req_check(L));
  lua_pushstring(L, q->minor ? "1.1" : "1.0");
  return 1;
}

static int req_cookie(lua_State *L) {
  const rm_http_request *q = req_of(L, req_check(L));
  size_t nl;
  const char *want = luaL_checklstring(L, 2, &nl);
  for (size_t i = 0; i < q->nheaders; i++) {
    const rm_http_header *h = &q->headers[i];
    if (h->name_len != 6 || strncasecmp(h->name, "Cookie", 6) != 0) continue;
    const char *cur = h->value, *end = h->value + h->value_len;
    rm_http_slice k, v;
    while (rm_http_cookie_next(&cur, end, &k, &v))
      if (k.len == nl && memcmp(k.p, want, nl) == 0) { lua_pushlstring(L, v.p, v.len); return 1; }
  }
  return 0;
}

static int req_addr(lua_State *L, int peer) {
  rm_req *r = req_check(L);
  return rm_push_sockname(L, rm_conn_fd(rm_http_x_conn(live(L, r))), peer);
}
static int req_peername(lua_State *L) { return req_addr(L, 1); }
static int req_sockname(lua_State *L) { return req_addr(L, 0); }

static int req_issecure(lua_State *L) {
  lua_pushboolean(L, rm_http_x_secure(live(L, req_check(L))));
  return 1;
}

/* ---- the body of a page that came before it ----
 *
 * An upload may still be arriving when its page starts (see server.h): the
 * methods that need the whole body wait for it, suspending the coroutine
 * that asks and running again from their start; rawrdr() streams it. */

static int body_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return ((lua_CFunction)ctx)(L);
}

static void unlink_body(rm_co *co) {
  rm_req *r = co->wait_data;
  r->body_waiter = NULL;
}

/* Suspends until more of r's body came; then fn (the method, whose
 * arguments are still all that is on the stack) runs again. */
static int body_suspend(lua_State *L, rm_req *r, lua_CFunction fn) {
  rm_co *co = rm_co_current(L);
  if (!co || r->body_waiter)
    return luaL_error(L, "the request body is still arriving: read it from one coroutine at a time");
  r->body_waiter = co;
  co->wait_data = r;
  co->on_wake = unlink_body;
  return rm_co_suspend(L, co, RM_WAIT_READ, NULL, -1, body_k, (lua_KContext)fn);
}

/* A body that cannot come whole: the page's answer is the error (413 past
 * max_body, 408 after its silence, 400 when malformed) and the page ends. */
static int body_refused(lua_State *L, rm_req *r, int err) {
  if (err == RM_ECLOSED) r->broken = 1;
  else {
    char html[96];
    int status = err == RM_ETIMEDOUT ? 408 : rm_http_status_for(err);
    snprintf(html, sizeof html, "<html><body><h1>%d %s</h1></body></html>\n", status, rm_http_reason(status));
    final_answer(L, r, 1, status, "text/html; charset=utf-8", html);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
  return lua_error(L);
}

/* RM_OK once r's whole body is in (or rawrdr() took it: then there is
 * none), RM_EAGAIN to wait; does not return when it cannot come. */
static int whole_body(lua_State *L, rm_req *r) {
  rm_http_exchange *x = live(L, r);
  int rc;
  if (r->streamed) return RM_OK;
  while ((rc = rm_http_x_body_more(x, 1)) == RM_OK && !rm_http_x_body_complete(x)) {}
  if (rc == RM_OK || rc == RM_EAGAIN) return rc;
  return body_refused(L, r, rc);
}

/* body(): the raw request body (POST, PUT), or nil when there was none. */
static int req_body(lua_State *L) {
  rm_req *r = req_check(L);
  if (whole_body(L, r) == RM_EAGAIN) return body_suspend(L, r, req_body);
  size_t n;
  const char *b = rm_http_x_body(r->x, &n);
  if (!n || r->streamed) return 0;
  lua_pushlstring(L, b, n);
  return 1;
}

/* The next piece of the body for rawrdr(): a body read whole is given in
 * one piece and stays for body(); one still arriving is streamed, each
 * piece given up, so an upload never sits in memory whole. nil at the end;
 * nil, reason when it was cut. */
static int req_piece(lua_State *L) {
  rm_req *r = req_check(L);
  rm_http_exchange *x = live(L, r);
  for (;;) {
    size_t n;
    const char *b = rm_http_x_body(x, &n);
    if (rm_http_x_body_complete(x) && !r->streamed) {
      if (r->given >= n) return 0;
      lua_pushlstring(L, b + r->given, n - r->given);
      r->given = n;
      return 1;
    }
    if (n) {
      lua_pushlstring(L, b, n);
      rm_http_x_body_taken(x);
      r->streamed = 1;
      return 1;
    }
    if (rm_http_x_body_complete(x)) return 0;
    int rc = rm_http_x_body_more(x, 0);
    if (rc == RM_EAGAIN) return body_suspend(L, r, req_piece);
    if (rc == RM_ETIMEDOUT) return rm_push_error(L, "timeout");
    if (rc != RM_OK) return rm_push_error(L, rc == RM_ECLOSED ? "socketclosed" : "badbody");
  }
}

/* ---- form data ---- */

/* Appends a decoded pair {name, value [, filename, type]} to the list at t. */
static void add_pair(lua_State *L, int t, const char *k, size_t kl, const char *v, size_t vl, int form) {
  luaL_Buffer b;
  lua_createtable(L, 2, 0);
  for (int i = 0; i < 2; i++) {
    const char *p = i ? v : k;
    size_t n = i ? vl : kl;
    if (!form) { lua_pushlstring(L, p, n); lua_rawseti(L, -2, i + 1); continue; }
    char *out = luaL_buffinitsize(L, &b, n ? n : 1);
    long d = rm_http_percent_decode(p, n, out, n, 1);
    luaL_pushresultsize(&b, d < 0 ? 0 : (size_t)d);
    if (d < 0) { lua_pop(L, 2); return; }   /* a bad escape: the pair is dropped */
    lua_rawseti(L, -2, i + 1);
  }
  lua_rawseti(L, t, (lua_Integer)lua_rawlen(L, t) + 1);
}

static void add_form(lua_State *L, int t, const char *p, size_t n) {
  const char *cur = p, *end = p + n;
  rm_http_slice k, v;
  while (rm_http_form_next(&cur, end, &k, &v)) add_pair(L, t, k.p, k.len, v.p, v.len, 1);
}

static void add_multipart(lua_State *L, int t, rm_req *r, const rm_http_header *ct, const char *body, size_t n) {
  rm_http_multipart *m;
  if (rm_http_multipart_new(&m, ct->value, ct->value_len, NULL, NULL, NULL) != RM_OK) return;
  luaL_Buffer b;
  int open = 0;
  size_t pos = 0;
  for (;;) {
    rm_http_event ev;
    long used = rm_http_multipart_parse(m, body + pos, n - pos, &ev);
    if (used < 0) break;
    pos += (size_t)used;
    if ((ev.type == RM_HTTP_PART || ev.type == RM_HTTP_DONE) && open) {
      luaL_pushresult(&b);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, t, (lua_Integer)lua_rawlen(L, t) + 1);
      open = 0;
    }
    if (ev.type == RM_HTTP_PART) {
      const rm_http_part *part = rm_http_multipart_part(m);
      lua_createtable(L, 5, 0);
      lua_pushboolean(L, 1);   /* marks a part, as opposed to a query pair */
      lua_rawseti(L, -2, 5);
      lua_pushlstring(L, part->name.p, part->name.len);
      lua_rawseti(L, -2, 1);
      if (part->filename.p) { lua_pushlstring(L, part->filename.p, part->filename.len); lua_rawseti(L, -2, 3); }
      if (part->content_type.p) { lua_pushlstring(L, part->content_type.p, part->content_type.len); lua_rawseti(L, -2, 4); }
      luaL_buffinit(L, &b);
      open = 1;
    } else if (ev.type == RM_HTTP_BODY) {
      luaL_addlstring(&b, ev.data, ev.len);
    } else {
      break;   /* DONE, or AGAIN: a truncated body ends the parts */
    }
  }
  if (open) { luaL_pushresult(&b); lua_pop(L, 2); }
  rm_http_multipart_free(m);
}

/* The request's pairs, parsed once: query string, then a form body. */
/* The body must be whole (whole_body) before this runs. */
static int push_pairs(lua_State *L, rm_req *r) {
  if (lua_getiuservalue(L, 1, UV_DATA) == LUA_TTABLE) return lua_gettop(L);
  lua_pop(L, 1);
  const rm_http_request *q = req_of(L, r);
  lua_newtable(L);
  int t = lua_gettop(L);
  rm_http_slice path, query;
  rm_http_target_split(q->target.p, q->target.len, &path, &query);
  add_form(L, t, query.p, query.len);
  size_t n;
  const char *body = rm_http_x_body(r->x, &n);
  const rm_http_header *ct = rm_http_header_find(q->headers, q->nheaders, "Content-Type");
  if (n && ct && !r->streamed) {
    if (ct->value_len >= 33 && strncasecmp(ct->value, "application/x-www-form-urlencoded", 33) == 0)
      add_form(L, t, body, n);
    else if (ct->value_len >= 19 && strncasecmp(ct->value, "multipart/form-data", 19) == 0)
      add_multipart(L, t, r, ct, body, n);
  }
  lua_pushvalue(L, t);
  lua_setiuservalue(L, 1, UV_DATA);
  return t;
}

/* data(): name -> value (the first of each name); data(n1, n2...): values. */
static int req_data(lua_State *L) {
  rm_req *r = req_check(L);
  if (whole_body(L, r) == RM_EAGAIN) return body_suspend(L, r, req_data);
  int nargs = lua_gettop(L) - 1;
  int t = push_pairs(L, r);
  lua_newtable(L);
  int map = lua_gettop(L);
  for (lua_Integer i = (lua_Integer)lua_rawlen(L, t); i >= 1; i--) {   /* backwards: the first wins */
    lua_rawgeti(L, t, i);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_rawset(L, map);
    lua_pop(L, 1);
  }
  if (nargs == 0) return 1;
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, 2 + i);
    lua_rawget(L, map);
  }
  return nargs;
}

static int pairs_next(lua_State *L) {
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;
  lua_pushinteger(L, i);
  lua_replace(L, lua_upvalueindex(2));
  if (lua_rawgeti(L, lua_upvalueindex(1), i) != LUA_TTABLE) return 0;
  lua_rawgeti(L, -1, 1);
  lua_rawgeti(L, -2, 2);
  return 2;
}

/* datapairs(): an iterator over every name, value pair, repeats included. */
static int req_datapairs(lua_State *L) {
  rm_req *r = req_check(L);
  if (whole_body(L, r) == RM_EAGAIN) return body_suspend(L, r, req_datapairs);
  push_pairs(L, r);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, pairs_next, 2);
  return 1;
}

/* multipart(): the parts of a multipart body as {name=, filename=, type=, data=}. */
static int req_multipart(lua_State *L) {
  rm_req *r = req_check(L);
  if (whole_body(L, r) == RM_EAGAIN) return body_suspend(L, r, req_multipart);
  int t = push_pairs(L, r);
  lua_newtable(L);
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, t); i <= n; i++) {
    lua_rawgeti(L, t, i);
    if (lua_rawgeti(L, -1, 5) == LUA_TNIL) { lua_pop(L, 2); continue; }
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    static const char *names[] = {"name", "data", "filename", "type"};
    for (int k = 0; k < 4; k++) { lua_rawgeti(L, -2, k + 1); lua_setfield(L, -2, names[k]); }
    lua_rawseti(L, t + 1, (lua_Integer)lua_rawlen(L, t + 1) + 1);
    lua_pop(L, 1);
  }
  return 1;
}

/* ---- page environments and include/forward ---- */

/* A fresh environment for r: only what belongs to the request (request,
 * response, print and _emit) is set in it, in a table just big enough; the
 * rest comes from the app through the shared metatable, and `page` is the
 * page function's own (lsp.c). Fresh, not reused: a closure made by a page
 * may outlive it, and must go on seeing its own (expired) request. */
static void push_env(lua_State *L, rm_req *r, int req) {
  lua_createtable(L, 0, 4);
  lua_pushvalue(L, req);
  lua_setfield(L, -2, "request");
  lua_pushvalue(L, req);
  lua_setfield(L, -2, "response");
  lua_pushvalue(L, req);
  lua_pushcclosure(L, emit, 1);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "_emit");
  lua_setfield(L, -2, "print");
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->app->envmt);
  lua_setmetatable(L, -2);
}

/* A function that emits a file as it is (include of a static file). */
static int emit_file(lua_State *L) {
  lua_getfield(L, 1, "response");
  rm_req *r = luaL_checkudata(L, -1, REQ_MT);
  FILE *f = fopen(lua_tostring(L, lua_upvalueindex(1)), "rb");
  if (!f) return luaL_error(L, "include: cannot open %s", lua_tostring(L, lua_upvalueindex(1)));
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) buf_add(L, r, buf, n);
  fclose(f);
  return 0;
}

/* _page(path): the function and a fresh environment for another page of the
 * app (include/forward); path is relative to the current page's URL. */
static int req_page(lua_State *L) {
  rm_req *r = req_check(L);
  const char *path = luaL_checkstring(L, 2);
  rm_http_exchange *x = live(L, r);
  if (path[0] != '/') {
    const char *cur = rm_http_x_path(x), *slash = strrchr(cur, '/');
    lua_pushlstring(L, cur, (size_t)(slash - cur + 1));
    lua_pushstring(L, path);
    lua_concat(L, 2);
    path = lua_tostring(L, -1);
  }
  char file[PATH_MAX];
  int status = rm_http_x_map(x, path, file, sizeof file);
  if (status) return luaL_error(L, "%s: %d %s", path, status, rm_http_reason(status));
  size_t fl = strlen(file);
  if (fl > 4 && strcmp(file + fl - 4, ".lsp") == 0) {
    if (rm_lsp_load(L, file) != 0) return lua_error(L);
  } else {
    lua_pushstring(L, file);
    lua_pushcclosure(L, emit_file, 1);
  }
  push_env(L, r, 1);
  return 2;
}

/* ---- the page runner ---- */

static int msgh(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
  if (lua_rawequal(L, 1, -1)) { lua_settop(L, 1); return 1; }
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
  return 1;
}

/* A parked page resumed (close() or shutdown): now it ends. */
static int parked_k(lua_State *L, int status, lua_KContext ctx) {
  rm_req *r = rm_co_current(L)->data;
  r->parked = NULL;
  return 0;
}

static int page_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_req *r = co->data;
  r->returned = 1;
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
    int aborted = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (!aborted) {
      r->failed = 1;
      lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
      lua_pushvalue(L, -2);
      lua_setiuservalue(L, -2, UV_ERROR);
    }
  }
  if (r->deferred && !r->closed && !r->failed && r->x && !(co->flags & RM_CO_SHUTDOWN_SEEN)) {
    r->parked = co;
    return rm_co_suspend(L, co, RM_WAIT_OTHER, NULL, -1, parked_k, 0);
  }
  return 0;
}

/* The coroutine's body: the page (fn, env) under a handler that keeps the
 * traceback and tells abort() from an error. */
static int page_main(lua_State *L) {
  lua_pushcfunction(L, msgh);
  lua_insert(L, 1);
  return page_k(L, lua_pcallk(L, 1, 0, 1, 0, page_k), 0);
}

/* The 500 answer for a failed page; the traceback goes to the log always,
 * to the client only in development mode. */
static void answer_error(lua_State *L, rm_req *r, int ud) {
  lua_getiuservalue(L, ud, UV_ERROR);
  const char *err = lua_tostring(L, -1);
  if (!err) err = "the page stopped (shutdown)";
  rm_loop_log(r->app->rt->loop, RM_LOG_ERROR, "page %s: %s", rm_http_x_path(r->x), err);
  if (r->committed) { r->broken = 1; lua_pop(L, 1); return; }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "<html><body><h1>500 Internal Server Error</h1>");
  if (r->app->dev) { luaL_addstring(&b, "<pre>"); html_escape(&b, err); luaL_addstring(&b, "</pre>"); }
  luaL_addstring(&b, "</body></html>\n");
  luaL_pushresult(&b);
  final_answer(L, r, ud, 500, "text/html; charset=utf-8", lua_tostring(L, -1));
  lua_pop(L, 2);
}

/* Ends the exchange: the buffered answer goes out, the connection goes on. */
static void page_end(lua_State *L, rm_req *r, int ud) {
  if (r->x) {
    if (r->failed) answer_error(L, r, ud);
    if (!r->committed) commit(L, r, ud, 1);
    else send_buffered(L, r, ud);
    rm_http_exchange *x = r->x;
    r->x = NULL;
    r->app->h->in_lua++;
    rm_http_x_finish(x, r->broken ? RM_HTTP_X_BROKEN : 0);
    r->app->h->in_lua--;
  }
  buf_release(r);
  unanchor(L, r->app->h, r->ref);
  r->ref = LUA_NOREF;
}

static void page_done(rm_co *co, int result) {
  rm_req *r = co->data;
  lua_State *L = co->rt->L;
  int top = lua_gettop(L);
  r->co = NULL;
  if (!r->returned) r->failed = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  page_end(L, r, lua_gettop(L));
  lua_settop(L, top);
}

static int start_on_pool(lua_State *L, rm_req *r, int req);

/* The request object of x, anchored in the registry until its page ends. */
static rm_req *new_req(rm_app *a, rm_http_exchange *x) {
  lua_State *L = a->rt->L;
  lhttp_state *st = (lhttp_state *)a->h;
  rm_req *r = lua_newuserdatauv(L, sizeof *r, NUV);
  memset(r, 0, sizeof *r);
  if (!st->req_mt) {
    luaL_getmetatable(L, REQ_MT);
    st->req_mt = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->req_mt);
  lua_setmetatable(L, -2);
  r->x = x;
  r->app = a;
  r->status = 200;
  r->content_length = -1;
  r->ref = anchor(L, a->h);
  *rm_http_x_data(x) = r;
  return r;
}

/* Starts r's page: its environment and coroutine (or its worker job). */
static void start_page(rm_req *r) {
  rm_app *a = r->app;
  rm_rt *rt = a->rt;
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  int req = lua_gettop(L);
  if (rm_lsp_load_stat(L, rm_http_x_file(r->x), rm_http_x_stat(r->x)) != 0) {   /* a page that does not compile */
    r->failed = 1;
    lua_setiuservalue(L, req, UV_ERROR);
    page_end(L, r, req);
    lua_settop(L, top);
    return;
  }
  push_env(L, r, req);            /* fn, env */
  if (a->pool) {
    if (start_on_pool(L, r, req) != 0) {   /* no pool (--threads 0?): answered 500 */
      r->failed = 1;
      lua_setiuservalue(L, req, UV_ERROR);
      page_end(L, r, req);
    }
    lua_settop(L, top);
    return;
  }
  lua_pushcfunction(L, page_main);
  lua_insert(L, -3);
  r->co = rm_co_new(rt, L, 2, NULL, 0);
  r->co->data = r;
  r->co->on_done = page_done;
  lua_settop(L, top);
  rm_co_run(r->co);
}

static void start_later(rm_rt *rt, rm_rt_task *t) {
  start_page((rm_req *)((char *)t - offsetof(rm_req, start)));
}

/* ---- pages on the worker pool (--pages-on-pool) ---- */

/* The page runs as a ba.thread job; done() reports how it ended. */
static const char POOL_LUA[] =
  "local fn, env, msgh, done = ...\n"
  "ba.thread.run(function() done(xpcall(fn, msgh, env)) end)\n";

/* The job ended (on its worker): the answer goes out on the dispatcher. */
static void pool_finish(rm_rt *rt, void *ud) {
  rm_req *r = ud;
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
  page_end(L, r, lua_gettop(L));
  lua_pop(L, 1);
}

static int pool_done(lua_State *L) {
  rm_req *r = lua_touserdata(L, lua_upvalueindex(1));
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
  if (!lua_toboolean(L, 1) && !lua_rawequal(L, 2, -1)) {
    r->failed = 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, UV_ERROR);
  }
  rm_rt_on_loop(r->app->rt, pool_finish, r);
  return 0;
}

/* fn and env on top: queue them as a job; 0, or -1 with the error on top. */
static int start_on_pool(lua_State *L, rm_req *r, int req) {
  if (luaL_loadbuffer(L, POOL_LUA, sizeof POOL_LUA - 1, "=pool") != LUA_OK) return -1;
  lua_insert(L, -3);
  lua_pushcfunction(L, msgh);
  lua_pushvalue(L, req);
  lua_pushcclosure(L, pool_done, 1);
  return lua_pcall(L, 4, 0, 0) == LUA_OK ? 0 : -1;
}

static void page_run(rm_http_exchange *x, void *ud) {
  rm_app *a = ud;
  if (a->h->in_lua) {   /* called from Lua (the end of the previous page): not nested */
    rm_rt_task *t = &new_req(a, x)->start;
    t->fn = start_later;
    rm_rt_later(a->rt, t);
    return;
  }
  rm_rt_enter(a->rt);
  start_page(new_req(a, x));
  rm_rt_run_ready(a->rt);
  rm_rt_leave(a->rt);
}

static void page_drain(rm_http_exchange *x, void *ud) {
  rm_app *a = ud;
  rm_req *r = *rm_http_x_data(x);
  rm_rt_enter(a->rt);
  if (r && r->drain_waiter && rm_http_x_queued(x) <= a->max_queue) rm_co_wake(r->drain_waiter, RM_WAKE_READY);
  rm_rt_run_ready(a->rt);
  rm_rt_leave(a->rt);
}

static void page_body(rm_http_exchange *x, void *ud) {
  rm_app *a = ud;
  rm_req *r = *rm_http_x_data(x);
  rm_rt_enter(a->rt);
  if (r && r->body_waiter) rm_co_wake(r->body_waiter, RM_WAKE_READY);
  rm_rt_leave_ready(a->rt);
}

const rm_http_handler rm_lhttp_handler = {page_run, page_drain, page_body};
/* Pages on the worker pool get their body whole before they start: a worker
 * cannot suspend in the middle of a method. */
const rm_http_handler rm_lhttp_pool_handler = {page_run, page_drain, NULL};

/* ---- req2sock / sock2req ---- */

/* Remembers which server a socket came from, for sock2req. */
static void remember_server(lua_State *L, int sock, rm_http_server *srv) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SOCKS_KEY) != LUA_TTABLE) {   /* socket -> server, weak */
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SOCKS_KEY);
  }
  lua_pushvalue(L, sock);
  lua_pushlightuserdata(L, srv);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* ba.socket.req2sock(request [, raw | wsopts]): the request's connection as a
 * socket; no HTTP answer is sent. An upgrade request, unless raw is true, goes
 * to the WebSocket layer's handshake, registered as
 * registry["remora.websocket.upgrade"] (lws.c), which comes back here with
 * raw = true and returns a WebSocket. A raw socket comes with the bytes
 * already read past the request as a second value (when there are any). */
int rm_lhttp_req2sock(lua_State *L) {
  RM_ON_LOOP(L, rm_rt_get(L), rm_lhttp_req2sock);
  rm_req *r = req_check(L);
  if (!r->x) return rm_push_error(L, "socketclosed");
  const rm_http_request *q = rm_http_x_request(r->x);
  if ((q->flags & RM_HTTP_UPGRADE) && lua_type(L, 2) != LUA_TBOOLEAN) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, "remora.websocket.upgrade") == LUA_TFUNCTION) {
      lua_insert(L, 1);
      lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
      return lua_gettop(L);
    }
    lua_pop(L, 1);   /* no WebSocket layer: the raw connection */
  }
  lua_settop(L, 1);
  size_t n, bn = 0;
  const char *rest = rm_http_x_rest(r->x, &n), *body = NULL;
  if (!rm_http_x_body_complete(r->x)) {   /* a page before its body: the socket gets the rest raw */
    if (q->flags & RM_HTTP_CHUNKED) return rm_push_error(L, "bodypending");
    body = rm_http_x_body(r->x, &bn);      /* what was parsed of it is still raw bytes */
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, body, bn);
  luaL_addlstring(&b, rest, n);
  luaL_pushresult(&b);           /* 2 */
  n += bn;
  rm_http_server *srv = rm_http_x_server(r->x);
  rm_conn *c = rm_http_x_detach(r->x);
  r->x = NULL;
  buf_free(r);
  if (!c) return rm_push_error(L, "socketclosed");
  rm_sock_from_conn(L, rm_rt_get(L), c);   /* 3 */
  remember_server(L, 3, srv);
  lua_insert(L, 2);              /* sock, rest */
  if (n == 0) lua_pop(L, 1);
  return lua_gettop(L) - 1;
}

/* ba.socket.sock2req(sock [, pushback]): the socket's connection goes back
 * to the HTTP server as a keep-alive connection; pushback: bytes read from
 * it that start the next request. */
int rm_lhttp_sock2req(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  size_t n = 0;
  const char *pre = luaL_optlstring(L, 2, "", &n);
  rm_lhttp *h = rm_lhttp_get(L);
  rm_http_server *srv = h->default_server;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &SOCKS_KEY) == LUA_TTABLE) {
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TLIGHTUSERDATA) srv = lua_touserdata(L, -1);
  }
  if (!srv) return luaL_error(L, "sock2req: no HTTP server runs");
  rm_conn *c = rm_sock_detach(s);
  if (!c) return rm_push_error(L, "socketclosed");
  h->in_lua++;
  int rc = rm_http_server_adopt(srv, c, pre, n);
  h->in_lua--;
  if (rc != RM_OK) return rm_push_error(L, rm_errstr(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the object and the module ---- */

static int req_tostring(lua_State *L) {
  rm_req *r = req_check(L);
  lua_pushfstring(L, "request(%s): %p", r->x ? rm_http_x_path(r->x) : "expired", (void *)r);
  return 1;
}

static const luaL_Reg req_methods[] = {
  {"method", req_method}, {"header", req_header}, {"uri", req_uri}, {"url", req_url},
  {"version", req_version}, {"cookie", req_cookie}, {"peername", req_peername},
  {"sockname", req_sockname}, {"issecure", req_issecure}, {"body", req_body},
  {"data", req_data}, {"datapairs", req_datapairs}, {"multipart", req_multipart},
  {"write", resp_write}, {"send", resp_write}, {"flush", resp_flush}, {"setstatus", resp_setstatus},
  {"setheader", resp_setheader}, {"setcontenttype", resp_setcontenttype},
  {"setcontentlength", resp_setcontentlength}, {"setmaxage", resp_setmaxage},
  {"committed", resp_committed}, {"reset", resp_reset}, {"senderror", resp_senderror},
  {"sendredirect", resp_sendredirect}, {"redirect", resp_sendredirect}, {"abort", resp_abort},
  {"deferred", resp_deferred}, {"close", resp_close},
  {"_page", req_page}, {"_piece", req_piece}, {NULL, NULL}
};

/* The methods plainest in Lua: they call pages, which may suspend. */
static const char REQ_LUA[] =
  "local M = ...\n"
  "function M:include(path) local fn, env = self:_page(path) fn(env) end\n"
  "function M:forward(path)\n"
  "  self:reset() local fn, env = self:_page(path) fn(env) self:abort()\n"
  "end\n"
  "function M:json(t, noabort)\n"
  "  local s, err = ba.json.encode(t)\n"
  "  if not s then error('json: ' .. tostring(err), 2) end\n"
  "  self:reset() self:setcontenttype('application/json') self:write(s)\n"
  "  if not noabort then self:abort() end\n"
  "end\n"
  "function M:rawrdr() return function() return self:_piece() end end\n";

void rm__lhttp_open(lua_State *L) {
  if (!luaL_newmetatable(L, REQ_MT)) { lua_pop(L, 1); return; }
  luaL_newlibtable(L, req_methods);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, req_methods, 1);   /* the metatable, for req_check */
  if (luaL_loadbuffer(L, REQ_LUA, sizeof REQ_LUA - 1, "=request") == LUA_OK) {
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  rm__lsession_open(L);   /* request:session() */
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, req_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lua_newtable(L);   /* abort()'s unique error value */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ABORT_KEY);
}

void rm_open_http(lua_State *L) {
  rm__lhttp_open(L);
  lua_getfield(L, -1, "socket");
  lua_pushcfunction(L, rm_lhttp_req2sock);
  lua_setfield(L, -2, "req2sock");
  lua_pushcfunction(L, rm_lhttp_sock2req);
  lua_setfield(L, -2, "sock2req");
  lua_pop(L, 1);
  rm__lsession_push(L);
  lua_setfield(L, -2, "session");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, rm_open_httpc);
  lua_setfield(L, -2, "httpc");
  lua_pop(L, 1);
}
