/* ba.socket: TCP sockets and listeners for Lua, in Barracuda's three modes.
 *
 * A call that would block suspends the calling coroutine (rm_co_suspend) and
 * names a continuation that finishes the call when the dispatcher wakes it.
 * Writers to one socket form a FIFO: a writer waits while others are ahead of
 * it or while the queue holds more than `queuelen` bytes, so memory stays
 * bounded however many coroutines write. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "lua/lsocket.h"

/* READ_MAX: the most one read returns. Reads land in one scratch buffer per
 * Lua state (the read method's upvalue) and are copied once, into the Lua
 * string; a large read means fewer system calls and wake-ups per byte. */
enum { READ_MAX = 262144, DEFAULT_CONNECT_MS = 1000 };

/* ---- the object ---- */

static const char SOCK_MT_KEY = 'S';   /* the metatable, by address: no name hashing per call */

rm_sock *rm_sock_check(lua_State *L, int idx) {
  rm_sock *s = lua_touserdata(L, idx);
  if (s && lua_getmetatable(L, idx)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &SOCK_MT_KEY);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (same) return s;
  }
  return luaL_checkudata(L, idx, RM_SOCKET_MT);   /* raises the usual error */
}

rm_sock *rm_sock_push(lua_State *L, rm_rt *rt, int kind) {
  rm_sock *s = lua_newuserdatauv(L, sizeof(rm_sock), 0);
  memset(s, 0, sizeof(*s));
  s->rt = rt;
  s->kind = kind;
  s->fd = -1;
  s->anchor = LUA_NOREF;
  s->queuelen = rt->queuelen;
  luaL_setmetatable(L, RM_SOCKET_MT);
  return s;
}

static void unlink_writer(rm_co *co) {
  rm_sock *s = co->wait_sock;
  rm_co_unlink(&s->wq_head, &s->wq_tail, co);
}

void rm_sock_unlink_reader(rm_co *co) {
  rm_sock *s = co->wait_sock;
  if (s->reader == co) s->reader = NULL;
}

void rm_sock_wake_all(rm_sock *s, int reason) {
  if (s->reader) rm_co_wake(s->reader, reason);
  while (s->wq_head) rm_co_wake(s->wq_head, reason);
  if (s->owner && s->owner->wait_sock == s) rm_co_wake(s->owner, reason);
}

void rm_sock_close(rm_sock *s) {
  rm_rt *rt = s->rt;
  if (s->xusers > 0 && s->kind == RM_SK_TCP) {   /* a worker polls its fd: it closes it after */
    s->close_pending = 1;
    rm_sock_wake_all(s, RM_WAKE_CLOSED);
    return;
  }
  if (s->ext && s->ext->close && s->kind == RM_SK_TCP) s->ext->close(s);
  switch (s->kind) {
  case RM_SK_TCP: rm_conn_close(s->conn); s->conn = NULL; rt->nsockets--; break;
  case RM_SK_LISTEN:
    rm_listener_close(s->lst);
    while (s->npending) close(s->pending[--s->npending]);
    rt->nlisteners--;
    break;
  case RM_SK_UDP: rm_loop_unwatch(rt->loop, s->fd); close(s->fd); rt->nudp--; break;
  case RM_SK_NEW:
    if (s->resolve) rm_resolve_cancel(s->resolve);
    if (s->conn) rm_conn_close(s->conn);   /* a connect in progress */
    s->resolve = NULL;
    s->conn = NULL;
    break;
  default: return;
  }
  s->kind = RM_SK_CLOSED;
  rm_sock_wake_all(s, RM_WAKE_CLOSED);
}

/* The owner coroutine ended: its socket closes with it, as in Barracuda. */
void rm_sock_owner_done(rm_sock *s) {
  s->owner = NULL;
  rm_sock_close(s);
  luaL_unref(s->rt->L, LUA_REGISTRYINDEX, s->anchor);
  s->anchor = LUA_NOREF;
}

rm_co *rm_sock_waiter(lua_State *L, const char *what) {
  rm_co *co = rm_co_current(L);
  if (!co) {
    rm_rt *rt = rm_rt_get(L);
    if (rm_loop_on_thread(rt->loop))
      luaL_error(L, "%s would block the dispatcher: call it from a socket coroutine, a page or a thread job", what);
    luaL_error(L, "%s: blocking sockets in worker threads are not available in this build", what);
  }
  return co;
}

int rm_sock_wake_result(lua_State *L, rm_co *co) {
  switch (co->wake) {
  case RM_WAKE_TIMEOUT: return rm_push_error(L, "timeout");
  case RM_WAKE_SHUTDOWN: return rm_push_error(L, "sysshutdown");
  default: return rm_push_error(L, "socketclosed");
  }
}

