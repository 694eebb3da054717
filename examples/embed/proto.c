/* The binary protocol of proto.h over rm_conn: each connection reads into one
 * buffer it got when it was accepted, answers every complete request, and
 * stops reading while its responses wait in the queue (the peer is not
 * reading), so a connection never holds more than max_frame + max_queue. */
#include <string.h>
#include <unistd.h>
#include "proto.h"

enum { STATS_MAX = 256 };

typedef struct pconn pconn;

struct proto_server {
  rm_loop *loop;
  rm_listener *lst;
  proto_config cfg;
  pconn *conns;
  unsigned long refused, refusing;  /* all refusals; those since the last accept */
};

struct pconn {
  proto_server *ps;
  rm_conn *c;
  pconn *prev, *next;
  size_t have;             /* bytes in buf */
  unsigned char buf[];     /* 2 + max_frame bytes */
};

static size_t conn_size(const proto_server *ps) { return sizeof(pconn) + 2 + ps->cfg.max_frame; }

static void drop(pconn *pc) {
  proto_server *ps = pc->ps;
  if (pc->prev) pc->prev->next = pc->next; else ps->conns = pc->next;
  if (pc->next) pc->next->prev = pc->prev;
  rm_conn_close(pc->c);   /* what was queued is still delivered */
  rm_loop_free_mem(ps->loop, pc, conn_size(ps));
}

/* Queues one response; 0 when the connection cannot take it. */
static int respond(pconn *pc, int status, const void *body, size_t n) {
  unsigned char head[3] = {(unsigned char)((n + 1) >> 8), (unsigned char)(n + 1), (unsigned char)status};
  struct iovec iov[2] = {{head, sizeof head}, {(void *)body, n}};
  int rc = rm_conn_writev(pc->c, iov, 2);
  if (rc != RM_OK)
    rm_loop_log(pc->ps->loop, RM_LOG_WARN, "proto fd %d: response not queued: %s", rm_conn_fd(pc->c), rm_strerror(rc));
  return rc == RM_OK;
}

static int answer(pconn *pc, const unsigned char *req, size_t n) {
  proto_server *ps = pc->ps;
  char text[STATS_MAX];
  switch (req[0]) {
  case 'E': return respond(pc, 0, req + 1, n - 1);
  case 'S': return respond(pc, 0, text, ps->cfg.stats ? ps->cfg.stats(ps->cfg.ud, text, sizeof text) : 0);
  default: return respond(pc, 1, "unknown opcode", 14);
  }
}

/* Answers the complete requests in buf; returns 0 if the connection was dropped. */
static int process(pconn *pc) {
  proto_server *ps = pc->ps;
  size_t off = 0;
  while (pc->have - off >= 2 && rm_conn_queued(pc->c) <= ps->cfg.max_queue / 2) {
    size_t len = (size_t)pc->buf[off] << 8 | pc->buf[off + 1];
    if (len == 0 || len > ps->cfg.max_frame) {
      rm_loop_log(ps->loop, RM_LOG_INFO, "proto fd %d: bad request length %zu", rm_conn_fd(pc->c), len);
      respond(pc, 1, "bad length", 10);
      drop(pc);
      return 0;
    }
    if (pc->have - off - 2 < len) break;
    if (!answer(pc, pc->buf + off + 2, len)) { drop(pc); return 0; }
    off += 2 + len;
  }
  memmove(pc->buf, pc->buf + off, pc->have - off);
  pc->have -= off;
  /* Read again only when the queue has room: a peer that does not read its
   * answers stops being read instead of filling memory. */
  rm_conn_want_read(pc->c, rm_conn_queued(pc->c) <= ps->cfg.max_queue / 2);
  return 1;
}

static void on_readable(rm_conn *c, void *ud) {
  pconn *pc = ud;
  long n = rm_conn_read(c, pc->buf + pc->have, 2 + pc->ps->cfg.max_frame - pc->have);
  if (n == RM_EAGAIN) return;
  if (n <= 0) { drop(pc); return; }  /* end of stream or a transport error */
  pc->have += (size_t)n;
  process(pc);
}

static void on_writable(rm_conn *c, void *ud) { process(ud); }
static void on_error(rm_conn *c, int err, void *ud) { drop(ud); }

static const rm_conn_handler handler = {.on_readable = on_readable, .on_writable = on_writable, .on_error = on_error};

static void refuse(proto_server *ps, int fd) {
  close(fd);
  ps->refused++;
  if (!ps->refusing++)
    rm_loop_log(ps->loop, RM_LOG_WARN, "proto port %d: out of memory, refusing connections (%d open)",
                rm_listener_port(ps->lst), rm_conn_count(ps->loop));
}

static void on_accept(rm_listener *l, int fd, void *ud) {
  proto_server *ps = ud;
  pconn *pc = rm_loop_alloc(ps->loop, conn_size(ps));
  rm_conn *c = pc ? rm_conn_new(ps->loop, fd, &handler, pc) : NULL;
  if (!c) {
    rm_loop_free_mem(ps->loop, pc, conn_size(ps));
    refuse(ps, fd);
    return;
  }
  ps->refusing = 0;
  *pc = (pconn){.ps = ps, .c = c, .next = ps->conns};
  if (ps->conns) ps->conns->prev = pc;
  ps->conns = pc;
  rm_conn_set_limits(c, ps->cfg.max_queue, ps->cfg.max_queue / 2);
  rm_conn_want_read(c, 1);
}

proto_server *proto_listen(rm_loop *loop, const proto_config *cfg) {
  proto_server *ps = rm_loop_alloc(loop, sizeof *ps);
  if (!ps) return NULL;
  *ps = (proto_server){.loop = loop, .cfg = *cfg};
  if (!ps->cfg.max_frame || ps->cfg.max_frame > 65534) ps->cfg.max_frame = 1024;
  if (!ps->cfg.max_queue) ps->cfg.max_queue = 16384;
  /* Room for one more response whenever the queue is at most half full. */
  size_t biggest = (ps->cfg.max_frame > STATS_MAX ? ps->cfg.max_frame : STATS_MAX) + 3;
  if (ps->cfg.max_queue < 2 * biggest) ps->cfg.max_queue = 2 * biggest;
  if (rm_listen(loop, "127.0.0.1", cfg->port, 0, 64, on_accept, ps, &ps->lst) != RM_OK) {
    rm_loop_free_mem(loop, ps, sizeof *ps);
    return NULL;
  }
  return ps;
}

int proto_port(const proto_server *ps) { return rm_listener_port(ps->lst); }
unsigned long proto_refused(const proto_server *ps) { return ps->refused; }

void proto_close(proto_server *ps) {
  rm_listener_close(ps->lst);
  while (ps->conns) drop(ps->conns);
  rm_loop_free_mem(ps->loop, ps, sizeof *ps);
}
