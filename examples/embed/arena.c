/* A host whose only memory is a fixed arena (256 KiB unless -k says
 * otherwise), as on a device without a heap to spare. Everything the
 * dispatcher and the protocol allocate comes from it. When it runs out, new
 * connections are refused (accepted and closed at once) while the open ones
 * keep working, and memory given back makes room for new ones again.
 * The loop is driven by rm_loop_run(); a signal ends it.
 *
 *   arena [-p PORT] [-k ARENA_KIB] [-f MAX_FRAME] [-c MAX_CONNS] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>
#include "remora/conn.h"
#include "proto.h"

enum { GRACE_MS = 1000 };

/* The arena: blocks tile it, each behind a header saying its size (header
 * included) and whether it is taken. First fit; neighbouring free blocks are
 * merged as the search walks over them. Small and slow enough for a demo. */
typedef struct blk { size_t size, used; } blk;   /* 16 bytes keeps blocks 16-aligned */
typedef struct arena {
  unsigned char *mem;
  size_t size, used, peak;
  unsigned long failures;
} arena;

static void arena_init(arena *a, void *mem, size_t size) {
  *a = (arena){.mem = mem, .size = size & ~(size_t)15};
  *(blk *)a->mem = (blk){a->size, 0};
}

static void *arena_take(arena *a, size_t n) {
  size_t need = sizeof(blk) + ((n + 15) & ~(size_t)15);
  unsigned char *end = a->mem + a->size;
  for (unsigned char *p = a->mem; p < end; p += ((blk *)p)->size) {
    blk *b = (blk *)p;
    if (b->used) continue;
    while (p + b->size < end && !((blk *)(p + b->size))->used) b->size += ((blk *)(p + b->size))->size;
    if (b->size < need) continue;
    if (b->size - need >= 2 * sizeof(blk)) {   /* split off the rest */
      *(blk *)(p + need) = (blk){b->size - need, 0};
      b->size = need;
    }
    b->used = 1;
    a->used += b->size;
    if (a->used > a->peak) a->peak = a->used;
    return b + 1;
  }
  a->failures++;
  return NULL;
}

static void arena_give(arena *a, void *ptr) {
  blk *b = (blk *)ptr - 1;
  b->used = 0;
  a->used -= b->size;
}

/* The rm_alloc_fn contract: a failed grow leaves the old block as it was. */
static void *arena_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  arena *a = ud;
  if (nsize == 0) { if (ptr) arena_give(a, ptr); return NULL; }
  if (ptr && ((blk *)ptr - 1)->size - sizeof(blk) >= nsize) return ptr;   /* fits where it is */
  void *p = arena_take(a, nsize);
  if (p && ptr) {
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    arena_give(a, ptr);
  }
  return p;
}

typedef struct host {
  rm_loop *loop;
  proto_server *proto;
  arena mem;
  int signal_fd;
  rm_timer *grace;
} host;

static size_t host_stats(void *ud, char *buf, size_t cap) {
  host *h = ud;
  int n = snprintf(buf, cap, "backend=%s conns=%d arena=%zu/%zu peak=%zu allocfail=%lu refused=%lu",
                   rm_loop_backend(h->loop), rm_conn_count(h->loop), h->mem.used, h->mem.size,
                   h->mem.peak, h->mem.failures, proto_refused(h->proto));
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static void grace_over(rm_timer *t, void *ud) { rm_loop_stop(ud); }

/* SIGTERM: close everything; rm_loop_run() returns once the last connection
 * has delivered what it was given, or when the grace time is over. */
static void on_signal(rm_loop *loop, int fd, int events, void *ud) {
  host *h = ud;
  char stats[256];
  host_stats(h, stats, sizeof stats);
  printf("arena: stopping (%s)\n", stats);
  rm_loop_unwatch(loop, fd);
  proto_close(h->proto);
  h->proto = NULL;
  rm_timer_unref(h->grace);   /* the grace timer alone does not keep the loop running */
  rm_timer_start(h->grace, GRACE_MS, 0);
}

static int open_signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int main(int argc, char **argv) {
  host h = {0};
  size_t kib = 256;
  rm_loop_config lc = {.alloc = arena_alloc, .alloc_ud = &h.mem, .max_conns = 1000};
  proto_config pc = {.max_frame = 4096, .stats = host_stats, .ud = &h};
  int opt;
  while ((opt = getopt(argc, argv, "p:k:f:c:")) != -1) {
    switch (opt) {
    case 'p': pc.port = atoi(optarg); break;
    case 'k': kib = strtoul(optarg, NULL, 10); break;
    case 'f': pc.max_frame = strtoul(optarg, NULL, 10); break;
    case 'c': lc.max_conns = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: arena [-p PORT] [-k ARENA_KIB] [-f MAX_FRAME] [-c MAX_CONNS]\n");
      return 2;
    }
  }
  void *region = malloc(kib << 10);   /* the one allocation outside the arena: the arena */
  if (!region) return 1;
  arena_init(&h.mem, region, kib << 10);
  h.signal_fd = open_signals();
  h.loop = rm_loop_new(&lc);
  h.proto = h.loop ? proto_listen(h.loop, &pc) : NULL;
  h.grace = h.proto ? rm_timer_new(h.loop, grace_over, h.loop) : NULL;
  if (h.signal_fd < 0 || !h.grace || rm_loop_watch(h.loop, h.signal_fd, RM_READ, on_signal, &h) != RM_OK) {
    fprintf(stderr, "arena: cannot start in %zu KiB\n", kib);
    return 1;
  }
  printf("arena: protocol on port %d, backend %s, %zu of %zu arena bytes used\n",
         proto_port(h.proto), rm_loop_backend(h.loop), h.mem.used, h.mem.size);
  fflush(stdout);
  rm_loop_run(h.loop);
  rm_timer_free(h.grace);
  rm_loop_free(h.loop);
  printf("arena: stopped; %zu arena bytes still in use\n", h.mem.used);
  free(region);
  return h.mem.used == 0 ? 0 : 1;
}
