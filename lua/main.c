/* remora: runs a Lua script on the dispatcher until nothing is left to do,
 * or until SIGINT/SIGTERM, when every suspended coroutine is resumed with
 * nil, "sysshutdown" and the process ends cleanly. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "remora/lua.h"
#include "screen/screen.h"

enum { SHUTDOWN_GRACE_MS = 1000 };  /* for closed sockets to deliver what they were given */

static int signal_pipe[2] = {-1, -1};   /* the handler's only way to reach the loop */

static void on_signal(int sig) {
  char c = (char)sig;
  ssize_t r = write(signal_pipe[1], &c, 1);
  (void)r;
}

typedef struct { rm_loop *loop; rm_lua *lua; int signals; } app;

static void grace_over(rm_timer *t, void *ud) { rm_loop_stop(ud); }

static void on_signal_pipe(rm_loop *loop, int fd, int events, void *ud) {
  app *a = ud;
  char c;
  while (read(fd, &c, 1) > 0) a->signals++;
  if (a->signals > 1) { fprintf(stderr, "remora: second signal, exiting now\n"); _exit(1); }
  rm_loop_log(loop, RM_LOG_INFO, "signal %d: shutting down", c);
  /* Every waiting coroutine hears "sysshutdown" and runs to its end now;
   * then main() closes the state, which closes the sockets. */
  rm_lua_lock(a->lua);
  rm_lua_shutdown(a->lua);
  rm_lua_unlock(a->lua);
  rm_loop_stop(loop);
}

static void usage(FILE *f) {
  fprintf(f,
    "usage: remora SCRIPT.lua [ARGS...]\n"
    "Runs SCRIPT with Barracuda's ba.* API until no socket, timer or coroutine is\n"
    "left, or until SIGINT/SIGTERM. Environment: REMORA_BACKEND=epoll|poll.\n");
}

static void install_signals(app *a) {
  if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return;
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  rm_loop_watch(a->loop, signal_pipe[0], RM_READ, on_signal_pipe, a);
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  app a = {0};
  a.loop = rm_loop_new(NULL);
  if (!a.loop) { fprintf(stderr, "remora: cannot create the event loop (REMORA_BACKEND?)\n"); return 1; }
  a.lua = rm_lua_new(a.loop, NULL);
  if (!a.lua) { fprintf(stderr, "remora: cannot create the Lua state\n"); return 1; }
  rm_lua_preload(a.lua, "screen", luaopen_screen);   /* require "screen" (examples/screenshare) */
  install_signals(&a);
  rm_lua_lock(a.lua);
  int rc = rm_lua_run_file(a.lua, argv[1], argc - 2, argv + 2);
  rm_lua_unlock(a.lua);
  if (rc == 0) rm_loop_run(a.loop);
  rm_lua_lock(a.lua);
  rm_lua_free(a.lua);
  /* Closed sockets may still be delivering what they were given. */
  rm_loop_unwatch(a.loop, signal_pipe[0]);
  rm_timer *t = rm_timer_new(a.loop, grace_over, a.loop);
  rm_timer_unref(t);
  rm_timer_start(t, SHUTDOWN_GRACE_MS, 0);
  rm_loop_run(a.loop);
  rm_timer_free(t);
  rm_loop_free(a.loop);
  return rc == 0 ? 0 : 1;
}