/* ---- dispatcher callbacks ---- */

static void on_connect(rm_conn *c, int err, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  s->connect_err = err;
  if (s->reader) rm_co_wake(s->reader, RM_WAKE_READY);
  rm_rt_leave_ready(rt);
}

static void on_readable(rm_conn *c, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  if (s->reader) rm_co_wake(s->reader, RM_WAKE_READY);
  else rm_conn_want_read(c, 0);   /* nobody reads: let the kernel buffer fill */
  rm_rt_leave_ready(rt);
}

static void on_writable(rm_conn *c, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  if (s->reader && s->reader->waiting == RM_WAIT_OTHER) {   /* rm_sock_wait_io */
    rm_conn_want_write(c, 0);
    rm_co_wake(s->reader, RM_WAKE_READY);
  }
  s->xqueued = rm_conn_queued(c);
  if (s->wq_head) rm_co_wake(s->wq_head, RM_WAKE_READY);
  rm_rt_leave_ready(rt);
}

static void on_error(rm_conn *c, int err, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  rm_sock_wake_all(s, RM_WAKE_READY);   /* each finds the error when it retries */
  rm_rt_leave_ready(rt);
}

static const rm_conn_handler tcp_handler = {on_connect, on_readable, on_writable, on_error};

static void become_tcp(rm_sock *s, rm_conn *c) {
  s->kind = RM_SK_TCP;
  s->conn = c;
  s->rt->nsockets++;
  rm_conn_set_handler(c, &tcp_handler, s);
  rm_conn_set_limits(c, 0, s->queuelen);
}

rm_sock *rm_sock_from_conn(lua_State *L, rm_rt *rt, rm_conn *c) {
  rm_sock *s = rm_sock_push(L, rt, RM_SK_NEW);
  become_tcp(s, c);
  return s;
}

int rm_sock_adopt_fd(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  rm_conn *c = rm_conn_new(s->rt->loop, s->fd, &tcp_handler, s);
  if (!c) { close(s->fd); s->fd = -1; return luaL_error(L, "out of memory"); }
  s->fd = -1;
  become_tcp(s, c);
  return 0;
}

rm_conn *rm_sock_detach(rm_sock *s) {
  if (s->kind != RM_SK_TCP) return NULL;
  rm_conn *c = s->conn;
  rm_conn_set_handler(c, NULL, NULL);
  rm_conn_want_read(c, 0);
  s->conn = NULL;
  s->kind = RM_SK_CLOSED;
  s->rt->nsockets--;
  rm_sock_wake_all(s, RM_WAKE_CLOSED);
  return c;
}

int rm_sock_wait_io(lua_State *L, rm_co *co, rm_sock *s, int events, long timeout,
                    lua_KFunction k, lua_KContext ctx) {
  if (s->reader && s->reader != co) return luaL_error(L, "another coroutine is already waiting on this socket");
  s->reader = co;
  co->on_wake = rm_sock_unlink_reader;
  if (events & RM_READ) rm_conn_want_read(s->conn, 1);
  if (events & RM_WRITE) rm_conn_want_write(s->conn, 1);
  return rm_co_suspend(L, co, RM_WAIT_OTHER, s, timeout, k, ctx);
}

/* ---- read ---- */

static int tcp_read(lua_State *L, rm_sock *s, long timeout);

static int tcp_read_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_sock *s = rm_sock_check(L, 1);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return tcp_read(L, s, (long)ctx);
}

static int tcp_read(lua_State *L, rm_sock *s, long timeout) {
  char *buf = lua_touserdata(L, lua_upvalueindex(1));   /* READ_MAX bytes */
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  long n = rm_conn_read(s->conn, buf, READ_MAX);
  if (n > 0) { lua_pushlstring(L, buf, (size_t)n); return 1; }
  if (n == RM_EAGAIN) {
    rm_co *co = rm_sock_waiter(L, "read");
    if (s->reader && s->reader != co) return luaL_error(L, "read: another coroutine is already reading this socket");
    s->reader = co;
    co->on_wake = rm_sock_unlink_reader;
    if (!s->disabled) rm_conn_want_read(s->conn, 1);
    return rm_co_suspend(L, co, RM_WAIT_READ, s, timeout, tcp_read_k, (lua_KContext)timeout);
  }
  if (n == 0 && s->halfclose) return rm_push_error(L, "socketclosed");  /* writing goes on */
  rm_sock_close(s);   /* end of stream or a failure: the socket is done */
  return rm_push_error(L, n == 0 || n == RM_ECLOSED ? "socketclosed" : "socketreadfailed");
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  return co->wake == RM_WAKE_TIMEOUT ? rm_push_error(L, "timeout") : rm_sock_wake_result(L, co);
}

