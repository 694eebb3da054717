/* screen/lscreen.c: the screen engine as the Lua module "screen".
 *
 *   local scr, err = screen.open([display])
 *   scr:size() -> w, h      scr:fd() -> n      scr:poll() -> changed
 *   scr:drain() -> drawn (X events only; the grab waits for the next poll)
 *   scr:viewer([{quality=, png_level=, max_colours=, timestamps=}]) -> viewer
 *   viewer:frame([grab]) -> string or nil      viewer:reset()
 *   scr:input(msg) -> true[, reply] or nil, reason, close_code
 *   scr:echo([after]) -> overlay, seq (waits for one newer than after)
 *   scr:close()
 *
 * Bad client input never raises: input() returns nil, a reason and the
 * WebSocket close code that fits. Only programming errors (wrong argument
 * types, a closed screen) raise. Memory comes from the Lua state's allocator.
 *
 * The encoder thread. In remora, viewer:frame() called from a coroutine runs
 * on a thread of the screen's own while the coroutine waits, so a 10-50 ms
 * grab and encode does not hold up the dispatcher (input from viewers, other
 * sockets). Jobs run one at a time, in order. While any is queued or running
 * the screen is "busy": drain() reports nothing (the damage waits in the X
 * connection) and poll() refuses, so only the encoder touches the
 * framebuffer; input() goes on, as it touches only the X connection (Xlib is
 * initialised for threads) and the input state. Everything else about
 * screens and viewers happens with the Lua lock held on the dispatcher.
 *
 * The echo thread. The first scr:echo() opens the screen's echo lane
 * (echo.c) on a thread of its own, which waits on the lane's X connection.
 * While the encoder has work it asks for overlays; the newest one goes into
 * a mailbox, and a byte on a socket pair the dispatcher watches wakes every
 * coroutine waiting in scr:echo(): each viewer's sender takes the newest, at
 * its own pace.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <lua.h>
#include <lauxlib.h>
#include "lua/rt.h"
#include "screen/screen.h"

#define SCREEN_MT "remora.screen"
#define VIEWER_MT "remora.screen.viewer"

enum { JOB_IDLE, JOB_QUEUED, JOB_RUNNING, JOB_FINISHED };

typedef struct lscreen lscreen;

/* One frame to make off the dispatcher; at most one per viewer at a time.
 * Allocated apart from the viewer: its completion is posted to the loop and
 * may run after the Lua state closed (then the job is orphaned and only
 * frees itself). */
typedef struct job {
  struct job *next;
  rm_loop *loop;
  lscreen *u;
  struct lviewer *owner; /* NULL: orphaned by the viewer's collection */
  rm_screen_viewer *v;
  rm_co *co;          /* the waiting coroutine; NULL once it stopped waiting */
  int grab, state, anchor;
  int cancelled;      /* its coroutine stopped waiting before it started: not made */
  int rc;             /* rm_screen_grab / rm_screen_frame result */
  const uint8_t *msg;
  size_t len;
} job;

struct lscreen {
  rm_screen *s;
  rm_rt *rt;          /* NULL outside remora: everything runs inline */
  int started, quit;
  atomic_int busy;    /* jobs queued or running (read by the echo thread) */
  pthread_t thread;
  pthread_mutex_t mu; /* guards the queue, quit and job states */
  pthread_cond_t cv;
  job *head, *tail;
  /* The echo lane, once scr:echo() was called. Its thread and the
   * dispatcher talk through a socket pair: a byte from the thread says the
   * mailbox has a newer overlay, a byte from the dispatcher says stop. */
  rm_screen_echo *echo;
  pthread_t echo_thread;
  int echo_fds[2];    /* [0] the dispatcher's end, [1] the thread's */
  uint8_t *echo_msg;  /* the mailbox (under mu): the newest overlay */
  size_t echo_len, echo_cap;
  uint32_t echo_seq;  /* its number; 0: none yet */
  int echo_posted;    /* a byte is on its way to the dispatcher */
  rm_co *waiters, *waiters_tail; /* coroutines in scr:echo() */
};

