/* TCP connections: pulled reads, a FIFO write queue, graceful close.
 *
 * Life of a connection: open (owned by its owner, who hears callbacks) ->
 * released by rm_conn_close() (owned by the loop, which delivers what is
 * queued, half-closes, drains the peer's last bytes so the kernel does not
 * answer them with a reset, then closes) -> freed. Callbacks may release the
 * connection; `busy` defers the free until the callback returns. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "dispatcher/internal.h"
#include "remora/conn.h"

enum { CHUNK_MIN = 4096, IOV_MAX_BATCH = 64, DRAIN_MS = 2000 };

typedef struct chunk {
  struct chunk *next;
  size_t cap, off, len;   /* bytes [off, len) are still to send */
  char data[];
} chunk;

/* One per connection, idle or not (an idle WebSocket's share): 120 bytes
 * on 64-bit systems, a 128-byte malloc chunk. */
struct rm_conn {
  rm_loop *loop;
  const rm_conn_handler *h;
  void *ud;
  chunk *head, *tail;
  size_t queued, max_queue, lowat;
  const rm_conn_filter *filter;
  void *fstate;
  rm_timer *linger;
  rm_conn *prev, *next;   /* the loop's list */
  int fd;
  unsigned linger_ms;
  int err;            /* first transport error, or 0 */
  unsigned char events;   /* the interest registered with the loop (RM_READ, RM_WRITE) */
  unsigned char busy;     /* a callback runs on this connection (conn_io, which does not nest) */
  unsigned want_read : 1, want_write : 1, connecting : 1, released : 1,
           shut_pending : 1, shut_done : 1, above_lowat : 1, draining : 1,
           no_drain : 1;   /* rm_conn_close_final: the peer sends nothing more */
};

static void conn_io(rm_loop *loop, int fd, int events, void *ud);
static void conn_destroy(rm_conn *c);

/* ---- creation ---------------------------------------------------------- */

/* NULL at the connection cap or out of memory: everything a connection needs
 * from the loop is taken here, so that it never fails silently later. */
static rm_conn *conn_alloc(rm_loop *loop, int fd, const rm_conn_handler *h, void *ud) {
  if (!rm__loop_conn_room(loop) || rm__loop_reserve(loop, fd) != RM_OK) return NULL;
  rm_conn *c = RM__NEW(loop, rm_conn);
  if (!c) return NULL;
  memset(c, 0, sizeof(*c));
  c->loop = loop;
  c->fd = fd;
  c->h = h;
  c->ud = ud;
  c->lowat = 0;
  c->linger_ms = 30000;
  c->next = loop->conns;
  if (c->next) c->next->prev = c;
  loop->conns = c;
  loop->nconns++;
  rm_loop_ref(loop);
  return c;
}

rm_conn *rm_conn_new(rm_loop *loop, int fd, const rm_conn_handler *h, void *ud) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* the queue batches for us */
  return conn_alloc(loop, fd, h, ud);
}

/* The listener set TCP_NODELAY (listen.c) and accepted sockets inherit it:
 * one system call less per connection. */
rm_conn *rm_conn_accepted(rm_loop *loop, int fd, const rm_conn_handler *h, void *ud) {
  return conn_alloc(loop, fd, h, ud);
}

static void update_events(rm_conn *c) {
  int ev = 0;
  if (c->fd < 0) return;
  if (c->connecting) ev = RM_WRITE;
  else if (c->draining) ev = RM_READ;
  else {
    int fw = c->filter && !c->err ? c->filter->wants(c->fstate) : 0;
    if (c->want_read && !c->released) ev |= RM_READ;
    if (c->want_write || c->shut_pending) ev |= RM_WRITE;
    /* A filter waiting to read (a handshake) cannot send the queue yet:
     * watching for writability then would only spin. */
    if (c->queued && !(fw & RM_READ)) ev |= RM_WRITE;
    ev |= fw;
  }
  if (c->err && !c->released) ev &= RM_READ;  /* a broken socket only reports its error */
  if (ev != c->events) {
    if (rm_loop_watch(c->loop, c->fd, ev, conn_io, c) == RM_OK) c->events = ev;
  }
}

/* The write side closes after the queue: a filter says goodbye first. */
static void shutdown_write(rm_conn *c) {
  if (c->filter && c->filter->shutdown) c->filter->shutdown(c, c->fstate);
  shutdown(c->fd, SHUT_WR);
  c->shut_pending = 0;
  c->shut_done = 1;
}