static int sock_read(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (s->ext && s->ext->read) return s->ext->read(L, s);
  if (!rm_loop_on_thread(s->rt->loop)) return rm_sock_worker_read(L, s);
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  switch (s->kind) {
  case RM_SK_TCP: return tcp_read(L, s, ms < 0 ? -1 : (long)ms);
  case RM_SK_UDP: return rm_udp_read(L, s);
  case RM_SK_NEW:  /* an unconnected cosocket: read(ms) is a timer */
    if (ms < 0) return luaL_error(L, "read: the socket is not connected (give a timeout to wait)");
    return rm_co_suspend(L, rm_sock_waiter(L, "read"), RM_WAIT_SLEEP, s, (long)ms, sleep_k, 0);
  case RM_SK_LISTEN: return luaL_error(L, "read: a listening socket accepts, it does not read");
  default: return rm_push_error(L, "socketclosed");
  }
}

/* ---- write ---- */

static int tcp_write(lua_State *L, rm_sock *s, rm_co *co, int stage);

static int tcp_write_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_sock *s = rm_sock_check(L, 1);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return tcp_write(L, s, co, (int)ctx);
}

static void push_writer(rm_sock *s, rm_co *co, int at_head) {
  co->on_wake = unlink_writer;
  if (at_head) {
    co->wnext = s->wq_head;
    s->wq_head = co;
    if (!s->wq_tail) s->wq_tail = co;
  } else {
    rm_co_append(&s->wq_head, &s->wq_tail, co);
  }
}

static void write_range(lua_State *L, const char **p, size_t *n) {
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  lua_Integer i = luaL_optinteger(L, 3, 1), j = luaL_optinteger(L, 4, -1);
  if (i < 0) i = (lua_Integer)len + i + 1;
  if (j < 0) j = (lua_Integer)len + j + 1;
  if (i < 1) i = 1;
  if (j > (lua_Integer)len) j = (lua_Integer)len;
  *p = data + i - 1;
  *n = i > j ? 0 : (size_t)(j - i + 1);
}

/* The stages of a cosocket write, kept across suspensions in the context;
 * W_FRAME marks a protocol's frame (rm_sock_write_frame). */
enum { W_NEW, W_WOKEN, W_WRITTEN, W_FRAME = 4 };

/* Queues the writer's data: the range of the string at 2, or a frame's
 * header and payload (the strings at 2 and 3) in one writev, so that a
 * payload is never copied to be joined to its header. */
static int queue_data(lua_State *L, rm_sock *s, int frame) {
  if (frame) {
    struct iovec iov[2];
    iov[0].iov_base = (void *)lua_tolstring(L, 2, &iov[0].iov_len);
    iov[1].iov_base = (void *)lua_tolstring(L, 3, &iov[1].iov_len);
    return rm_conn_writev(s->conn, iov, 2);
  }
  const char *p;
  size_t n;
  write_range(L, &p, &n);
  return rm_conn_write(s->conn, p, n);
}

/* A new writer waits behind earlier ones; a writer at the head writes once
 * the queue is at or below queuelen, then waits (still at the head) until
 * the kernel has taken enough of it. Each writer that finishes passes the
 * turn to the next, so the FIFO never stalls. */
static int tcp_write(lua_State *L, rm_sock *s, rm_co *co, int stage) {
  int frame = stage & W_FRAME;
  stage &= ~W_FRAME;
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  if (rm_conn_is_broken(s->conn)) { rm_sock_close(s); return rm_push_error(L, "socketwritefailed"); }
  int full = rm_conn_queued(s->conn) > s->queuelen;
  if ((stage == W_NEW && (s->wq_head || full)) || (stage == W_WOKEN && full)) {
    push_writer(s, co, stage == W_WOKEN);
    return rm_co_suspend(L, co, RM_WAIT_WRITE, s, -1, tcp_write_k, W_WOKEN | frame);
  }
  if (stage != W_WRITTEN) {
    if (queue_data(L, s, frame) != RM_OK) { rm_sock_close(s); return rm_push_error(L, "socketwritefailed"); }
    if (rm_conn_queued(s->conn) > s->queuelen) {
      push_writer(s, co, 1);
      return rm_co_suspend(L, co, RM_WAIT_WRITE, s, -1, tcp_write_k, W_WRITTEN | frame);
    }
  }
  if (s->wq_head && rm_conn_queued(s->conn) <= s->queuelen) rm_co_wake(s->wq_head, RM_WAKE_READY);
  lua_pushboolean(L, 1);
  return 1;
}

