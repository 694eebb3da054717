/* Blocking mode: socket calls made on a worker thread (a ba.thread job, a
 * page run on the pool). The worker waits in poll() with the Lua lock
 * released, so the dispatcher and other jobs run meanwhile; whatever changes
 * dispatcher state (queues, watches, coroutines) is delegated to the
 * dispatcher thread with rm_rt_delegate. Waits are cut into slices so a
 * shutdown or a close from elsewhere is noticed within one slice. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "lua/lsocket.h"

enum { SLICE_MS = 100, WRITE_RETRY_MS = 2, READ_CHUNK = 65536 };
enum { W_READY = 1, W_TIMEOUT = 0, W_SHUTDOWN = -1, W_CLOSED = -2 };

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline (0: none), the Lua lock released. */
static int wait_fd(rm_rt *rt, rm_sock *s, int fd, short events, uint64_t deadline) {
  for (;;) {
    if (rt->shutting_down) return W_SHUTDOWN;
    if (s && s->close_pending) return W_CLOSED;
    uint64_t now = now_ms();
    if (deadline && now >= deadline) return W_TIMEOUT;
    int slice = deadline && deadline - now < SLICE_MS ? (int)(deadline - now) : SLICE_MS;
    struct pollfd p = {fd, events, 0};
    rm_rt_leave(rt);
    int n = poll(&p, 1, slice);
    rm_rt_enter(rt);
    if (n > 0) return W_READY;
  }
}

static const char *wait_error(int w) {
  return w == W_TIMEOUT ? "timeout" : w == W_SHUTDOWN ? "sysshutdown" : "socketclosed";
}

/* The socket at index 1 closes on the dispatcher once no worker waits on it. */
static void release(lua_State *L, rm_sock *s, int close) {
  if (--s->xusers == 0 && s->close_pending) { s->close_pending = 0; close = 1; }
  if (!close) return;
  lua_pushvalue(L, 1);
  lua_pop(L, rm_rt_delegate_n(L, rm_sock_lclose, 1));
}

static int udp_read(lua_State *L, rm_sock *s, uint64_t deadline) {
  char buf[READ_CHUNK];
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  for (;;) {
    ssize_t n = recvfrom(s->fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&ss, &len);
    if (n >= 0) {
      lua_pushlstring(L, buf, (size_t)n);
      if (!lua_toboolean(L, 3)) return 1;
      return 1 + rm_push_addr(L, (struct sockaddr *)&ss);
    }
    if (errno != EAGAIN && errno != EINTR) return rm_push_error(L, "socketreadfailed");
    int w = wait_fd(s->rt, NULL, s->fd, POLLIN, deadline);
    if (w != W_READY) return rm_push_error(L, wait_error(w));
    if (s->kind != RM_SK_UDP) return rm_push_error(L, "socketclosed");
  }
}

/* On the dispatcher: one read through the socket's filter (TLS), which only
 * the dispatcher may drive: the data, or a number: 0 when nothing came yet,
 * else the error (RM_ECLOSED at the end of the stream). */
static int filtered_try(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  char buf[READ_CHUNK];
  long n = s->kind == RM_SK_TCP ? rm_conn_read(s->conn, buf, sizeof buf) : RM_ECLOSED;
  if (n > 0) lua_pushlstring(L, buf, (size_t)n);
  else lua_pushinteger(L, n == RM_EAGAIN ? 0 : n == 0 ? RM_ECLOSED : n);
  return 1;
}

/* One try at reading s on a worker: 1 with the data pushed, 0 when nothing
 * came yet, -1 with *err set. */
static int try_plain(lua_State *L, rm_sock *s, const char **err) {
  char buf[READ_CHUNK];
  ssize_t n = recv(rm_conn_fd(s->conn), buf, sizeof buf, MSG_DONTWAIT);
  if (n > 0) { lua_pushlstring(L, buf, (size_t)n); return 1; }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  *err = n == 0 ? "socketclosed" : "socketreadfailed";
  return -1;
}

/* The same for a TLS socket: the try is delegated to the dispatcher (the
 * filter may also hold decrypted bytes the socket no longer reports). */
static int try_filtered(lua_State *L, rm_sock *s, const char **err) {
  lua_pushvalue(L, 1);
  rm_rt_delegate_n(L, filtered_try, 1);
  if (lua_type(L, -1) == LUA_TSTRING) return 1;
  lua_Integer code = lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (!code) return 0;
  *err = code == RM_ECLOSED ? "socketclosed" : "socketreadfailed";
  return -1;
}