int rm_conn_connect(rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                    const struct sockaddr *bind_addr, socklen_t bind_len,
                    const rm_conn_handler *h, void *ud, rm_conn **out) {
  if (!rm__loop_conn_room(loop)) return RM_ELIMIT;
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno == EMFILE || errno == ENFILE ? RM_ELIMIT : RM_EIO;
  if ((bind_addr && bind(fd, bind_addr, bind_len) != 0) ||
      (connect(fd, addr, len) != 0 && errno != EINPROGRESS)) {
    close(fd);
    return RM_ECONNECT;
  }
  rm_conn *c = rm_conn_new(loop, fd, h, ud);
  if (!c) { close(fd); return RM_ENOMEM; }
  c->connecting = 1;  /* writability reports the outcome, even when it was immediate */
  update_events(c);
  *out = c;
  return RM_OK;
}

void rm_conn_set_handler(rm_conn *c, const rm_conn_handler *h, void *ud) { c->h = h; c->ud = ud; }
rm_loop *rm_conn_loop(const rm_conn *c) { return c->loop; }
int rm_conn_fd(const rm_conn *c) { return c->fd; }
size_t rm_conn_queued(const rm_conn *c) { return c->queued; }
int rm_conn_is_broken(const rm_conn *c) { return c->err; }
int rm_conn_count(const rm_loop *loop) { return loop->nconns; }
void rm_conn_set_linger(rm_conn *c, unsigned ms) { c->linger_ms = ms; }

void rm_conn_set_limits(rm_conn *c, size_t max_queue, size_t lowat) {
  c->max_queue = max_queue;
  c->lowat = lowat;
}

void rm_conn_want_read(rm_conn *c, int on) { c->want_read = on != 0; update_events(c); }
void rm_conn_want_write(rm_conn *c, int on) { c->want_write = on != 0; update_events(c); }
void rm_conn_update(rm_conn *c) { update_events(c); }

/* ---- the raw socket and the filter ---------------------------------------- */

static int errno_to_rm(void) {
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return RM_EAGAIN;
  return RM_EIO;
}

long rm_conn_raw_read(rm_conn *c, void *buf, size_t n) {
  if (c->fd < 0) return RM_ECLOSED;
  ssize_t r = recv(c->fd, buf, n, 0);
  return r >= 0 ? (long)r : errno_to_rm();
}

long rm_conn_raw_write(rm_conn *c, const void *buf, size_t n) {
  if (c->fd < 0) return RM_ECLOSED;
  ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
  return r >= 0 ? (long)r : errno_to_rm();
}

void rm_conn_set_filter(rm_conn *c, const rm_conn_filter *f, void *state) {
  if (c->filter && c->filter->free) c->filter->free(c->fstate);
  c->filter = f;
  c->fstate = state;
  update_events(c);
}

void *rm_conn_filter_state(const rm_conn *c) { return c->fstate; }
size_t rm_conn_pending(const rm_conn *c) { return c->filter ? c->filter->pending(c->fstate) : 0; }

long rm_conn_read(rm_conn *c, void *buf, size_t n) {
  if (c->err) return c->err;
  if (c->released) return RM_ECLOSED;
  long r = c->filter ? c->filter->read(c, c->fstate, buf, n) : rm_conn_raw_read(c, buf, n);
  if (r < 0 && r != RM_EAGAIN) c->err = (int)r;
  if (c->filter) update_events(c);   /* a handshake step may want other events */
  return r;
}

/* ---- the write queue -------------------------------------------------------- */

static void fail(rm_conn *c, int err) {
  if (c->err) return;
  c->err = err;
  /* What is queued can no longer reach the peer. */
  for (chunk *k = c->head, *next; k; k = next) { next = k->next; rm_loop_free_mem(c->loop, k, sizeof(chunk) + k->cap); }
  c->head = c->tail = NULL;
  c->queued = 0;
}

