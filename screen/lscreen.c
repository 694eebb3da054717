/* screen/lscreen.c: the screen engine as the Lua module "screen".
 *
 *   local scr, err = screen.open([display])
 *   scr:size() -> w, h      scr:fd() -> n      scr:poll() -> changed
 *   scr:drain() -> drawn (X events only; the grab waits for the next poll)
 *   scr:viewer([{quality=, png_level=, max_colours=, timestamps=}]) -> viewer
 *   viewer:frame([grab]) -> string or nil      viewer:reset()
 *   scr:input(msg) -> true[, reply] or nil, reason, close_code
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
 */
#include <pthread.h>
#include <string.h>
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
  int started, quit, busy;
  pthread_t thread;
  pthread_mutex_t mu; /* guards the queue, quit and job states */
  pthread_cond_t cv;
  job *head, *tail;
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
  cfg.alloc = lua_getallocf(L, &cfg.alloc_ud);
  u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  u->rt = rm_rt_get(L);
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

static int l_close(lua_State *L)
{
  lscreen *u = luaL_checkudata(L, 1, SCREEN_MT);
  if (!u->s) return 0;
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

static int frame_k(lua_State *L, int status, lua_KContext ctx)
{
  job *j = (job *)ctx;
  rm_co *co = rm_co_current(L);
  if (co && co->wake != RM_WAKE_READY) { /* the job is not done; it finishes unheard */
    luaL_pushfail(L);
    if (co->wake == RM_WAKE_SHUTDOWN) lua_pushliteral(L, "sysshutdown");
    else lua_pushliteral(L, "closed");
    return 2;
  }
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

static const luaL_Reg screen_methods[] = {
  {"size", l_size},   {"fd", l_fd},         {"poll", l_poll},   {"drain", l_drain}, {"input", l_input},
  {"viewer", l_viewer}, {"close", l_close}, {NULL, NULL}};

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
