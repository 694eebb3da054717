/* ba.socket.pipe(a, b [, {splice=, idle=}]): moves bytes both ways between two TCP
 * sockets inside the dispatcher, with no Lua per chunk. The calling coroutine
 * is suspended until both directions are over and then gets the byte counts.
 *
 * The two connections are taken out of their Lua socket objects (which read
 * as closed from then on) and closed when the pipe ends. Each direction moves
 * bytes from one connection (`from`) to the other (`to`):
 *  - splice path (Linux, both connections plain TCP): splice(2) from `from`
 *    into a kernel pipe, then from the kernel pipe into `to`; the bytes never
 *    enter this process.
 *  - buffer path (a filter such as TLS on either side, or {splice=false}):
 *    rm_conn_read into a buffer, rm_conn_write of that same buffer, which
 *    hands the kernel what it takes at once and queues only the rest.
 * Either way a direction never holds more than `to`'s queue bound (the
 * socket's queuelen) in flight: it stops reading `from` until `to` drains.
 *
 * End of stream on `from` half-closes `to` once what is in flight is
 * delivered; the other direction goes on. An error on either connection ends
 * both directions and closes both connections, and so does silence both
 * ways for `idle` ms (checked once per period: it ends within two). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include "lua/lsocket.h"

enum { CHUNK = 65536, BATCH = 16 };   /* BATCH chunks per callback: other connections get their turn */

typedef struct rm_pipe rm_pipe;

typedef struct pipe_dir {
  rm_pipe *p;
  rm_conn *from, *to;
  size_t bound;        /* bytes in flight toward `to` at most */
  lua_Integer bytes;   /* delivered to `to` (splice) or handed to its queue (buffer) */
  int kp[2];           /* splice path: the kernel pipe; -1 on the buffer path */
  size_t inpipe;       /* bytes sitting in the kernel pipe */
  int eof, done;       /* done: `to` is half-closed */
} pipe_dir;

struct rm_pipe {
  rm_rt *rt;
  rm_co *co;           /* the coroutine suspended in pipe(), until it is woken */
  rm_conn *a, *b;
  pipe_dir ab, ba;
  const char *err;     /* why it ended early, or NULL */
  int finished;
  rm_timer *idle;      /* fires every idle period, or NULL */
  lua_Integer seen;    /* bytes moved at its last tick */
};

/* ---- the end ---- */

/* Closes both connections and the kernel pipes; no callback runs after it. */
static void teardown(rm_pipe *p, const char *err) {
  if (p->finished) return;
  p->finished = 1;
  p->err = err;
  pipe_dir *dirs[2] = {&p->ab, &p->ba};
  for (int i = 0; i < 2; i++) {
    if (dirs[i]->kp[0] >= 0) { close(dirs[i]->kp[0]); close(dirs[i]->kp[1]); }
    dirs[i]->kp[0] = dirs[i]->kp[1] = -1;
  }
  rm_conn_close(p->a);   /* what is queued is still delivered */
  rm_conn_close(p->b);
  rm_timer_free(p->idle);   /* safe in its own callback: the loop is done with it */
  p->idle = NULL;
}

/* From a dispatcher callback: ends the pipe and resumes the coroutine. */
static void finish(rm_pipe *p, const char *err) {
  if (p->finished) return;
  teardown(p, err);
  rm_co *co = p->co;
  p->co = NULL;
  rm_rt_enter(p->rt);
  rm_co_wake(co, RM_WAKE_READY);
  rm_rt_run_ready(p->rt);
  rm_rt_leave(p->rt);
}

static void idle_tick(rm_timer *t, void *ud) {
  rm_pipe *p = ud;
  lua_Integer moved = p->ab.bytes + p->ba.bytes;
  if (moved == p->seen) finish(p, "timeout");
  else p->seen = moved;
}

/* The coroutine is woken by something else (shutdown, the state closing). */
static void pipe_cancel(rm_co *co) {
  rm_pipe *p = co->wait_data;
  p->co = NULL;
  teardown(p, "sysshutdown");
}

/* `from` reached end of stream and everything before it reached `to`. */
static void direction_done(pipe_dir *d) {
  rm_pipe *p = d->p;
  d->done = 1;
  rm_conn_want_read(d->from, 0);
  rm_conn_want_write(d->to, 0);
  if (rm_conn_shutdown(d->to) != RM_OK) { finish(p, "socketwritefailed"); return; }
  if (p->ab.done && p->ba.done) finish(p, NULL);
}