/* A caller that cannot be suspended: queued up to queuelen, else refused
 * with the number of bytes already queued. */
static int tcp_write_nowait(lua_State *L, rm_sock *s) {
  const char *p;
  size_t n, q = rm_conn_queued(s->conn);
  write_range(L, &p, &n);
  if (s->wq_head || (q > 0 && q + n > s->queuelen)) {
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)q);
    return 2;
  }
  if (rm_conn_write(s->conn, p, n) != RM_OK) { rm_sock_close(s); return rm_push_error(L, "socketwritefailed"); }
  s->xqueued = rm_conn_queued(s->conn);
  lua_pushboolean(L, 1);
  return 1;
}

int rm_sock_write_frame(lua_State *L, rm_sock *s) {
  return tcp_write(L, s, rm_co_current(L), W_NEW | W_FRAME);
}

int rm_sock_lwrite(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (s->ext && s->ext->write) return s->ext->write(L, s);
  luaL_checkstring(L, 2);
  if (s->kind == RM_SK_UDP) {
    const char *p;
    size_t n;
    write_range(L, &p, &n);
    return rm_udp_write(L, s, p, n);
  }
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  if (!rm_loop_on_thread(s->rt->loop)) return rm_sock_worker_write(L, s);
  rm_co *co = rm_co_current(L);
  return co ? tcp_write(L, s, co, W_NEW) : tcp_write_nowait(L, s);
}

/* ---- connect ---- */

/* TLS for connect, bind and accept (ltls.c). */
int rm__sock_tls_wanted(lua_State *L, int opts);
int rm__sock_tls_connect(lua_State *L, rm_sock *s, long deadline);
int rm__sock_tls_listen(lua_State *L, rm_sock *s, int idx);
int rm__sock_tls_accept(rm_sock *ls, rm_sock *ns);

static void on_resolved(void *ud, int err, const struct sockaddr *sa, socklen_t len) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  s->resolve = NULL;
  if (!err) err = rm_conn_connect(s->rt->loop, sa, len, NULL, 0, &tcp_handler, s, &s->conn);
  if (err) {
    s->connect_err = err;
    if (s->reader) rm_co_wake(s->reader, RM_WAKE_READY);
  }
  rm_rt_leave_ready(rt);
}

static void connect_cancel(rm_co *co) {
  rm_sock *s = co->wait_sock;
  s->reader = NULL;
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_sock *s = lua_touserdata(L, -1);
  if (co->wake == RM_WAKE_READY && !s->connect_err) {
    rm_conn *c = s->conn;
    s->conn = NULL;
    become_tcp(s, c);
    if (rm__sock_tls_wanted(L, 3)) return rm__sock_tls_connect(L, s, (long)ctx);
    return 1;   /* the socket */
  }
  if (s->resolve) rm_resolve_cancel(s->resolve);
  if (s->conn) rm_conn_abort(s->conn);
  s->resolve = NULL;
  s->conn = NULL;
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return rm_push_error(L, s->connect_err == RM_ERESOLVE ? "cannotresolve" : "cannotconnect");
}

/* ba.socket.connect(host, port [, {timeout=, ipv6=, shark=, alpn=}]): the
 * timeout covers the TLS handshake too. */
static int sock_connect(lua_State *L) {
  if (!rm_loop_on_thread(rm_rt_get(L)->loop)) {   /* a worker: TLS is handshaken by a dispatcher coroutine */
    if (rm__sock_tls_wanted(L, 3)) return rm_rt_delegate_co(L, sock_connect, lua_gettop(L));
    return rm_sock_worker_connect(L);
  }
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  rm_rt *rt = rm_rt_get(L);
  long timeout = DEFAULT_CONNECT_MS;
  int ipv6 = 0;
  if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) timeout = (long)luaL_checkinteger(L, -1);
    if (lua_getfield(L, 3, "ipv6") != LUA_TNIL) ipv6 = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  if (port < 1 || port > 65535) return luaL_argerror(L, 2, "port out of range");
  rm__sock_tls_wanted(L, 3);   /* checks shark= and alpn= before connecting */
  rm_co *co = rm_sock_waiter(L, "ba.socket.connect");
  rm_sock *s;
  if (co->sock && co->sock->kind == RM_SK_NEW && !co->sock->resolve && !co->sock->conn) {
    s = co->sock;   /* a ba.socket.event coroutine connects its own socket */
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->anchor);
  } else {
    s = rm_sock_push(L, rt, RM_SK_NEW);
  }
  s->connect_err = 0;
  int rc = rm_resolve_start(rt->loop, host, (int)port, ipv6 ? AF_INET6 : AF_UNSPEC, on_resolved, s, &s->resolve);
  if (rc != RM_OK) return rm_push_error(L, "cannotresolve");
  s->reader = co;
  co->on_wake = connect_cancel;
  rm_loop_update_time(rt->loop);
  lua_KContext deadline = (lua_KContext)rm_loop_now(rt->loop) + timeout;
  return rm_co_suspend(L, co, RM_WAIT_CONNECT, s, timeout, connect_k, deadline);
}