typedef struct lviewer {
  rm_screen_viewer *v;
  lscreen *su;        /* set when a frame was first made on the encoder */
  job *job;           /* the frame being made, if any */
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
  u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  u->rt = rm_rt_get(L);
  /* The encoder and echo threads allocate too: in remora through the
   * loop's allocator, which any thread may call. */
  if (u->rt) cfg.alloc = rm_loop_allocator(u->rt->loop, &cfg.alloc_ud);
  else cfg.alloc = lua_getallocf(L, &cfg.alloc_ud);
  pthread_mutex_init(&u->mu, NULL);
  pthread_cond_init(&u->cv, NULL);
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
  rm_screen *s = check_screen(L, 1);
  lscreen *u = lua_touserdata(L, 1);
  if (u->busy) {
    luaL_pushfail(L);
    lua_pushliteral(L, "busy");
    return 2;
  }
  return changed_result(L, rm_screen_poll(s));
}

/* While frames are being made, events wait in the X connection. */
static int l_drain(lua_State *L)
{
  rm_screen *s = check_screen(L, 1);
  lscreen *u = lua_touserdata(L, 1);
  if (u->busy) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return changed_result(L, rm_screen_drain(s));
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
    lua_getfield(L, 2, "timestamps");
    cfg.timestamps = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  u = lua_newuserdatauv(L, sizeof *u, 1);
  memset(u, 0, sizeof *u);
  luaL_setmetatable(L, VIEWER_MT);
  lua_pushvalue(L, 1); /* the viewer keeps its screen alive */
  lua_setiuservalue(L, -2, 1);
  if (rm_screen_viewer_new(s, &cfg, &u->v) < 0) luaL_error(L, "out of memory");
  return 1;
}

/* Lets queued jobs finish, then stops the encoder (a close waits for at most
 * the frames already asked for). */
static void encoder_stop(lscreen *u)
{
  if (!u->started) return;
  pthread_mutex_lock(&u->mu);
  u->quit = 1;
  pthread_cond_broadcast(&u->cv);
  pthread_mutex_unlock(&u->mu);
  pthread_join(u->thread, NULL);
  u->started = 0;
}

static void echo_stop(rm_rt *rt, void *ud);

static int l_close(lua_State *L)
{
  lscreen *u = luaL_checkudata(L, 1, SCREEN_MT);
  if (!u->s) return 0;
  /* The echo lane's watch is the loop's: stopped on its thread; here only if
   * that cannot be arranged (no memory), since a thread left running on a
   * freed screen would be worse. */
  if (u->echo && rm_rt_on_loop_wait(u->rt, echo_stop, u) != RM_OK) echo_stop(u->rt, u);
  encoder_stop(u);
  rm_screen_close(u->s);
  u->s = NULL;
  pthread_mutex_destroy(&u->mu);
  pthread_cond_destroy(&u->cv);
  return 0;
}

/* The viewer and the (open) screen it belongs to. */
static lviewer *check_viewer(lua_State *L, lscreen **su)
{
  lviewer *u = luaL_checkudata(L, 1, VIEWER_MT);
  lua_getiuservalue(L, 1, 1);
  check_screen(L, -1);
  *su = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!u->v) luaL_error(L, "viewer is closed");
  if (u->job) luaL_error(L, "viewer is busy making a frame");
  return u;
}

/* What frame() returns for a grab/frame result. */
static int frame_result(lua_State *L, int rc, const uint8_t *msg, size_t len)
{
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, rc == RM_EIO ? "X connection lost" : "out of memory");
    return 2;
  }
  if (rc == 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushlstring(L, (const char *)msg, len);
  return 1;
}

static void run_job(rm_screen *s, job *j)
{
  j->rc = j->grab ? rm_screen_grab(s) : 0;
  if (j->rc >= 0) j->rc = rm_screen_frame(s, j->v, &j->msg, &j->len);
}

/* On the dispatcher: the job is done; its coroutine, if still waiting, runs. */
static void job_done(void *arg)
{
  job *j = arg;
  rm_loop *loop = j->loop;
  if (j->owner) {
    rm_rt *rt = j->u->rt;
    rm_rt_enter(rt);
    j->u->busy--;
    j->owner->job = NULL;
    if (j->co) rm_co_wake(j->co, RM_WAKE_READY);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, j->anchor);
    rm_rt_run_ready(rt); /* frame_k reads the result before the job goes */
    rm_rt_leave(rt);
  }
  rm_loop_free_mem(loop, j, sizeof *j);
  rm_loop_unref(loop);
}