/* ---- the buffer path ---- */

static void pump_buffer(pipe_dir *d) {
  char buf[CHUNK];
  for (int i = 0; i < BATCH; i++) {
    size_t queued = rm_conn_queued(d->to);
    if (queued >= d->bound) {   /* on_writable comes back at the low-water mark */
      rm_conn_want_read(d->from, 0);
      rm_conn_want_write(d->to, 0);
      return;
    }
    size_t room = d->bound - queued;
    long r = rm_conn_read(d->from, buf, room < sizeof buf ? room : sizeof buf);
    if (r == RM_EAGAIN) {
      rm_conn_want_read(d->from, 1);
      rm_conn_want_write(d->to, 0);
      return;
    }
    if (r == 0) { direction_done(d); return; }
    if (r < 0) { finish(d->p, "socketreadfailed"); return; }
    if (rm_conn_write(d->to, buf, (size_t)r) != RM_OK) { finish(d->p, "socketwritefailed"); return; }
    d->bytes += r;
  }
  /* Out of turns. The socket stays readable (level-triggered) unless a filter
   * holds the rest already decoded: then `to` being writable calls us back. */
  rm_conn_want_read(d->from, 1);
  if (rm_conn_pending(d->from) > 0) rm_conn_want_write(d->to, 1);
}

/* ---- the splice path ---- */

#ifdef __linux__
static int splice_setup(pipe_dir *d) {
  if (pipe2(d->kp, O_NONBLOCK | O_CLOEXEC) != 0) { d->kp[0] = d->kp[1] = -1; return -1; }
  /* The kernel pipe is this direction's queue: as large as the bound allows.
   * The kernel rounds up to whole pages and may refuse; the default stays then. */
  fcntl(d->kp[1], F_SETPIPE_SZ, (int)(d->bound < (1u << 20) ? d->bound : (1u << 20)));
  return 0;
}

static void pump_splice(pipe_dir *d) {
  int in = rm_conn_fd(d->from), out = rm_conn_fd(d->to);
  unsigned flags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
  if (rm_conn_queued(d->to) > 0) {   /* written before the pipe began: it goes first */
    rm_conn_want_read(d->from, 0);
    rm_conn_want_write(d->to, 1);
    return;
  }
  for (int i = 0; i < BATCH; i++) {
    if (d->inpipe > 0) {
      ssize_t w = splice(d->kp[0], NULL, out, NULL, d->inpipe, flags);
      if (w < 0 && errno != EAGAIN && errno != EINTR) { finish(d->p, "socketwritefailed"); return; }
      if (w > 0) { d->inpipe -= (size_t)w; d->bytes += w; }
      if (d->inpipe > 0) {   /* `to` is full: stop reading until it takes more */
        rm_conn_want_read(d->from, 0);
        rm_conn_want_write(d->to, 1);
        return;
      }
    }
    if (d->eof) { direction_done(d); return; }
    ssize_t r = splice(in, NULL, d->kp[1], NULL, d->bound, flags);
    if (r == 0) { d->eof = 1; continue; }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {   /* the kernel pipe is empty: `from` is */
      rm_conn_want_read(d->from, 1);
      rm_conn_want_write(d->to, 0);
      return;
    }
    if (r < 0) { finish(d->p, "socketreadfailed"); return; }
    d->inpipe += (size_t)r;
  }
  rm_conn_want_read(d->from, 1);   /* out of turns: level-triggered events bring us back */
  if (d->inpipe > 0) rm_conn_want_write(d->to, 1);
}
#endif

static void pump(pipe_dir *d) {
  if (d->done || d->p->finished) return;
#ifdef __linux__
  if (d->kp[0] >= 0) { pump_splice(d); return; }
#endif
  pump_buffer(d);
}

/* ---- connection callbacks: the direction that reads c, or writes c ---- */

static void on_readable(rm_conn *c, void *ud) {
  rm_pipe *p = ud;
  pump(c == p->a ? &p->ab : &p->ba);
}

static void on_writable(rm_conn *c, void *ud) {
  rm_pipe *p = ud;
  pump(c == p->a ? &p->ba : &p->ab);
}