/* ---- listen and accept ---- */

static void on_accept(rm_listener *l, int fd, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  s->pending[s->npending++] = fd;
  if (s->npending == RM_PENDING_MAX) rm_listener_pause(l, 1);   /* nobody accepts fast enough */
  if (s->reader) rm_co_wake(s->reader, RM_WAKE_READY);
  rm_rt_leave_ready(rt);
}

/* ba.socket.bind(port [, {intf=, ipv6=, backlog=, reuseport=, shark=}]) */
static int sock_bind(lua_State *L) {
  RM_ON_LOOP(L, rm_rt_get(L), sock_bind);
  lua_Integer port = luaL_checkinteger(L, 1);
  rm_rt *rt = rm_rt_get(L);
  const char *intf = NULL;
  int flags = 0, backlog = 0;
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "intf") != LUA_TNIL) intf = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "ipv6") != LUA_TNIL && lua_toboolean(L, -1)) flags |= RM_LISTEN_IPV6;
    if (lua_getfield(L, 2, "backlog") != LUA_TNIL) backlog = (int)luaL_checkinteger(L, -1);
    if (lua_getfield(L, 2, "reuseport") != LUA_TNIL && lua_toboolean(L, -1)) flags |= RM_LISTEN_REUSEPORT;
    lua_pop(L, 4);
  }
  if (port < 0 || port > 65535) return luaL_argerror(L, 1, "port out of range");
  int shark = lua_istable(L, 2) && lua_getfield(L, 2, "shark") != LUA_TNIL;   /* a server sharkssl */
  rm_co *co = rm_co_current(L);
  rm_sock *s;
  if (co && co->sock) {   /* inside a socket coroutine: its own socket listens */
    s = co->sock;
    if (s->kind != RM_SK_NEW || s->resolve || s->conn) return rm_push_error(L, "incorrectuse");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->anchor);
  } else {
    s = rm_sock_push(L, rt, RM_SK_NEW);
  }
  if (!s->pending && !(s->pending = rm_loop_alloc(rt->loop, sizeof(int) * RM_PENDING_MAX)))
    return rm_push_error(L, "malloc");
  if (shark && rm__sock_tls_listen(L, s, 3) != RM_OK) return rm_push_error(L, "malloc");
  if (rm_listen(rt->loop, intf, (int)port, flags, backlog, on_accept, s, &s->lst) != RM_OK) {
    if (s->ext) { s->ext->gc(s); s->ext = NULL; }   /* the TLS config only a listener keeps */
    return rm_push_error(L, "bind");
  }
  s->kind = RM_SK_LISTEN;
  s->ipv6 = (flags & RM_LISTEN_IPV6) != 0;
  rt->nlisteners++;
  return 1;
}

static int accept_k(lua_State *L, int status, lua_KContext ctx);

static int sock_accept(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (!rm_loop_on_thread(s->rt->loop)) return luaL_error(L, "accept: call it from a socket coroutine, not a thread job");
  if (s->kind == RM_SK_CLOSED) return rm_push_error(L, "socketclosed");
  if (s->kind != RM_SK_LISTEN) return luaL_error(L, "accept: not a listening socket");
  if (s->npending == 0) {
    rm_co *co = rm_sock_waiter(L, "accept");
    if (s->reader && s->reader != co) return luaL_error(L, "accept: another coroutine is already accepting");
    s->reader = co;
    co->on_wake = rm_sock_unlink_reader;
    return rm_co_suspend(L, co, RM_WAIT_ACCEPT, s, (long)luaL_optinteger(L, 2, -1), accept_k, 0);
  }
  int fd = s->pending[0];
  memmove(s->pending, s->pending + 1, sizeof(int) * (size_t)--s->npending);
  rm_listener_pause(s->lst, 0);
  rm_sock *ns = rm_sock_push(L, s->rt, RM_SK_NEW);
  rm_conn *c = rm_conn_new(s->rt->loop, fd, &tcp_handler, ns);
  if (!c) { close(fd); return rm_push_error(L, "malloc"); }
  become_tcp(ns, c);
  if (s->tls && rm__sock_tls_accept(s, ns) != RM_OK) { rm_sock_close(ns); return rm_push_error(L, "malloc"); }
  return 1;
}