static void *encoder_main(void *arg)
{
  lscreen *u = arg;
  pthread_mutex_lock(&u->mu);
  for (;;) {
    job *j = u->head;
    if (!j) {
      if (u->quit) break;
      pthread_cond_wait(&u->cv, &u->mu);
      continue;
    }
    u->head = j->next;
    if (!u->head) u->tail = NULL;
    j->state = JOB_RUNNING;
    pthread_mutex_unlock(&u->mu);
    if (!j->cancelled) run_job(u->s, j);
    pthread_mutex_lock(&u->mu);
    j->state = JOB_FINISHED;
    pthread_cond_broadcast(&u->cv); /* a viewer being collected may wait for it */
    rm_loop_post(j->loop, job_done, j); /* fails only without memory: the coroutine then waits for shutdown */
  }
  pthread_mutex_unlock(&u->mu);
  return NULL;
}

/* The coroutine stopped waiting (its socket closed, or shutdown): the job
 * finishes unheard, and is not even made if the encoder has not started it
 * (a viewer that went away costs no encoding). */
static void job_forget(rm_co *co)
{
  job *j = co->wait_data;
  j->co = NULL;
  pthread_mutex_lock(&j->u->mu);
  if (j->state == JOB_QUEUED) j->cancelled = 1;
  pthread_mutex_unlock(&j->u->mu);
}

/* A wait ended without its answer: shutdown, or the caller's socket (or the
 * screen) closed. */
static int wait_ended(lua_State *L, rm_co *co)
{
  return rm_push_error(L, co->wake == RM_WAKE_SHUTDOWN ? "sysshutdown" : "closed");
}

static int frame_k(lua_State *L, int status, lua_KContext ctx)
{
  job *j = (job *)ctx;
  rm_co *co = rm_co_current(L);
  if (co && co->wake != RM_WAKE_READY) return wait_ended(L, co); /* the job finishes unheard */
  return frame_result(L, j->rc, j->msg, j->len);
}

/* Queues the viewer's frame on the encoder (started on first use) and
 * suspends the calling coroutine until it is made. */
static int frame_async(lua_State *L, lscreen *su, lviewer *lv, rm_co *co, int grab)
{
  rm_loop *loop = su->rt->loop;
  job *j;
  if (!su->started) {
    if (pthread_create(&su->thread, NULL, encoder_main, su) != 0) return -1;
    su->started = 1;
  }
  if (!(j = rm_loop_alloc(loop, sizeof *j))) return -1;
  lua_pushvalue(L, 1); /* the viewer (and through it the screen) stays alive */
  *j = (job){NULL, loop, su, lv, lv->v, co, grab, JOB_QUEUED, luaL_ref(L, LUA_REGISTRYINDEX), 0, 0, NULL, 0};
  lv->su = su;
  lv->job = j;
  su->busy++;
  rm_loop_ref(loop);
  pthread_mutex_lock(&su->mu);
  if (su->tail) su->tail->next = j;
  else su->head = j;
  su->tail = j;
  pthread_cond_signal(&su->cv);
  pthread_mutex_unlock(&su->mu);
  co->wait_data = j;
  co->on_wake = job_forget;
  /* Waiting "on" its own socket: closing that (the peer went away) wakes it. */
  return rm_co_suspend(L, co, RM_WAIT_OTHER, co->sock, -1, frame_k, (lua_KContext)j);
}

/* viewer:frame([grab]): with grab, first grabs what drain() saw drawn. */
static int l_frame(lua_State *L)
{
  lscreen *su;
  lviewer *lv = check_viewer(L, &su);
  int grab = lua_toboolean(L, 2);
  rm_co *co = su->rt ? rm_co_current(L) : NULL;
  job j = {0};
  if (co && !su->rt->shutting_down) {
    int rc = frame_async(L, su, lv, co, grab);
    if (rc >= 0) return rc;
  }
  if (su->busy) {
    luaL_pushfail(L);
    lua_pushliteral(L, "busy");
    return 2;
  }
  j.v = lv->v;
  j.grab = grab;
  run_job(su->s, &j);
  return frame_result(L, j.rc, j.msg, j.len);
}

static int l_reset(lua_State *L)
{
  lscreen *su;
  rm_screen_viewer_reset(check_viewer(L, &su)->v);
  return 0;
}

/* A viewer collected with a job not yet done (only when the whole state
 * closes) waits until the encoder is through with it, and orphans it. */
