/* A firmware-like host: one thread and a main loop of its own.
 *
 * The main loop polls three kinds of descriptor: the dispatcher's (what
 * rm_loop_pollfds() names: its epoll fd, or every watched fd under the poll
 * backend), a "device" (a timerfd ticking like a sensor interrupt) and signals
 * (a signalfd, so SIGTERM is one more event). On the dispatcher run the binary
 * protocol of proto.h, served from C, and a Lua script with cosockets; all of
 * it allocates through one budgeted allocator.
 *
 *   firmware [-p PORT] [-c MAX_CONNS] [-q QUEUE_BYTES] [-m MEM_BYTES] [-t TICK_MS] SCRIPT.lua [ARGS...]
 *
 * The script sees the protocol's port as arg[1], then ARGS. */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include "remora/lua.h"
#include "proto.h"

enum { SHUTDOWN_GRACE_MS = 1000 };

/* The host's allocator: the C library's, with a budget and a count, so the
 * host knows what the dispatcher, its connections and Lua hold. */
typedef struct budget { size_t limit, used, peak; unsigned long failures; } budget;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  budget *b = ud;
  size_t old = ptr ? osize : 0;   /* Lua passes a type tag in osize for new blocks */
  if (nsize == 0) { free(ptr); b->used -= old; return NULL; }
  if (nsize > old && b->used - old + nsize > b->limit) { b->failures++; return NULL; }
  void *p = realloc(ptr, nsize);
  if (!p) { b->failures++; return NULL; }
  b->used = b->used - old + nsize;
  if (b->used > b->peak) b->peak = b->used;
  return p;
}

typedef struct host {
  rm_loop *loop;
  rm_lua *lua;
  proto_server *proto;
  budget mem;
  unsigned long ticks;
  int device_fd, signal_fd;
} host;

static size_t host_stats(void *ud, char *buf, size_t cap) {
  host *h = ud;
  int n = snprintf(buf, cap, "backend=%s conns=%d mem=%zu peak=%zu allocfail=%lu ticks=%lu refused=%lu",
                   rm_loop_backend(h->loop), rm_conn_count(h->loop), h->mem.used, h->mem.peak,
                   h->mem.failures, h->ticks, proto_refused(h->proto));
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* The "device work": here, counting the timer's expirations. */
static void device_tick(host *h) {
  uint64_t expirations;
  if (read(h->device_fd, &expirations, sizeof expirations) == sizeof expirations) h->ticks += expirations;
}

static int open_device(unsigned tick_ms) {
  int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct timespec period = {tick_ms / 1000, (long)(tick_ms % 1000) * 1000000};
  struct itimerspec its = {period, period};
  if (fd >= 0 && timerfd_settime(fd, 0, &its, NULL) != 0) { close(fd); fd = -1; }
  return fd;
}

static int open_signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, NULL);   /* before any thread starts: they inherit it */
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

/* The main loop: one poll() over the device, the signals and the dispatcher.
 * Returns when a signal arrives. */
static void main_loop(host *h) {
  enum { FIXED = 2, ROOM = 254 };   /* enough for the poll backend at the default cap */
  struct pollfd fds[FIXED + ROOM];
  for (;;) {
    fds[0] = (struct pollfd){.fd = h->device_fd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = h->signal_fd, .events = POLLIN};
    int n = rm_loop_pollfds(h->loop, fds + FIXED, ROOM);
    /* More watches than this host's array holds (poll backend): wait on what
     * fits, but no longer than a tick, so the rest is still served. */
    int timeout = rm_loop_timeout(h->loop);
    if (n > ROOM) { n = ROOM; if (timeout < 0 || timeout > 10) timeout = 10; }
    if (poll(fds, FIXED + n, timeout) < 0) continue;   /* EINTR */
    if (fds[0].revents) device_tick(h);
    if (fds[1].revents) return;
    rm_loop_run_once(h->loop, 0);   /* does not wait: runs what is ready and due */
  }
}

static void shut_down(host *h) {
  rm_lua_lock(h->lua);
  rm_lua_shutdown(h->lua);   /* waiting coroutines hear "sysshutdown" and end */
  rm_lua_free(h->lua);
  proto_close(h->proto);
  /* Closed connections may still be delivering their last bytes. */
  uint64_t until = rm_loop_now(h->loop) + SHUTDOWN_GRACE_MS;
  while (rm_loop_alive(h->loop) && rm_loop_now(h->loop) < until) rm_loop_run_once(h->loop, 50);
}

static int usage(void) {
  fprintf(stderr, "usage: firmware [-p PORT] [-c MAX_CONNS] [-q QUEUE_BYTES] [-m MEM_BYTES] [-t TICK_MS] "
                  "SCRIPT.lua [ARGS...]\n");
  return 2;
}

int main(int argc, char **argv) {
  host h = {.mem = {.limit = 16u << 20}};
  rm_loop_config lc = {.alloc = budget_alloc, .alloc_ud = &h.mem, .max_conns = 64};
  proto_config pc = {.stats = host_stats, .ud = &h};
  unsigned tick_ms = 100;
  int opt;
  while ((opt = getopt(argc, argv, "+p:c:q:m:t:")) != -1) {
    switch (opt) {
    case 'p': pc.port = atoi(optarg); break;
    case 'c': lc.max_conns = atoi(optarg); break;
    case 'q': pc.max_queue = strtoul(optarg, NULL, 10); break;
    case 'm': h.mem.limit = strtoul(optarg, NULL, 10); break;
    case 't': tick_ms = (unsigned)atoi(optarg); break;
    default: return usage();
    }
  }
  if (optind >= argc || tick_ms == 0) return usage();
  h.signal_fd = open_signals();
  h.device_fd = open_device(tick_ms);
  h.loop = rm_loop_new(&lc);
  if (h.signal_fd < 0 || h.device_fd < 0 || !h.loop) { fprintf(stderr, "firmware: cannot start\n"); return 1; }
  h.proto = proto_listen(h.loop, &pc);
  rm_lua_config luac = {.threads = 0};   /* one thread: no workers */
  h.lua = h.proto ? rm_lua_new(h.loop, &luac) : NULL;
  if (!h.lua) { fprintf(stderr, "firmware: cannot listen or create the Lua state\n"); return 1; }

  /* The script's arguments: the protocol's port, then ours. */
  char port[16];
  snprintf(port, sizeof port, "%d", proto_port(h.proto));
  int nargs = argc - optind;   /* the script path and its arguments */
  char *args[nargs];
  args[0] = port;
  memcpy(args + 1, argv + optind + 1, sizeof *args * (size_t)(nargs - 1));
  printf("firmware: protocol on port %s, backend %s\n", port, rm_loop_backend(h.loop));
  fflush(stdout);
  rm_lua_lock(h.lua);
  int rc = rm_lua_run_file(h.lua, argv[optind], nargs, args);
  rm_lua_unlock(h.lua);

  if (rc == 0) main_loop(&h);
  char stats[256];
  host_stats(&h, stats, sizeof stats);
  printf("firmware: stopping (%s)\n", stats);
  shut_down(&h);
  rm_loop_free(h.loop);
  /* Every layer frees through the allocator with the size it asked for:
   * anything left here is a leak or a size mismatch. */
  printf("firmware: stopped; %zu bytes still allocated\n", h.mem.used);
  return rc == 0 && h.mem.used == 0 ? 0 : 1;
}