/* Sends from the head of the queue until the kernel stops taking data. */
static void flush(rm_conn *c) {
  while (c->head && !c->err) {
    long r;
    if (c->filter) {
      r = c->filter->write(c, c->fstate, c->head->data + c->head->off, c->head->len - c->head->off);
    } else {
      struct iovec iov[IOV_MAX_BATCH];
      int n = 0;
      for (chunk *k = c->head; k && n < IOV_MAX_BATCH; k = k->next, n++)
        iov[n] = (struct iovec){k->data + k->off, k->len - k->off};
      struct msghdr msg = {.msg_iov = iov, .msg_iovlen = n};
      ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
      r = w >= 0 ? (long)w : errno_to_rm();
    }
    if (r == RM_EAGAIN) break;
    if (r < 0) { fail(c, (int)r); break; }
    c->queued -= (size_t)r;
    while (r > 0) {
      chunk *k = c->head;
      size_t take = k->len - k->off < (size_t)r ? k->len - k->off : (size_t)r;
      k->off += take;
      r -= (long)take;
      if (k->off == k->len) {
        c->head = k->next;
        if (!c->head) c->tail = NULL;
        rm_loop_free_mem(c->loop, k, sizeof(chunk) + k->cap);
      }
    }
  }
  if (!c->head && c->shut_pending && !c->err) shutdown_write(c);
}

/* Copies n bytes to the tail of the queue. They start the last `left` bytes
 * of one writev, which stay together in one chunk: a filter takes a chunk per
 * call, and TLS seals each call into its own record. */
static int enqueue(rm_conn *c, const char *p, size_t n, size_t left) {
  if (c->tail && c->tail->cap - c->tail->len >= left) {
    memcpy(c->tail->data + c->tail->len, p, n);
    c->tail->len += n;
  } else {
    size_t cap = left > CHUNK_MIN ? left : CHUNK_MIN;
    chunk *k = rm_loop_alloc(c->loop, sizeof(chunk) + cap);
    if (!k) return RM_ENOMEM;
    k->next = NULL;
    k->cap = cap;
    k->off = 0;
    k->len = n;
    memcpy(k->data, p, n);
    if (c->tail) c->tail->next = k; else c->head = k;
    c->tail = k;
  }
  c->queued += n;
  return RM_OK;
}

int rm_conn_writev(rm_conn *c, const struct iovec *iov, int iovcnt) {
  if (c->err) return c->err;
  if (c->released || c->shut_pending || c->shut_done) return RM_ECLOSED;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len;
  if (c->max_queue && c->queued + total > c->max_queue && c->queued > 0) return RM_EFULL;
  int skip = 0;
  size_t sent = 0;
  if (!c->head && !c->filter && !c->connecting) {
    /* Nothing queued: give the kernel what it takes now, copy only the rest. */
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt};
    ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
    if (w < 0 && errno_to_rm() != RM_EAGAIN) { fail(c, RM_EIO); return RM_EIO; }
    sent = w > 0 ? (size_t)w : 0;
  }
  size_t left = total - sent;
  for (int i = 0; i < iovcnt; i++) {
    size_t len = iov[i].iov_len;
    if (sent >= len) { sent -= len; continue; }
    if (enqueue(c, (const char *)iov[i].iov_base + sent, len - sent, left) != RM_OK) { skip = 1; break; }
    left -= len - sent;
    sent = 0;
  }
  if (skip) {  /* a partial message would corrupt the stream: the connection is unusable */
    fail(c, RM_ENOMEM);
    return RM_ENOMEM;
  }
  if (c->head && !c->connecting) flush(c);
  if (c->queued > c->lowat) c->above_lowat = 1;
  update_events(c);
  return c->err ? c->err : RM_OK;
}

int rm_conn_write(rm_conn *c, const void *buf, size_t n) {
  struct iovec iov = {(void *)buf, n};
  return rm_conn_writev(c, &iov, 1);
}

int rm_conn_shutdown(rm_conn *c) {
  if (c->err) return c->err;
  if (c->shut_pending || c->shut_done) return RM_OK;
  c->shut_pending = 1;
  if (!c->connecting) flush(c);
  update_events(c);
  return RM_OK;
}

/* ---- events ----------------------------------------------------------------- */

static void connected(rm_conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  c->connecting = 0;
  if (err) c->err = RM_ECONNECT;
  update_events(c);
  if (c->h && c->h->on_connect) c->h->on_connect(c, err ? RM_ECONNECT : RM_OK, c->ud);
}

/* After release: read and discard until the peer closes or time runs out. */
static void drain(rm_conn *c) {
  char buf[4096];
  long r;
  while ((r = rm_conn_raw_read(c, buf, sizeof buf)) > 0) {}
  if (r != RM_EAGAIN) conn_destroy(c);
}