static void on_error(rm_conn *c, int err, void *ud) { finish(ud, "socketwritefailed"); }

static const rm_conn_handler pipe_handler = {NULL, on_readable, on_writable, on_error};

/* ---- the Lua call ---- */

static int pipe_k(lua_State *L, int status, lua_KContext ctx) {
  rm_pipe *p = lua_touserdata(L, (int)ctx);
  int n = p->err ? rm_push_error(L, p->err) : 0;
  lua_pushinteger(L, p->ab.bytes);
  lua_pushinteger(L, p->ba.bytes);
  return n + 2;
}

/* A socket pipe() may take: TCP, no protocol on top, nobody waiting on it. */
static rm_sock *check_pipeable(lua_State *L, int idx) {
  rm_sock *s = rm_sock_check(L, idx);
  if (s->kind != RM_SK_TCP) return NULL;
  if (s->ext) luaL_argerror(L, idx, "a socket with a protocol on top (WebSocket) cannot be piped");
  if (s->reader || s->wq_head) luaL_argerror(L, idx, "another coroutine is waiting on this socket");
  return s;
}

static void dir_init(rm_pipe *p, pipe_dir *d, rm_conn *from, rm_conn *to, size_t bound) {
  d->p = p;
  d->from = from;
  d->to = to;
  d->bound = bound > 0 ? bound : CHUNK;
  d->kp[0] = d->kp[1] = -1;
  rm_conn_set_limits(to, 0, d->bound / 2);   /* on_writable when half has drained */
}

/* ba.socket.pipe(a, b [, {splice=true, idle=ms}]) -> bytes a to b, bytes b to a;
 * or nil, reason, bytes a to b, bytes b to a when it ended on an error. */
int rm_sock_pipe(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  rm_co *co = rm_sock_waiter(L, "ba.socket.pipe");
  rm_sock *sa = check_pipeable(L, 1), *sb = check_pipeable(L, 2);
  int want_splice = 1;
  lua_Integer idle = 0;
  if (lua_istable(L, 3)) {
    if (lua_getfield(L, 3, "splice") != LUA_TNIL) want_splice = lua_toboolean(L, -1);
    if (lua_getfield(L, 3, "idle") != LUA_TNIL) idle = luaL_checkinteger(L, -1);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, idle >= 0, 3, "idle must be >= 0 ms");
  lua_settop(L, 3);
  if (!sa || !sb) return rm_push_error(L, "socketclosed");
  if (sa == sb) return luaL_argerror(L, 2, "a socket cannot be piped to itself");
  if (rt->shutting_down) return rm_push_error(L, "sysshutdown");
  rm_pipe *p = lua_newuserdatauv(L, sizeof(rm_pipe), 0);   /* kept by this frame while suspended */
  memset(p, 0, sizeof(*p));
  p->rt = rt;
  p->co = co;
  size_t bound_ab = sb->queuelen, bound_ba = sa->queuelen;
  p->a = rm_sock_detach(sa);
  p->b = rm_sock_detach(sb);
  dir_init(p, &p->ab, p->a, p->b, bound_ab);
  dir_init(p, &p->ba, p->b, p->a, bound_ba);
  if (idle > 0) {
    if (!(p->idle = rm_timer_new(rt->loop, idle_tick, p))) {
      teardown(p, "malloc");
      return rm_push_error(L, "malloc");
    }
    rm_timer_start(p->idle, (uint64_t)idle, (uint64_t)idle);
  }
#ifdef __linux__
  /* A filter (TLS) must see every byte, so splice only plain connections. */
  if (want_splice && !rm_conn_filter_state(p->a) && !rm_conn_filter_state(p->b) &&
      (splice_setup(&p->ab) != 0 || splice_setup(&p->ba) != 0)) {
    teardown(p, "failed");
    return rm_push_error(L, "failed");
  }
#endif
  rm_conn_set_handler(p->a, &pipe_handler, p);
  rm_conn_set_handler(p->b, &pipe_handler, p);
  /* Data may wait in a filter or in a queue: a first writable event starts
   * each direction, whatever the peers do. */
  rm_conn_want_write(p->a, 1);
  rm_conn_want_write(p->b, 1);
  co->wait_data = p;
  co->on_wake = pipe_cancel;
  return rm_co_suspend(L, co, RM_WAIT_OTHER, NULL, -1, pipe_k, lua_gettop(L));
}