static int l_viewer_gc(lua_State *L)
{
  lviewer *u = luaL_checkudata(L, 1, VIEWER_MT);
  lscreen *su = u->su;
  if (u->job) {
    if (su->started) {
      pthread_mutex_lock(&su->mu);
      while (u->job->state != JOB_FINISHED) pthread_cond_wait(&su->cv, &su->mu);
      pthread_mutex_unlock(&su->mu);
    }
    u->job->owner = NULL;
    u->job = NULL;
  }
  rm_screen_viewer_free(u->v);
  u->v = NULL;
  return 0;
}

/* viewer:close() (<close>) while its frame is being made is a mistake. */
static int l_viewer_close(lua_State *L)
{
  lviewer *u = luaL_checkudata(L, 1, VIEWER_MT);
  if (u->job) luaL_error(L, "viewer is busy making a frame");
  return l_viewer_gc(L);
}

/* --- the echo lane ---------------------------------------------------------- */

/* On the echo thread: the newest overlay into the mailbox, and one byte to
 * the dispatcher unless one is on its way already. */
static void echo_publish(lscreen *u, const uint8_t *msg, size_t len, uint32_t seq)
{
  int notify = 0;
  pthread_mutex_lock(&u->mu);
  if (len > u->echo_cap) {
    uint8_t *p = rm_loop_realloc(u->rt->loop, u->echo_msg, u->echo_cap, len);
    if (p) u->echo_msg = p, u->echo_cap = len;
  }
  if (len <= u->echo_cap) { /* else out of memory: this overlay is skipped */
    memcpy(u->echo_msg, msg, len);
    u->echo_len = len;
    u->echo_seq = seq;
    notify = !u->echo_posted;
    u->echo_posted = 1;
  }
  pthread_mutex_unlock(&u->mu);
  if (notify && write(u->echo_fds[1], "", 1) < 0) {} /* cannot fill: one byte at a time */
}

/* Overlays are asked for while the encoder has work: when it is idle the
 * main lane brings the echo as fast, and one update costs fewer bytes than
 * an update and an overlay. */
static void *echo_main(void *arg)
{
  lscreen *u = arg;
  struct pollfd p[2] = {{rm_screen_echo_fd(u->echo), POLLIN, 0}, {u->echo_fds[1], POLLIN, 0}};
  for (;;) {
    const uint8_t *msg;
    size_t len;
    uint32_t seq;
    int rc = rm_screen_echo_step(u->echo, atomic_load(&u->busy) > 0, &msg, &len, &seq);
    if (rc > 0) echo_publish(u, msg, len, seq);
    else if (rc < 0 || (poll(p, 2, -1) < 0 && errno != EINTR) || (p[1].revents & (POLLIN | POLLHUP)))
      break; /* the lane's connection is lost (the main lane goes on), or stop */
  }
  return NULL;
}

/* On the dispatcher: a newer overlay; every coroutine in scr:echo() runs. */
static void echo_readable(rm_loop *loop, int fd, int events, void *ud)
{
  lscreen *u = ud;
  char buf[16];
  while (read(fd, buf, sizeof buf) > 0) {}
  pthread_mutex_lock(&u->mu);
  u->echo_posted = 0;
  pthread_mutex_unlock(&u->mu);
  rm_rt_enter(u->rt);
  while (u->waiters) rm_co_wake(u->waiters, RM_WAKE_READY); /* echo_forget unlinks it */
  rm_rt_run_ready(u->rt);
  rm_rt_leave(u->rt);
}

static void echo_stop(rm_rt *rt, void *ud)
{
  lscreen *u = ud;
  if (!u->echo) return;
  if (write(u->echo_fds[0], "", 1) < 0) {} /* the thread also stops on a hang-up */
  pthread_join(u->echo_thread, NULL);
  rm_loop_unwatch(rt->loop, u->echo_fds[0]);
  close(u->echo_fds[0]);
  close(u->echo_fds[1]);
  rm_screen_echo_close(u->echo);
  u->echo = NULL;
  rm_loop_free_mem(rt->loop, u->echo_msg, u->echo_cap);
  u->echo_msg = NULL;
  u->echo_len = u->echo_cap = 0;
  while (u->waiters) rm_co_wake(u->waiters, RM_WAKE_CLOSED);
}