static int accept_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return sock_accept(L);
}

/* ---- binding a coroutine ---- */

/* sock:event(fn [, "r"|"s"], ...) */
static int sock_event(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  RM_ON_LOOP(L, s->rt, sock_event);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int mode = 'r', first_arg = 3;
  if (lua_type(L, 3) == LUA_TSTRING) {
    const char *m = lua_tostring(L, 3);
    if (strcmp(m, "r") != 0 && strcmp(m, "s") != 0) return luaL_argerror(L, 3, "mode must be \"r\" or \"s\"");
    mode = m[0];
    first_arg = 4;
  }
  if (s->kind == RM_SK_CLOSED) return rm_push_error(L, "socketclosed");
  rm_co *me = rm_co_current(L);
  if (s->owner && s->owner != me) return rm_push_error(L, "incorrectuse");
  if (s->owner) s->owner->sock = NULL;   /* moving the connection to a new coroutine */
  s->mode = mode;
  int nargs = lua_gettop(L) - first_arg + 1;
  /* Arguments after the mode shift down so fn sees (sock, ...). */
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  for (int i = 0; i < nargs; i++) lua_pushvalue(L, first_arg + i);
  if (s->anchor == LUA_NOREF) {
    lua_pushvalue(L, 1);
    s->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  s->owner = rm_co_new(s->rt, L, nargs + 1, s, 0);
  rm_co_run(s->owner);
  lua_pushboolean(L, 1);
  return 1;
}

/* ba.socket.event(fn, ...): a coroutine bound to a new, unconnected socket. */
static int ba_event(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  rm_rt *rt = rm_rt_get(L);
  RM_ON_LOOP(L, rt, ba_event);
  int nargs = lua_gettop(L) - 1;
  rm_sock *s = rm_sock_push(L, rt, RM_SK_NEW);
  lua_insert(L, 1);                       /* sock, fn, args... */
  lua_pushvalue(L, 1);
  s->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 1);
  for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
  s->owner = rm_co_new(rt, L, nargs + 1, s, 0);
  if (!rm_co_run(s->owner)) return 0;   /* fn already finished: its socket is closed */
  lua_settop(L, 1);
  return 1;
}

/* ---- the rest of the methods ---- */

int rm_sock_lclose(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  RM_ON_LOOP(L, s->rt, rm_sock_lclose);
  if (s->ext && s->ext->lclose && s->kind == RM_SK_TCP) return s->ext->lclose(L, s);
  rm_sock_close(s);
  rm_rt_run_ready(s->rt);
  return 0;
}

static int sock_gc(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (s->kind != RM_SK_CLOSED && !rm_loop_on_thread(s->rt->loop)) rm_sock_gc_elsewhere(s);
  if (s->kind != RM_SK_CLOSED) rm_sock_close(s);
  if (s->ext && s->ext->gc) s->ext->gc(s);
  s->ext = NULL;
  if (s->pending) rm_loop_free_mem(s->rt->loop, s->pending, sizeof(int) * RM_PENDING_MAX);
  s->pending = NULL;
  return 0;
}

/* queuelen([max]): the previous bound, optionally setting a new one. */
static int sock_queuelen(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  RM_ON_LOOP(L, s->rt, sock_queuelen);
  lua_pushinteger(L, (lua_Integer)s->queuelen);
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n > 0, 2, "queue length must be positive");
    s->queuelen = (size_t)n;
    if (s->conn && s->kind == RM_SK_TCP) rm_conn_set_limits(s->conn, 0, s->queuelen);
  }
  return 1;
}

static int enabled_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return lua_gettop(L) - (int)ctx;   /* the values enable() passed */
}

/* In its own coroutine, disable() suspends until enable(...) and returns
 * enable's arguments; from elsewhere it stops read events. */
static int sock_disable(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  RM_ON_LOOP(L, s->rt, sock_disable);
  rm_co *co = rm_co_current(L);
  s->disabled = 1;
  if (s->kind == RM_SK_TCP) rm_conn_want_read(s->conn, 0);
  if (co && co == s->owner) {
    int top = lua_gettop(L);
    return rm_co_suspend(L, co, RM_WAIT_DISABLED, s, -1, enabled_k, top);
  }
  return 0;
}