int rm_sock_worker_read(lua_State *L, rm_sock *s) {
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  uint64_t deadline = ms >= 0 ? now_ms() + (uint64_t)ms : 0;
  if (s->kind == RM_SK_UDP) return udp_read(L, s, deadline);
  if (s->kind == RM_SK_LISTEN) return luaL_error(L, "read: a listening socket accepts, it does not read");
  if (s->kind != RM_SK_TCP || s->close_pending) return rm_push_error(L, "socketclosed");
  if (s->reader) return luaL_error(L, "read: a coroutine is already reading this socket");
  int (*try)(lua_State *, rm_sock *, const char **) = rm_conn_filter_state(s->conn) ? try_filtered : try_plain;
  int fd = rm_conn_fd(s->conn);
  const char *err = NULL;
  s->xusers++;
  while (!try(L, s, &err)) {   /* between tries the raw socket is awaited, the lock released */
    int w = wait_fd(s->rt, s, fd, POLLIN, deadline);
    if (w != W_READY) { err = wait_error(w); break; }
  }
  /* A timeout leaves the socket open; end of stream and errors close it. */
  release(L, s, err && strcmp(err, "timeout") != 0 && strcmp(err, "sysshutdown") != 0);
  return err ? rm_push_error(L, err) : 1;   /* the data is on top */
}

/* A cosocket (owned by a coroutine in "s" mode) takes a worker's data into
 * its queue or answers nil, queued; any other socket makes the worker wait
 * for room, as a blocking write does. */
int rm_sock_worker_write(lua_State *L, rm_sock *s) {
  rm_rt *rt = s->rt;
  int cosocket = s->owner && s->mode == 's';
  int nargs = lua_gettop(L);
  for (;;) {
    while (!cosocket && s->kind == RM_SK_TCP && s->xqueued > s->queuelen && !rt->shutting_down)
      rm_rt_pause(rt, WRITE_RETRY_MS);
    if (rt->shutting_down) return rm_push_error(L, "sysshutdown");
    for (int i = 1; i <= nargs; i++) lua_pushvalue(L, i);
    int n = rm_rt_delegate_n(L, rm_sock_lwrite, nargs);
    int refused = n == 2 && lua_isnil(L, -2) && lua_isinteger(L, -1);
    if (!refused || cosocket || s->kind != RM_SK_TCP) return n;
    lua_pop(L, n);
    rm_rt_pause(rt, WRITE_RETRY_MS);
  }
}

static int connect_fd(const char *host, int port, int ipv6, long timeout, int *out) {
  struct addrinfo hints = {.ai_family = ipv6 ? AF_INET6 : AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
  char sport[16];
  snprintf(sport, sizeof sport, "%d", port);
  if (getaddrinfo(host, sport, &hints, &res) != 0) return RM_ERESOLVE;
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int rc = fd < 0 ? RM_ECONNECT : RM_OK;
  if (rc == RM_OK && connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) rc = RM_ECONNECT;
  freeaddrinfo(res);
  if (rc == RM_OK) {
    struct pollfd p = {fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    int n = poll(&p, 1, (int)timeout);
    if (n == 0) rc = RM_ETIMEDOUT;
    else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) rc = RM_ECONNECT;
  }
  if (rc != RM_OK && fd >= 0) close(fd);
  *out = fd;
  return rc;
}

/* ba.socket.connect on a worker: a blocking connect with the lock released,
 * then the dispatcher adopts the connected fd. */
int rm_sock_worker_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  int port = (int)luaL_checkinteger(L, 2);
  long timeout = 1000;
  int ipv6 = 0, fd;
  if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) timeout = (long)luaL_checkinteger(L, -1);
    if (lua_getfield(L, 3, "ipv6") != LUA_TNIL) ipv6 = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  rm_rt *rt = rm_rt_get(L);
  char h[256];
  snprintf(h, sizeof h, "%s", host);   /* the string stays ours while unlocked */
  rm_rt_leave(rt);
  int rc = connect_fd(h, port, ipv6, timeout, &fd);
  rm_rt_enter(rt);
  if (rc != RM_OK) return rm_push_error(L, rc == RM_ETIMEDOUT ? "timeout" : rm_errstr(rc));
  rm_sock *s = rm_sock_push(L, rt, RM_SK_NEW);
  s->fd = fd;
  lua_pushvalue(L, -1);
  lua_pop(L, rm_rt_delegate_n(L, rm_sock_adopt_fd, 1));
  return 1;
}

/* ---- collection on a worker ---- */

typedef struct orphan { int kind; rm_conn *conn; rm_listener *lst; int fd; } orphan;

static void close_orphan(rm_rt *rt, void *ud) {
  orphan *o = ud;
  if (o->kind == RM_SK_TCP) { rm_conn_close(o->conn); rt->nsockets--; }
  else if (o->kind == RM_SK_LISTEN) { rm_listener_close(o->lst); rt->nlisteners--; }
  else if (o->kind == RM_SK_UDP) { rm_loop_unwatch(rt->loop, o->fd); close(o->fd); rt->nudp--; }
  rm_loop_free_mem(rt->loop, o, sizeof(*o));
}

/* The garbage collector ran on a worker: nobody can wait on the socket any
 * more, so its resources are handed to the dispatcher to close. */
void rm_sock_gc_elsewhere(rm_sock *s) {
  orphan *o = rm_loop_alloc(s->rt->loop, sizeof(*o));
  if (!o) return;
  *o = (orphan){s->kind, s->conn, s->lst, s->fd};
  while (s->kind == RM_SK_LISTEN && s->npending) close(s->pending[--s->npending]);
  s->kind = RM_SK_CLOSED;
  rm_rt_on_loop(s->rt, close_orphan, o);
}