static int echo_start(lscreen *u, char *err, size_t errlen)
{
  rm_loop *loop = u->rt->loop;
  int rc = rm_screen_echo_open(u->s, &u->echo, err, errlen);
  if (rc < 0) return rc;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, u->echo_fds) < 0) {
    snprintf(err, errlen, "socketpair: %s", strerror(errno));
    goto fail;
  }
  fcntl(u->echo_fds[0], F_SETFL, O_NONBLOCK);
  if (rm_loop_watch(loop, u->echo_fds[0], RM_READ, echo_readable, u) < 0) {
    snprintf(err, errlen, "cannot watch the echo lane");
    goto fail_fds;
  }
  if (pthread_create(&u->echo_thread, NULL, echo_main, u) != 0) {
    snprintf(err, errlen, "cannot start the echo thread");
    rm_loop_unwatch(loop, u->echo_fds[0]);
    goto fail_fds;
  }
  return RM_OK;
fail_fds:
  close(u->echo_fds[0]);
  close(u->echo_fds[1]);
fail:
  rm_screen_echo_close(u->echo);
  u->echo = NULL;
  return RM_EIO;
}

/* The coroutine stopped waiting: out of the list of waiters. */
static void echo_forget(rm_co *co)
{
  lscreen *u = co->wait_data;
  rm_co_unlink(&u->waiters, &u->waiters_tail, co);
}

/* The mailbox's overlay and its number. */
static int echo_result(lua_State *L, lscreen *u)
{
  pthread_mutex_lock(&u->mu);
  lua_pushlstring(L, (const char *)u->echo_msg, u->echo_len);
  lua_pushinteger(L, u->echo_seq);
  pthread_mutex_unlock(&u->mu);
  return 2;
}

static int echo_k(lua_State *L, int status, lua_KContext ctx);

/* The newest overlay if it is newer than the argument after, else waits
 * for the next. */
static int echo_wait(lua_State *L, lscreen *u, rm_co *co)
{
  lua_Integer after = luaL_optinteger(L, 2, -1);
  uint32_t newest;
  pthread_mutex_lock(&u->mu);
  newest = u->echo_seq;
  pthread_mutex_unlock(&u->mu);
  if (after >= 0 && newest > after) return echo_result(L, u);
  rm_co_append(&u->waiters, &u->waiters_tail, co);
  co->wait_data = u;
  co->on_wake = echo_forget;
  return rm_co_suspend(L, co, RM_WAIT_OTHER, co->sock, -1, echo_k, (lua_KContext)u);
}

static int echo_k(lua_State *L, int status, lua_KContext ctx)
{
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return wait_ended(L, co);
  if (lua_isnoneornil(L, 2)) return echo_result(L, (lscreen *)ctx);
  return echo_wait(L, (lscreen *)ctx, co); /* woken for one it had already */
}

/* scr:echo([after]): the next overlay and its number, or at once the newest
 * if it is newer than after. nil, "closed" when the caller's socket or the
 * screen closes meanwhile. */
static int l_echo(lua_State *L)
{
  lscreen *u = luaL_checkudata(L, 1, SCREEN_MT);
  rm_co *co = u->rt ? rm_co_current(L) : NULL;
  char err[128] = "cannot start the echo lane";
  check_screen(L, 1);
  luaL_optinteger(L, 2, -1); /* a bad argument raises before the lane starts */
  if (!co) return luaL_error(L, "echo: call it from a remora coroutine");
  if (u->rt->shutting_down) return rm_push_error(L, "sysshutdown");
  if (!u->echo && echo_start(u, err, sizeof err) < 0) return rm_push_error(L, err);
  return echo_wait(L, u, co);
}

static const luaL_Reg screen_methods[] = {
  {"size", l_size},   {"fd", l_fd},         {"poll", l_poll},   {"drain", l_drain}, {"input", l_input},
  {"echo", l_echo},   {"viewer", l_viewer}, {"close", l_close}, {NULL, NULL}};

static const luaL_Reg viewer_methods[] = {{"frame", l_frame}, {"reset", l_reset}, {NULL, NULL}};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction close)
{
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
}

int luaopen_screen(lua_State *L)
{
  static const luaL_Reg funcs[] = {{"open", l_open}, {NULL, NULL}};
  new_class(L, SCREEN_MT, screen_methods, l_close, l_close);
  new_class(L, VIEWER_MT, viewer_methods, l_viewer_gc, l_viewer_close);
  luaL_newlib(L, funcs);
  return 1;
}