static int sock_enable(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  RM_ON_LOOP(L, s->rt, sock_enable);
  s->disabled = 0;
  if (s->kind == RM_SK_TCP && s->reader) rm_conn_want_read(s->conn, 1);
  if (s->owner && s->owner->waiting == RM_WAIT_DISABLED && !s->owner->ready) {
    rm_co_wake_with(s->owner, L, lua_gettop(L) - 1);
    rm_rt_run_ready(s->rt);
  }
  return 0;
}

static int sock_fd(rm_sock *s) {
  switch (s->kind) {
  case RM_SK_TCP: return rm_conn_fd(s->conn);
  case RM_SK_LISTEN: return rm_listener_fd(s->lst);
  case RM_SK_UDP: return s->fd;
  default: return -1;
  }
}

static int sock_peername(lua_State *L) { return rm_push_sockname(L, sock_fd(rm_sock_check(L, 1)), 1); }
static int sock_sockname(lua_State *L) { return rm_push_sockname(L, sock_fd(rm_sock_check(L, 1)), 0); }

static int sock_setoption(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int fd = sock_fd(s), on = lua_toboolean(L, 3), rc;
  if (fd < 0) return rm_push_error(L, "socketclosed");
  if (strcmp(name, "tcp-nodelay") == 0) {
    rc = setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  } else if (strcmp(name, "keepalive") == 0) {
    rc = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    int idle = (int)luaL_optinteger(L, 4, 0), intvl = (int)luaL_optinteger(L, 5, 0);
    if (!rc && on && idle > 0) rc = setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    if (!rc && on && intvl > 0) rc = setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  } else if (strcmp(name, "dontroute") == 0) {
    rc = setsockopt(fd, SOL_SOCKET, SO_DONTROUTE, &on, sizeof on);
  } else if (strcmp(name, "halfclose") == 0 && s->kind == RM_SK_TCP) {
    s->halfclose = on;
    rc = 0;
  } else if (s->kind == RM_SK_UDP) {
    return rm_udp_setoption(L, s, name);
  } else {
    return luaL_argerror(L, 2, "unknown option (tcp-nodelay, keepalive, dontroute, halfclose, broadcast, ip-membership)");
  }
  if (rc != 0) return rm_push_error(L, strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* shutdown(): a half-close. The peer reads end of stream once the queue is
 * delivered; this side may go on reading. */
static int sock_shutdown(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  if (s->ext) return rm_push_error(L, "incorrectuse");   /* the protocol closes its own way */
  if (rm_conn_shutdown(s->conn) != RM_OK) return rm_push_error(L, "socketwritefailed");
  lua_pushboolean(L, 1);
  return 1;
}

static int sock_owner(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  rm_co *co = rm_co_current(L);
  lua_pushboolean(L, co && co == s->owner);
  return 1;
}

static int sock_state(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  static const char *waits[] = {"exec", "read", "write", "accept", "connect", "read", "disabled", "connect", "exec"};
  const char *st = "exec";
  if (s->kind == RM_SK_CLOSED) st = "terminated";
  else if (s->disabled) st = "disabled";
  else if (s->kind == RM_SK_NEW && !s->resolve && !s->conn) st = "notcon";
  else if (s->owner && s->owner->waiting) st = waits[s->owner->waiting];
  else if (s->reader) st = waits[s->reader->waiting];
  lua_pushstring(L, st);
  return 1;
}

static int sock_tostring(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  static const char *kinds[] = {"unconnected", "tcp", "listen", "udp", "closed"};
  const char *kind = s->ext && s->kind == RM_SK_TCP ? s->ext->name : kinds[s->kind];
  lua_pushfstring(L, "ba.socket(%s, fd %d): %p", kind, sock_fd(s), (void *)s);
  return 1;
}

static int sock_websocket(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  lua_pushboolean(L, s->ext && s->ext->name && s->ext->name[0] == 'w');
  return 1;
}

/* ---- module functions ---- */

static int ba_getsock(lua_State *L) {
  rm_co *co = rm_co_current(L);
  if (!co || !co->sock || co->sock->anchor == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, co->sock->anchor);
  return 1;
}

static int ba_stat(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, rt->nsockets); lua_setfield(L, -2, "sockets");
  lua_pushinteger(L, rt->nlisteners); lua_setfield(L, -2, "listeners");
  lua_pushinteger(L, rt->nudp); lua_setfield(L, -2, "udp");
  lua_pushinteger(L, rt->nco); lua_setfield(L, -2, "coroutines");
  lua_pushinteger(L, rm_conn_count(rt->loop)); lua_setfield(L, -2, "connections");
  return 1;
}

static void on_toip(void *ud, int err, const struct sockaddr *sa, socklen_t len) {
  rm_co *co = ud;
  rm_rt *rt = co->rt;
  rm_rt_enter(rt);
  co->on_wake = NULL;   /* the lookup is over: nothing to cancel */
  if (!err) {
    char ip[64];
    rm_addr_format(sa, ip, sizeof ip, NULL);
    lua_pushstring(co->L, ip);
    rm_co_wake_with(co, co->L, 1);
  } else {
    rm_co_wake(co, RM_WAKE_READY);
  }
  rm_rt_leave_ready(rt);
}

static void toip_cancel(rm_co *co) { rm_resolve_cancel(co->wait_data); }

static int toip_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  if (lua_gettop(L) > (int)ctx) return 1;
  return rm_push_error(L, "cannotresolve");
}