static void linger_expired(rm_timer *t, void *ud) {
  rm_conn *c = ud;
  if (!c->draining)
    rm_loop_log(c->loop, RM_LOG_DEBUG, "conn fd %d: peer did not take %zu queued bytes in time", c->fd, c->queued);
  conn_destroy(c);
}

/* Bounds what is left after release (delivering the queue, then the
 * drain); made only when something is left, which a connection closed with
 * its answer already sent never needs. -1 when out of memory. */
static int linger_start(rm_conn *c, unsigned ms) {
  if (!c->linger && !(c->linger = rm_timer_new(c->loop, linger_expired, c))) return -1;
  rm_timer_start(c->linger, ms, 0);
  return 0;
}

/* A released connection whose queue is empty half-closes and drains (or,
 * when no input can come, closes at once: the kernel still delivers what
 * it holds, and with nothing unread it sends no reset). */
static void finish_release(rm_conn *c) {
  if (c->err) { conn_destroy(c); return; }
  if (c->head || c->shut_pending) {   /* still delivering, within linger_ms of the close */
    if (!c->linger && linger_start(c, c->linger_ms) != 0) conn_destroy(c);
    return;
  }
  if (c->no_drain) {
    if (c->filter && c->filter->shutdown && !c->shut_done) c->filter->shutdown(c, c->fstate);
    conn_destroy(c);
    return;
  }
  if (!c->shut_done) shutdown_write(c);
  c->draining = 1;
  if (linger_start(c, DRAIN_MS < c->linger_ms ? DRAIN_MS : c->linger_ms) != 0) { conn_destroy(c); return; }
  update_events(c);
  drain(c);
}

static void conn_io(rm_loop *loop, int fd, int events, void *ud) {
  rm_conn *c = ud;
  if (c->draining) { drain(c); return; }
  c->busy++;
  if (c->connecting) {
    connected(c);
  } else {
    /* With a filter, reading may be what lets the queue move (a handshake). */
    int can_send = (events & (RM_WRITE | RM_ERROR)) || (c->filter && (events & RM_READ));
    if (can_send && (c->head || c->shut_pending)) {
      flush(c);
      if (c->err && !c->released && c->h && c->h->on_error) c->h->on_error(c, c->err, c->ud);
    }
    int readable = (events & (RM_READ | RM_ERROR)) && c->want_read;
    if (!c->released && c->h && c->h->on_writable && !c->err &&
        ((c->above_lowat && c->queued <= c->lowat) || (c->want_write && (events & RM_WRITE)))) {
      c->above_lowat = 0;
      c->h->on_writable(c, c->ud);
    }
    if (!c->released && readable && c->h && c->h->on_readable) c->h->on_readable(c, c->ud);
  }
  c->busy--;
  if (c->released) finish_release(c);
  else update_events(c);
}

/* ---- release ---------------------------------------------------------------- */

static void conn_destroy(rm_conn *c) {
  if (c->busy) return;   /* the running callback's epilogue comes back here */
  if (c->fd >= 0) {
    rm__loop_closing(c->loop, c->fd);
    close(c->fd);
    c->fd = -1;
  }
  fail(c, RM_ECLOSED);
  rm_conn_set_filter(c, NULL, NULL);
  rm_timer_free(c->linger);
  if (c->prev) c->prev->next = c->next; else c->loop->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->loop->nconns--;
  rm_loop_unref(c->loop);
  RM__FREE(c->loop, c);
}

void rm_conn_close(rm_conn *c) {
  if (c->released) return;
  c->released = 1;
  c->h = NULL;
  if (c->busy) return;   /* the callback's epilogue finishes the release */
  if (c->connecting) { conn_destroy(c); return; }
  if (c->head) flush(c);
  finish_release(c);
}

void rm_conn_close_final(rm_conn *c) {
  c->no_drain = 1;
  rm_conn_close(c);
}

void rm__conn_free_released(rm_loop *loop) {
  for (rm_conn *c = loop->conns, *next; c; c = next) {
    next = c->next;
    if (c->released && !c->busy) conn_destroy(c);
  }
}

void rm_conn_abort(rm_conn *c) {
  if (c->fd >= 0) {
    struct linger l = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  fail(c, RM_ECLOSED);
  c->released = 1;
  c->h = NULL;
  conn_destroy(c);
}