/* ba.socket.toip(host [, ipv6]) */
static int ba_toip(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int family = lua_toboolean(L, 2) ? AF_INET6 : AF_UNSPEC;
  struct sockaddr_storage ss;
  socklen_t len;
  if (rm_addr_parse(host, 0, family, &ss, &len) == RM_OK) { lua_settop(L, 1); return 1; }
  rm_co *co = rm_sock_waiter(L, "ba.socket.toip");
  rm_rt *rt = rm_rt_get(L);
  rm_resolve *r;
  if (rm_resolve_start(rt->loop, host, 0, family, on_toip, co, &r) != RM_OK) return rm_push_error(L, "cannotresolve");
  co->wait_data = r;
  co->on_wake = toip_cancel;
  return rm_co_suspend(L, co, RM_WAIT_RESOLVE, NULL, -1, toip_k, lua_gettop(L));
}

/* n2h(n, str [, offset]): big-endian integer of n bytes (1..8). */
static int ba_n2h(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  size_t len;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 2, &len);
  lua_Integer off = luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, n >= 1 && n <= 8, 1, "size must be 1 to 8");
  luaL_argcheck(L, off >= 1 && (size_t)(off - 1 + n) <= len, 3, "not enough bytes");
  uint64_t v = 0;
  for (lua_Integer i = 0; i < n; i++) v = (v << 8) | p[off - 1 + i];
  lua_pushinteger(L, (lua_Integer)v);
  return 1;
}

static int ba_h2n(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  uint64_t v = (uint64_t)luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1 && n <= 8, 1, "size must be 1 to 8");
  char b[8];
  for (lua_Integer i = n - 1; i >= 0; i--) { b[i] = (char)(v & 0xff); v >>= 8; }
  lua_pushlstring(L, b, (size_t)n);
  return 1;
}

static const luaL_Reg sock_methods[] = {
  {"write", rm_sock_lwrite}, {"accept", sock_accept}, {"close", rm_sock_lclose},
  {"event", sock_event}, {"queuelen", sock_queuelen}, {"disable", sock_disable}, {"enable", sock_enable},
  {"setoption", sock_setoption}, {"peername", sock_peername}, {"sockname", sock_sockname},
  {"sendto", rm_udp_sendto}, {"owner", sock_owner}, {"state", sock_state}, {"websocket", sock_websocket},
  {"shutdown", sock_shutdown}, {"ping", rm_ws_ping}, {"wsinfo", rm_ws_info}, {NULL, NULL}
};

static const luaL_Reg socket_funcs[] = {
  {"bind", sock_bind}, {"connect", sock_connect}, {"event", ba_event}, {"udpcon", rm_udp_new},
  {"toip", ba_toip}, {"n2h", ba_n2h}, {"h2n", ba_h2n}, {"getsock", ba_getsock}, {"stat", ba_stat},
  {"pipe", rm_sock_pipe}, {"wsconnect", rm_ws_connect}, {"wsupgrade", rm_ws_upgrade_lua}, {NULL, NULL}
};

int rm_open_socket(lua_State *L) {
  rm_ws_open(L);
  luaL_newmetatable(L, RM_SOCKET_MT);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &SOCK_MT_KEY);
  luaL_newlib(L, sock_methods);
  lua_newuserdatauv(L, READ_MAX, 0);   /* read's upvalue: tcp_read's scratch buffer */
  lua_pushcclosure(L, sock_read, 1);
  lua_setfield(L, -2, "read");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, sock_gc); lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, sock_gc); lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, sock_tostring); lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, socket_funcs);
  return 1;
}
