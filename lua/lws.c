/* WebSocket sockets for Lua: a TCP socket whose read, write and close go
 * through the codec in ws/ (RFC 6455 with permessage-deflate).
 *
 * A WebSocket is an ordinary ba.socket with an extension (rm_sock_ext): the
 * connection, its FIFO write queue and its waiting coroutines stay lsocket.c's.
 * Reading feeds the bytes of the connection to a message reader; pings are
 * answered and close frames handled on the way, so Lua only sees messages.
 * Writing builds one frame per message, or per piece of a message written in
 * pieces (compressed, masked for a client), and hands it to the socket's
 * FIFO writer, so writers from many coroutines suspend and leave in order,
 * as for any cosocket. Control frames (pong, ping, close) are queued
 * directly: they may go between two messages, or two frames of one.
 *
 * Three ways in: ba.socket.wsconnect (the client), rm_ws_upgrade (the HTTP
 * server's req2sock) and ba.socket.wsupgrade (a raw TCP socket whose upgrade
 * request Lua read itself). */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include "remora/http.h"
#include "remora/ws.h"
#include "lua/lsocket.h"

enum {
  IN_SIZE = 65536,            /* bytes read from the connection per step */
  DEFAULT_CLOSE_MS = 2000,    /* close(): wait for the peer's close frame */
  HANDSHAKE_MS = 10000,       /* wsconnect: the server's answer */
  RESPONSE_MAX = 4096         /* the 101 answer we write */
};

/* Bytes read from the connection: [off, len) not yet passed to the reader.
 * The counts live with the bytes, not in the connection's record, which
 * an idle connection keeps without a buffer. */
typedef struct inbuf {
  uint32_t len, off, cap, pad;   /* pad: data starts 16-byte aligned */
  uint8_t data[];
} inbuf;

/* Input. An idle WebSocket holds neither an input buffer nor a message
 * reader: a read borrows the spare buffer and the spare reader of the Lua
 * state. The connection keeps the buffer only while the reader has not
 * taken all of its bytes (several messages came in one read) or still
 * refers to them (a compressed piece in fragment mode), and the reader only
 * while it is inside a frame or a message, or keeps an inflater's context.
 * Then they go back, so in the usual case (a read, a message, nothing left)
 * the next connection to read reuses them: no allocation per message, and
 * about 400 bytes less per idle connection. */
typedef struct spare {
  rm_loop *loop;
  inbuf *buf;                /* of IN_SIZE bytes, or NULL while lent out */
  rm_ws_reader *rd;          /* an idle reader, or NULL */
} spare;

/* The ping option: a ping once the peer has been silent for ping_ms, and
 * when it stays silent timeout_ms more, the connection is taken for dead.
 * A read only notes the time; the one timer is set for the next moment
 * something can be due. */
typedef struct keepalive {
  rm_timer *timer;
  uint64_t heard_at;         /* loop time the connection last gave bytes */
  uint64_t ping_at;          /* when the ping not answered yet went, or 0 */
  long ping_ms, timeout_ms;  /* timeout_ms 0: never close */
} keepalive;

/* What the handshake agreed, fixed for the connection's life: one
 * allocation, made only when there is something to keep. */
typedef struct terms {
  rm_ws_deflate_params deflate;
  unsigned char has_deflate;
  char names[];              /* "subprotocol\0extensions\0" */
} terms;

/* A message being sent in pieces (write(data, isText, true)), from its first
 * piece to its last. It belongs to the thread that began it: other writers
 * wait for its end (RFC 6455 5.4: no other data frame may go in between). */
typedef struct outmsg {
  lua_State *writer;         /* the thread that began the message */
  rm_co *head, *tail;        /* other writers waiting for its end (via wnext) */
  uint32_t utf8;             /* text: the validator's state between pieces */
  unsigned char opcode;      /* RM_WS_OP_TEXT or RM_WS_OP_BINARY */
} outmsg;

/* Every connection has one, idle or not: it is kept to 72 bytes (64-bit),
 * with the codec's configuration as its few fields (see config), and no
 * pointer to the spare (pump looks it up once per call). */
typedef struct ws {
  rm_ws_reader *rd;          /* while reading a frame or a message, else NULL */
  /* With permessage-deflate: made by the first message sent (zlib's state
   * is about 300 KB), and let go after each one when this side compresses
   * every message afresh (its no_context_takeover). */
  rm_ws_deflater *zd;
  keepalive *ka;             /* with the ping option, else NULL */
  terms *terms;              /* NULL: no subprotocol, no extension */
  inbuf *in;                 /* bytes read, while some are not passed to the reader */
  outmsg *out;               /* a message being sent in pieces, else NULL */
  uint64_t max_frame, max_message;
  int close_ms;
  uint16_t peer_code;
  unsigned char level;       /* zlib's compression level, 0: its default */
  unsigned is_server : 1, fragment : 1, close_sent : 1, close_received : 1;
  unsigned drained : 1;      /* the last read was short: the kernel had no more */
} ws;

/* The agreed permessage-deflate parameters, or NULL when it is off. */
static const rm_ws_deflate_params *deflate_of(const ws *w) {
  return w->terms && w->terms->has_deflate ? &w->terms->deflate : NULL;
}

/* The codec's configuration, for a reader or a compressor being made (they
 * copy it). */
static rm_ws_config config(const ws *w, rm_loop *loop) {
  rm_ws_config c = {.is_server = w->is_server, .fragment_mode = w->fragment, .deflate = deflate_of(w),
                    .max_frame = w->max_frame, .max_message = w->max_message, .deflate_level = w->level};
  c.alloc = rm_loop_allocator(loop, &c.alloc_ud);
  return c;
}

/* ---- frames out ---- */

static int is_client(const ws *w) { return !w->is_server; }

/* A message in pieces begins: it is the writer L's until its last piece. */
static outmsg *begin_message(rm_sock *s, lua_State *L, int opcode) {
  ws *w = s->ext_state;
  outmsg *m = rm_loop_alloc(s->rt->loop, sizeof *m);
  if (!m) return NULL;
  *m = (outmsg){.writer = L, .utf8 = RM_WS_UTF8_ACCEPT, .opcode = (unsigned char)opcode};
  return w->out = m;
}

/* The message in pieces is over (its last piece went, or the connection
 * closes): the writers waiting for it go on, or give up with reason. */
static void end_message(rm_sock *s, int reason) {
  ws *w = s->ext_state;
  outmsg *m = w->out;
  if (!m) return;
  while (m->head) rm_co_wake(m->head, reason);   /* each leaves the list (unlink_waiter) */
  w->out = NULL;
  rm_loop_free_mem(s->rt->loop, m, sizeof *m);
}

static void unlink_waiter(rm_co *co) {
  outmsg *m = co->wait_data;
  rm_co_unlink(&m->head, &m->tail, co);
}

/* A control frame goes straight into the queue (not through the FIFO of
 * writers): control frames may be sent between the frames of messages. */
static int send_control(rm_sock *s, int op, const void *p, size_t n) {
  ws *w = s->ext_state;
  uint8_t f[RM_WS_MAX_HEADER + RM_WS_MAX_CONTROL], mask[4];
  if (s->kind != RM_SK_TCP || w->close_sent) return RM_ECLOSED;
  if (is_client(w)) rm_ws_new_mask(mask);
  int h = rm_ws_encode_header(f, op, RM_WS_FIN, n, is_client(w) ? mask : NULL);
  if (h < 0) return h;
  if (is_client(w)) rm_ws_mask(f + h, p, n, mask, 0);
  else if (n) memcpy(f + h, p, n);
  return rm_conn_write(s->conn, f, (size_t)h + n);
}

/* After the close frame nothing else may be sent: writers still waiting for
 * their turn give up. */
static void send_close(rm_sock *s, int code, const char *reason, size_t len) {
  ws *w = s->ext_state;
  uint8_t p[RM_WS_MAX_CONTROL];
  int n = rm_ws_close_payload(p, code, reason, len);
  if (n < 0) n = rm_ws_close_payload(p, code, NULL, 0);
  if (n >= 0) send_control(s, RM_WS_OP_CLOSE, p, (size_t)n);
  w->close_sent = 1;
  while (s->wq_head) rm_co_wake(s->wq_head, RM_WAKE_CLOSED);
  end_message(s, RM_WAKE_CLOSED);
}

/* The piece of a message at index 2 as one frame (opcode: TEXT or BINARY
 * for a message's first frame, CONT for the next ones; fin: its last): the
 * frame's header and payload (compressed and masked as agreed) replace the
 * piece as the strings at 2 and 3, which leave in one writev. A server's
 * plain payload is the caller's string itself, never copied. A compressed
 * message is one compressor stream whatever its number of frames, with
 * RSV1 on its first frame only (RFC 7692 section 6.1). */
static int push_frame(lua_State *L, rm_sock *s, int opcode, int fin) {
  ws *w = s->ext_state;
  const rm_ws_deflate_params *dp = deflate_of(w);
  size_t plen;
  const uint8_t *msg = (const uint8_t *)lua_tolstring(L, 2, &plen), *pay = msg;
  int flags = fin ? RM_WS_FIN : 0;
  if (dp) {
    rm_ws_config cfg = config(w, s->rt->loop);
    if (!w->zd && !(w->zd = rm_ws_deflater_new(&cfg))) return RM_ENOMEM;
    int rc = rm_ws_deflate(w->zd, msg, plen, fin, &pay, &plen);
    if (rc < 0) return rc;
    if (opcode != RM_WS_OP_CONT) flags |= RM_WS_RSV1;
  }
  uint8_t hdr[RM_WS_MAX_HEADER], mask[4];
  if (is_client(w)) rm_ws_new_mask(mask);
  int h = rm_ws_encode_header(hdr, opcode, flags, plen, is_client(w) ? mask : NULL);
  if (h < 0) return h;
  lua_settop(L, 2);
  lua_pushlstring(L, (const char *)hdr, (size_t)h);
  if (is_client(w)) {
    luaL_Buffer b;
    rm_ws_mask((uint8_t *)luaL_buffinitsize(L, &b, plen), pay, plen, mask, 0);
    luaL_pushresultsize(&b, plen);
  } else if (pay != msg) {
    lua_pushlstring(L, (const char *)pay, plen);
  } else {
    lua_pushvalue(L, 2);
  }
  lua_remove(L, 2);
  if (fin && w->zd && (is_client(w) ? dp->client_no_context_takeover : dp->server_no_context_takeover)) {
    rm_ws_deflater_free(w->zd);   /* its output is copied into the frame */
    w->zd = NULL;
  }
  return RM_OK;
}

static int ws_write(lua_State *L, rm_sock *s);

static int ws_write_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  (void)status, (void)ctx;
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return ws_write(L, rm_sock_check(L, 1));
}

/* A writer that cannot wait: nil and the bytes queued, as for a full queue. */
static int refuse_write(lua_State *L, rm_sock *s) {
  lua_pushnil(L);
  lua_pushinteger(L, (lua_Integer)rm_conn_queued(s->conn));
  return 2;
}

/* write(data [, isText [, more]]): binary unless isText. more: data is a
 * piece of a message and more pieces follow; the message's last piece is
 * written without it, and its type is the first piece's. Until then the
 * message is the writing thread's: in a coroutine, other writers wait for
 * its end; elsewhere they are refused. In a coroutine each frame waits its
 * turn in the socket's FIFO; elsewhere it is queued up to queuelen, else
 * refused with nil and the bytes queued (before compressing, so a refused
 * piece leaves the compressor's context untouched). */
static int ws_write(lua_State *L, rm_sock *s) {
  RM_ON_LOOP(L, s->rt, rm_sock_lwrite);   /* a worker's write: queued, never waits */
  ws *w = s->ext_state;
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  int more = lua_toboolean(L, 4);
  if (s->kind != RM_SK_TCP || w->close_sent) return rm_push_error(L, "socketclosed");
  rm_co *co = rm_co_current(L);
  outmsg *m = w->out;
  if (m && m->writer != L) {   /* another writer's message is not over */
    if (!co) return refuse_write(L, s);
    rm_co_append(&m->head, &m->tail, co);
    co->on_wake = unlink_waiter;
    co->wait_data = m;
    return rm_co_suspend(L, co, RM_WAIT_WRITE, s, -1, ws_write_k, 0);
  }
  int op = m ? m->opcode : lua_toboolean(L, 3) ? RM_WS_OP_TEXT : RM_WS_OP_BINARY;
  uint32_t st = m ? m->utf8 : RM_WS_UTF8_ACCEPT;   /* a code point may span pieces */
  if (op == RM_WS_OP_TEXT &&
      (rm_ws_utf8_validate(&st, (const uint8_t *)p, n) < 0 || (!more && st != RM_WS_UTF8_ACCEPT)))
    return luaL_argerror(L, 2, "a text message must be UTF-8");
  size_t q = rm_conn_queued(s->conn);
  if (!co && (s->wq_head || (q > 0 && q + n > s->queuelen))) return refuse_write(L, s);
  int first = !m;
  if (first && more && !(m = begin_message(s, L, op))) return luaL_error(L, "websocket: out of memory");
  if (push_frame(L, s, first ? op : RM_WS_OP_CONT, !more) != RM_OK) {
    if (first) end_message(s, RM_WAKE_READY);
    return luaL_error(L, "websocket: cannot compress (out of memory)");
  }
  if (m) m->utf8 = st;
  if (!more) end_message(s, RM_WAKE_READY);   /* its waiters queue behind this last frame */
  if (co) return rm_sock_write_frame(L, s);
  struct iovec iov[2];
  iov[0].iov_base = (void *)lua_tolstring(L, 2, &iov[0].iov_len);
  iov[1].iov_base = (void *)lua_tolstring(L, 3, &iov[1].iov_len);
  if (rm_conn_writev(s->conn, iov, 2) != RM_OK) {
    rm_sock_close(s);
    return rm_push_error(L, "socketwritefailed");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- frames in ---- */

static const char SPARE_KEY = 0;   /* the registry key of the Lua state's spare */

static int spare_gc(lua_State *L) {
  spare *p = lua_touserdata(L, 1);
  rm_loop_free_mem(p->loop, p->buf, sizeof *p->buf + IN_SIZE);
  rm_ws_reader_free(p->rd);
  p->buf = NULL;
  p->rd = NULL;
  return 0;
}

static spare *get_spare(lua_State *L, rm_loop *loop) {
  spare *p = rm_rt_record(L, &SPARE_KEY, sizeof(spare), spare_gc);
  p->loop = loop;   /* one loop per state: the same every time */
  return p;
}

/* An empty input buffer for w: the spare, or a new one. */
static int borrow(ws *w, spare *p) {
  w->in = p->buf ? p->buf : rm_loop_alloc(p->loop, sizeof *w->in + IN_SIZE);
  p->buf = NULL;
  if (!w->in) return 0;
  *w->in = (inbuf){.cap = IN_SIZE};
  return 1;
}

/* A reader for w: the spare one, reset, or a new one. */
static int borrow_reader(ws *w, spare *p) {
  rm_ws_config cfg = config(w, p->loop);
  if (p->rd) rm_ws_reader_reset(p->rd, &cfg);
  w->rd = p->rd ? p->rd : rm_ws_reader_new(&cfg);
  p->rd = NULL;
  return w->rd != NULL;
}

/* Lets go of what reading borrowed once the reader is done with it: the
 * input buffer when the reader took and no longer refers to its bytes, the
 * reader when it is idle. Each becomes the spare, or is freed when there is
 * one already (or the buffer is the odd-sized one of the bytes that
 * followed the handshake). */
static void settle(ws *w, spare *p) {
  if (w->in && w->in->off == w->in->len && !(w->rd && rm_ws_reader_busy(w->rd))) {
    if (w->in->cap == IN_SIZE && !p->buf) p->buf = w->in;
    else rm_loop_free_mem(p->loop, w->in, sizeof *w->in + w->in->cap);
    w->in = NULL;
  }
  if (w->rd && rm_ws_reader_idle(w->rd)) {
    if (p->rd) rm_ws_reader_free(w->rd);
    else p->rd = w->rd;
    w->rd = NULL;
  }
}

/* The reader's next event from the bytes buffered (none may be needed:
 * the end of a frame in fragment mode), or RM_ENOMEM. */
static int next_event(ws *w, spare *p, rm_ws_event *ev) {
  size_t used;
  uint8_t none[1];
  if (!w->rd && !borrow_reader(w, p)) return RM_ENOMEM;
  if (!w->in) return rm_ws_read(w->rd, none, 0, &used, ev);
  int k = rm_ws_read(w->rd, w->in->data + w->in->off, w->in->len - w->in->off, &used, ev);
  w->in->off += (uint32_t)used;
  return k;
}

/* nil, "socketclosed" [, the peer's close code]. */
static int push_closed(lua_State *L, ws *w) {
  lua_pushnil(L);
  lua_pushliteral(L, "socketclosed");
  if (!w->close_received) return 2;
  lua_pushinteger(L, w->peer_code);
  return 3;
}

/* The peer's address, for log lines. */
static const char *peer_name(rm_sock *s, char *buf, size_t size) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(rm_conn_fd(s->conn), (struct sockaddr *)&ss, &len) != 0) return "?";
  rm_addr_format((struct sockaddr *)&ss, buf, size, NULL);
  return buf;
}

/* The peer broke the protocol: say why in the log, send the close code that
 * answers it, and close. */
static int fail_connection(lua_State *L, rm_sock *s, int err) {
  ws *w = s->ext_state;
  int code = rm_ws_close_code(err);
  const char *why = w->rd ? rm_ws_reader_why(w->rd) : "out of memory";
  char peer[64];
  rm_loop_log(s->rt->loop, RM_LOG_WARN, "websocket %s: %s; closing with %d", peer_name(s, peer, sizeof peer),
              why ? why : "error", code);
  send_close(s, code, NULL, 0);
  rm_sock_close(s);
  return rm_push_error(L, code == RM_WS_CLOSE_TOO_BIG ? "toobig"
                          : code == RM_WS_CLOSE_BAD_DATA ? "baddata"
                          : code == RM_WS_CLOSE_PROTOCOL ? "protocolerror" : "socketreadfailed");
}

/* The peer's close frame: answer it with the same code (unless ours went
 * first) and close the connection, which delivers the answer first. */
static void on_peer_close(rm_sock *s, const rm_ws_event *ev) {
  ws *w = s->ext_state;
  w->close_received = 1;
  w->peer_code = ev->close_code;
  if (!w->close_sent)
    send_close(s, ev->close_code == RM_WS_CLOSE_NO_STATUS ? 0 : ev->close_code, NULL, 0);
  rm_sock_close(s);
}

/* What the pump is for: a read() wants the next message; a close() waits for
 * the peer's close frame and drops messages. */
enum { PUMP_READ, PUMP_CLOSE };

static int pump(lua_State *L, rm_sock *s, int why, long timeout);

static int pump_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_sock *s = rm_sock_check(L, 1);
  int why = (int)(ctx % 2);
  long timeout = (long)(ctx / 2) - 1;   /* see pump() */
  if (co->wake == RM_WAKE_READY) {
    ((ws *)s->ext_state)->drained = 0;   /* the loop saw bytes come */
    return pump(L, s, why, timeout);
  }
  if (why == PUMP_CLOSE) { rm_sock_close(s); return 0; }   /* the peer kept silent */
  if (co->wake == RM_WAKE_TIMEOUT) return rm_push_error(L, "timeout");
  if (co->wake == RM_WAKE_SHUTDOWN) return rm_push_error(L, "sysshutdown");
  return push_closed(L, s->ext_state);
}

/* Pushes a message (read) as Barracuda returns it. */
static int push_message(lua_State *L, ws *w, int kind, const rm_ws_event *ev) {
  lua_pushlstring(L, (const char *)ev->data, ev->len);
  lua_pushboolean(L, ev->opcode == RM_WS_OP_TEXT);
  if (kind == RM_WS_EV_MESSAGE) return 2;
  lua_pushinteger(L, (lua_Integer)ev->frame_pos);   /* fragment mode */
  lua_pushinteger(L, (lua_Integer)ev->frame_len);
  lua_pushboolean(L, ev->last);
  return 5;
}

/* Runs the reader over buffered bytes, reads more from the connection when
 * it has none, and suspends when the connection has none either. */
static int pump(lua_State *L, rm_sock *s, int why, long timeout) {
  ws *w = s->ext_state;
  spare *sp = get_spare(L, s->rt->loop);
  for (;;) {
    if (s->kind != RM_SK_TCP) return why == PUMP_CLOSE ? 0 : push_closed(L, w);
    rm_ws_event ev;
    /* Without a reader (an idle connection) there is nothing to run before
     * reading from the connection. */
    int k = w->rd || (w->in && w->in->off < w->in->len) ? next_event(w, sp, &ev) : RM_WS_NEED_MORE;
    if (k < 0) {
      int n = fail_connection(L, s, k);
      return why == PUMP_CLOSE ? 0 : n;
    }
    switch (k) {
    case RM_WS_EV_MESSAGE: case RM_WS_EV_DATA:
      if (why == PUMP_READ) {
        int n = push_message(L, w, k, &ev);   /* ev.data may be in w->in: settle after */
        settle(w, sp);
        return n;
      }
      continue;
    case RM_WS_EV_PING: send_control(s, RM_WS_OP_PONG, ev.data, ev.len); continue;
    case RM_WS_EV_PONG: continue;
    case RM_WS_EV_CLOSE:
      on_peer_close(s, &ev);
      return why == PUMP_CLOSE ? 0 : push_closed(L, w);
    }
    /* NEED_MORE: the reader took every byte, so the buffer starts over.
     * After a short read the loop is asked first: a read now would most
     * likely fail (one system call per message in an echo). Bytes a filter
     * holds (TLS) are not announced by the loop: they are read at once. */
    settle(w, sp);
    long n = RM_EAGAIN;
    if (!w->drained || rm_conn_pending(s->conn) > 0) {
      if (!w->in && !borrow(w, sp)) return luaL_error(L, "websocket: out of memory");
      n = rm_conn_read(s->conn, w->in->data, w->in->cap);
      w->drained = n > 0 && (uint32_t)n < w->in->cap;
    }
    if (n > 0) {
      w->in->len = (uint32_t)n;
      if (w->ka) w->ka->heard_at = rm_loop_now(s->rt->loop);
      continue;
    }
    settle(w, sp);
    if (n == RM_EAGAIN) {
      rm_co *co = rm_sock_waiter(L, why == PUMP_READ ? "read" : "close");
      return rm_sock_wait_io(L, co, s, RM_READ, timeout, pump_k, ((lua_KContext)timeout + 1) * 2 + why);
    }
    rm_sock_close(s);   /* end of stream without a close frame: 1006 */
    return why == PUMP_CLOSE ? 0 : push_closed(L, w);
  }
}

/* read([timeout]): data, isText; in fragment mode data, isText, bytesRead,
 * frameLen, last. */
static int ws_read(lua_State *L, rm_sock *s) {
  if (!rm_loop_on_thread(s->rt->loop))
    return luaL_error(L, "websocket read: from a socket coroutine (sock:event), not a worker thread");
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  lua_settop(L, 1);
  return pump(L, s, PUMP_READ, ms < 0 ? -1 : (long)ms);
}

/* close([code [, reason]]): sends the close frame, then, in a coroutine that
 * may read the socket, waits (close_timeout) for the peer's answer before
 * closing the connection, as RFC 6455 asks. */
static int ws_lclose(lua_State *L, rm_sock *s) {
  ws *w = s->ext_state;
  int code = (int)luaL_optinteger(L, 2, RM_WS_CLOSE_NORMAL);
  size_t rlen;
  const char *reason = luaL_optlstring(L, 3, "", &rlen);
  uint8_t p[RM_WS_MAX_CONTROL];
  if (rm_ws_close_payload(p, code, reason, rlen) < 0)
    return luaL_argerror(L, 2, "a close code to send (1000-1003, 1007-1014, 3000-4999) and a UTF-8 reason of at most 123 bytes");
  if (s->kind != RM_SK_TCP) return 0;
  if (!w->close_sent) send_close(s, code, reason, rlen);
  rm_co *co = rm_co_current(L);
  if (w->close_received || !co || s->reader || w->close_ms <= 0 || s->rt->shutting_down) {
    rm_sock_close(s);
    rm_rt_run_ready(s->rt);
    return 0;
  }
  lua_settop(L, 1);
  return pump(L, s, PUMP_CLOSE, w->close_ms);
}

/* ---- the extension ---- */

/* The socket closes for any reason (close from outside, its coroutine
 * ended, shutdown): the peer still gets a close frame. */
static void ws_close(rm_sock *s) {
  ws *w = s->ext_state;
  if (w->ka) rm_timer_stop(w->ka->timer);
  if (!w->close_sent && !rm_conn_is_broken(s->conn))
    send_close(s, s->rt->shutting_down ? RM_WS_CLOSE_GOING_AWAY : RM_WS_CLOSE_NORMAL, NULL, 0);
  end_message(s, RM_WAKE_CLOSED);
}

static size_t terms_size(const terms *t) {
  size_t p = strlen(t->names) + 1;
  return sizeof *t + p + strlen(t->names + p) + 1;
}

static int set_terms(rm_loop *loop, ws *w, const rm_ws_deflate_params *deflate, const char *protocol,
                     const char *extensions) {
  size_t pl = strlen(protocol) + 1, el = strlen(extensions) + 1;
  if (!deflate && pl + el == 2) return 1;
  if (!(w->terms = rm_loop_alloc(loop, sizeof *w->terms + pl + el))) return 0;
  memset(w->terms, 0, sizeof *w->terms);
  if (deflate) {
    w->terms->deflate = *deflate;
    w->terms->has_deflate = 1;
  }
  memcpy(w->terms->names, protocol, pl);
  memcpy(w->terms->names + pl, extensions, el);
  return 1;
}

static void ws_free(rm_loop *loop, ws *w) {
  if (w->terms) rm_loop_free_mem(loop, w->terms, terms_size(w->terms));
  if (w->ka) {
    rm_timer_free(w->ka->timer);
    rm_loop_free_mem(loop, w->ka, sizeof *w->ka);
  }
  if (w->out) rm_loop_free_mem(loop, w->out, sizeof *w->out);
  rm_ws_reader_free(w->rd);
  rm_ws_deflater_free(w->zd);
  if (w->in) rm_loop_free_mem(loop, w->in, sizeof *w->in + w->in->cap);
  rm_loop_free_mem(loop, w, sizeof *w);
}

static void ws_gc(rm_sock *s) {
  ws_free(s->rt->loop, s->ext_state);
  s->ext_state = NULL;
}

static const rm_sock_ext ws_ext = {"websocket", ws_read, ws_write, ws_close, ws_gc, ws_lclose};

static ws *check_ws(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  if (s->ext != &ws_ext) luaL_argerror(L, 1, "not a WebSocket");
  return s->ext_state;
}

/* ping([payload]) */
int rm_ws_ping(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  check_ws(L);
  RM_ON_LOOP(L, s->rt, rm_ws_ping);
  size_t n;
  const char *p = luaL_optlstring(L, 2, "", &n);
  luaL_argcheck(L, n <= RM_WS_MAX_CONTROL, 2, "a ping carries at most 125 bytes");
  if (send_control(s, RM_WS_OP_PING, p, n) != RM_OK) return rm_push_error(L, "socketclosed");
  lua_pushboolean(L, 1);
  return 1;
}

/* wsinfo(): {protocol=, extensions=, deflate=, server=} as negotiated. */
int rm_ws_info(lua_State *L) {
  ws *w = check_ws(L);
  lua_createtable(L, 0, 4);
  const char *proto = w->terms ? w->terms->names : "", *ext = proto + strlen(proto) + (w->terms != NULL);
  if (*proto) { lua_pushstring(L, proto); lua_setfield(L, -2, "protocol"); }
  if (*ext) { lua_pushstring(L, ext); lua_setfield(L, -2, "extensions"); }
  lua_pushboolean(L, deflate_of(w) != NULL); lua_setfield(L, -2, "deflate");
  lua_pushboolean(L, w->is_server); lua_setfield(L, -2, "server");
  return 1;
}

/* ---- keep-alive ---- */

/* Has the peer sent anything since the ping? Bytes that wait unread count:
 * when nobody reads the socket now, the answer may be among them. */
static int answered(rm_sock *s, keepalive *ka, uint64_t now) {
  int unread = 0;
  if (ka->heard_at >= ka->ping_at) return 1;
  if (rm_conn_pending(s->conn) == 0 && (ioctl(rm_conn_fd(s->conn), FIONREAD, &unread) != 0 || unread <= 0)) return 0;
  ka->heard_at = now;
  return 1;
}

/* Code 1001 (going away) rather than 1011 (internal error): this side
 * leaves a connection it holds for dead; nothing went wrong inside it. The
 * peer is not waited for: what is queued gets close_timeout to leave. */
static void peer_gone(rm_sock *s, keepalive *ka) {
  ws *w = s->ext_state;
  char peer[64];
  rm_loop_log(s->rt->loop, RM_LOG_WARN, "websocket %s: no answer to a ping in %ld ms; closing with 1001",
              peer_name(s, peer, sizeof peer), ka->timeout_ms);
  send_close(s, RM_WS_CLOSE_GOING_AWAY, "ping timeout", 12);
  rm_conn_set_linger(s->conn, w->close_ms > 0 ? (unsigned)w->close_ms : 0);
  rm_sock_close(s);
}

static void on_keepalive(rm_timer *t, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;
  rm_rt_enter(rt);
  if (s->kind != RM_SK_TCP) {   /* the connection left without a close (sock2req): not restarted */
    rm_rt_leave(rt);
    return;
  }
  keepalive *ka = ((ws *)s->ext_state)->ka;
  uint64_t now = rm_loop_now(rt->loop), next;
  if (ka->ping_at && answered(s, ka, now)) ka->ping_at = 0;
  if (ka->ping_at && now - ka->ping_at >= (uint64_t)ka->timeout_ms) {
    peer_gone(s, ka);   /* wakes the reader: "socketclosed" */
    rm_rt_leave_ready(rt);
    return;
  }
  if (ka->ping_at) {
    next = ka->ping_at + (uint64_t)ka->timeout_ms - now;
  } else if (now - ka->heard_at >= (uint64_t)ka->ping_ms) {
    send_control(s, RM_WS_OP_PING, NULL, 0);
    ka->ping_at = ka->timeout_ms ? now : 0;
    next = (uint64_t)(ka->timeout_ms ? ka->timeout_ms : ka->ping_ms);
  } else {
    next = ka->heard_at + (uint64_t)ka->ping_ms - now;
  }
  rm_timer_start(t, next, 0);
  rm_rt_leave(rt);
}

static keepalive *keepalive_new(rm_loop *loop, rm_sock *s, long ping_ms, long timeout_ms) {
  keepalive *ka = rm_loop_alloc(loop, sizeof *ka);
  if (!ka) return NULL;
  *ka = (keepalive){.timer = rm_timer_new(loop, on_keepalive, s), .heard_at = rm_loop_now(loop),
                    .ping_ms = ping_ms, .timeout_ms = timeout_ms};
  if (!ka->timer) {
    rm_loop_free_mem(loop, ka, sizeof *ka);
    return NULL;
  }
  rm_timer_unref(ka->timer);   /* keep-alive alone does not keep the process running */
  rm_timer_start(ka->timer, (uint64_t)ping_ms, 0);
  return ka;
}

/* ---- options ---- */

static lua_Integer opt_int(lua_State *L, int opts, const char *name, lua_Integer dflt) {
  lua_Integer v = dflt;
  if (opts && lua_getfield(L, opts, name) != LUA_TNIL) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "websocket option %s: an integer expected", name);
    v = lua_tointeger(L, -1);
  }
  if (opts) lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int opts, const char *name, int dflt) {
  int v = dflt;
  if (opts && lua_getfield(L, opts, name) != LUA_TNIL) v = lua_toboolean(L, -1);
  if (opts) lua_pop(L, 1);
  return v;
}

/* deflate = false | true | {server_no_context_takeover=, client_no_context_takeover=,
 * server_max_window_bits=, client_max_window_bits=}: what this side would like. */
static int opt_deflate(lua_State *L, int opts, rm_ws_deflate_params *want) {
  memset(want, 0, sizeof *want);
  if (!opts) return 1;
  int t = lua_getfield(L, opts, "deflate"), on = t == LUA_TNIL || lua_toboolean(L, -1);
  if (t == LUA_TTABLE) {
    want->server_no_context_takeover = opt_bool(L, lua_gettop(L), "server_no_context_takeover", 0);
    want->client_no_context_takeover = opt_bool(L, lua_gettop(L), "client_no_context_takeover", 0);
    want->server_max_window_bits = (int)opt_int(L, lua_gettop(L), "server_max_window_bits", 0);
    want->client_max_window_bits = (int)opt_int(L, lua_gettop(L), "client_max_window_bits", 0);
  }
  lua_pop(L, 1);
  return on;
}

/* Makes s a WebSocket: the codec per the options, and the bytes already read
 * past the handshake (pre) as the first input. */
static int attach(lua_State *L, rm_sock *s, int server, int opts, const rm_ws_deflate_params *agreed,
                  const char *protocol, const char *extensions, const char *pre, size_t prelen) {
  rm_loop *loop = s->rt->loop;
  lua_Integer max_frame = opt_int(L, opts, "max_frame", RM_WS_DEFAULT_LIMIT);
  lua_Integer max_message = opt_int(L, opts, "max_message", RM_WS_DEFAULT_LIMIT);
  lua_Integer level = opt_int(L, opts, "level", 0), ping = opt_int(L, opts, "ping", 0);
  lua_Integer ping_timeout = opt_int(L, opts, "ping_timeout", ping);
  lua_Integer close_ms = opt_int(L, opts, "close_timeout", DEFAULT_CLOSE_MS);
  if (max_frame < 1 || max_message < 1 || level < 0 || level > 9 || ping < 0 || ping > INT_MAX ||
      ping_timeout < 0 || ping_timeout > INT_MAX)
    return luaL_error(L, "websocket options: max_frame and max_message > 0, level 0-9, ping and ping_timeout >= 0");
  if (prelen > UINT32_MAX) return luaL_error(L, "websocket: too many bytes after the handshake");
  ws *w = rm_loop_alloc(loop, sizeof *w);
  if (!w) return luaL_error(L, "out of memory");
  memset(w, 0, sizeof *w);
  w->close_ms = close_ms > INT_MAX ? INT_MAX : close_ms < 0 ? 0 : (int)close_ms;
  w->is_server = server != 0;
  w->fragment = opt_bool(L, opts, "fragment", 0) != 0;
  w->max_frame = (uint64_t)max_frame;
  w->max_message = (uint64_t)max_message;
  w->level = (unsigned char)level;
  if (!set_terms(loop, w, agreed, protocol ? protocol : "", extensions ? extensions : "")) {
    ws_free(loop, w);
    return luaL_error(L, "out of memory");
  }
  if (ping > 0) w->ka = keepalive_new(loop, s, (long)ping, (long)ping_timeout);
  if (prelen && (w->in = rm_loop_alloc(loop, sizeof *w->in + prelen)) != NULL)
    *w->in = (inbuf){.len = (uint32_t)prelen, .cap = (uint32_t)prelen};
  if ((ping > 0 && !w->ka) || (prelen && !w->in)) {
    ws_free(loop, w);
    return luaL_error(L, "out of memory");
  }
  if (prelen) memcpy(w->in->data, pre, prelen);
  if (s->ext && s->ext->gc) s->ext->gc(s);   /* TLS: its filter on the connection stays */
  s->ext = &ws_ext;
  s->ext_state = w;
  return RM_OK;
}

/* ---- the server's handshake ---- */

/* The value of header name in the table at idx (lower-case names), or NULL. */
static const char *header(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  const char *v = lua_tostring(L, -1);
  lua_pop(L, 1);   /* the string stays alive in the table */
  return v;
}

static int has_token(const char *v, const char *token) {
  return v && rm_http_has_token(v, strlen(v), token);
}

/* A refusal: a short answer, then the connection closes. */
static int refuse(lua_State *L, rm_sock *s, int status, const char *why) {
  char buf[256];
  rm_http_head h;
  rm_http_head_begin(&h, buf, sizeof buf, status, NULL);
  if (status == 426) rm_http_head_add(&h, "Sec-WebSocket-Version", "13", 2);
  rm_http_head_add(&h, "Connection", "close", 5);
  long n = rm_http_head_end(&h, RM_HTTP_FRAME_LENGTH, 0);
  if (n > 0) rm_conn_write(s->conn, buf, (size_t)n);
  rm_loop_log(s->rt->loop, RM_LOG_INFO, "websocket upgrade refused with %d: %s", status, why);
  rm_sock_close(s);
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* Is origin in the allow-list opts.origins (absent: every origin is)? A
 * client that sends no Origin is not a browser, which the check protects. */
static int origin_allowed(lua_State *L, int opts, const char *origin) {
  if (!opts) return 1;
  int ok = lua_getfield(L, opts, "origins") == LUA_TNIL || origin == NULL;
  for (lua_Integer i = 1; !ok && lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
    ok = strcmp(lua_tostring(L, -1), origin) == 0;
    lua_pop(L, 1);
  }
  if (!ok) lua_pop(L, 1);   /* the nil that ended the list */
  lua_pop(L, 1);
  return ok;
}

/* opts.protocols ({"a", "b"} or "a, b") as one comma-separated string on
 * the stack; returns 0 (nothing pushed) when there is none. */
static int push_protocols(lua_State *L, int opts) {
  if (!opts) return 0;
  int t = lua_getfield(L, opts, "protocols");
  if (t == LUA_TSTRING) return 1;
  if (t != LUA_TTABLE) { lua_pop(L, 1); return 0; }
  int list = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; lua_rawgeti(L, list, i) == LUA_TSTRING; i++) {
    if (i > 1) luaL_addstring(&b, ", ");
    luaL_addvalue(&b);
  }
  lua_pop(L, 1);
  luaL_pushresult(&b);
  lua_remove(L, list);
  return 1;
}

/* The request's header fields the handshake reads. They are pushed on the
 * stack in this order (nil when absent) rather than gathered in a table: an
 * idle connection's share of garbage is what each handshake leaves. */
enum { H_UPGRADE, H_CONNECTION, H_KEY, H_VERSION, H_ORIGIN, H_PROTOCOL, H_EXTENSIONS, H_COUNT };
static const char *const H_NAMES[H_COUNT] = {
  "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "origin",
  "sec-websocket-protocol", "sec-websocket-extensions"
};

/* From a table that maps names in any case to values; returns the index
 * of the first field. */
static int push_fields_of_table(lua_State *L, int idx) {
  int base = lua_gettop(L) + 1;
  for (int i = 0; i < H_COUNT; i++) lua_pushnil(L);
  for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) continue;
    for (int i = 0; i < H_COUNT; i++) {
      if (strcasecmp(lua_tostring(L, -2), H_NAMES[i]) != 0) continue;
      lua_pushvalue(L, -1);
      lua_replace(L, base + i);
    }
  }
  return base;
}

/* From the request at idx: request:header(name), which ignores case. */
static int push_fields_of_request(lua_State *L, int idx) {
  int base = lua_gettop(L) + 1;
  for (int i = 0; i < H_COUNT; i++) {
    lua_getfield(L, idx, "header");
    lua_pushvalue(L, idx);
    lua_pushstring(L, H_NAMES[i]);
    lua_call(L, 2, 1);
  }
  return base;
}

/* The handshake over the fields pushed from index f: 101 and a WebSocket
 * on s (at sidx), or the refusal. */
static int upgrade(lua_State *L, int sidx, int f, int opts, const char *pre, size_t prelen) {
  rm_sock *s = rm_sock_check(L, sidx);
  if (s->kind != RM_SK_TCP || s->ext == &ws_ext) return rm_push_error(L, "socketclosed");
  const char *key = lua_tostring(L, f + H_KEY);
  const char *version = lua_tostring(L, f + H_VERSION);
  const char *origin = lua_tostring(L, f + H_ORIGIN);
  char accept[RM_WS_ACCEPT_LEN + 1], ext[RM_WS_EXTENSION_MAX] = "", proto[64] = "";
  if (!has_token(lua_tostring(L, f + H_UPGRADE), "websocket") ||
      !has_token(lua_tostring(L, f + H_CONNECTION), "upgrade"))
    return refuse(L, s, 400, "not a WebSocket upgrade request");
  if (!version || strcmp(version, "13") != 0) return refuse(L, s, 426, "unsupported Sec-WebSocket-Version");
  if (!key || rm_ws_accept_key(key, accept) != RM_OK) return refuse(L, s, 400, "bad Sec-WebSocket-Key");
  if (!origin_allowed(L, opts, origin)) return refuse(L, s, 403, "origin not allowed");
  const char *offered = lua_tostring(L, f + H_PROTOCOL);
  if (offered && push_protocols(L, opts)) {
    const char *name;
    size_t len;
    if (rm_ws_select_protocol(offered, lua_tostring(L, -1), &name, &len) && len < sizeof proto) {
      memcpy(proto, name, len);
      proto[len] = 0;
    }
    lua_pop(L, 1);
  }
  rm_ws_deflate_params want, agreed;
  const char *offers = lua_tostring(L, f + H_EXTENSIONS);
  int deflate = opt_deflate(L, opts, &want) && offers &&
                rm_ws_deflate_accept(offers, &want, &agreed, ext, sizeof ext) == 1;
  char buf[RESPONSE_MAX];
  rm_http_head h;
  rm_http_head_begin(&h, buf, sizeof buf, 101, NULL);
  rm_http_head_add(&h, "Upgrade", "websocket", 9);
  rm_http_head_add(&h, "Connection", "Upgrade", 7);
  rm_http_head_add(&h, "Sec-WebSocket-Accept", accept, RM_WS_ACCEPT_LEN);
  if (proto[0]) rm_http_head_add(&h, "Sec-WebSocket-Protocol", proto, strlen(proto));
  if (deflate) rm_http_head_add(&h, "Sec-WebSocket-Extensions", ext, strlen(ext));
  long n = rm_http_head_end(&h, RM_HTTP_FRAME_NONE, 0);
  if (n < 0) return refuse(L, s, 500, "cannot format the 101 answer");
  attach(L, s, 1, opts, deflate ? &agreed : NULL, proto, deflate ? ext : NULL, pre, prelen);
  if (rm_conn_write(s->conn, buf, (size_t)n) != RM_OK) {
    rm_sock_close(s);
    return rm_push_error(L, "socketclosed");
  }
  lua_pushvalue(L, sidx);
  return 1;
}

/* ba.socket.wsupgrade(sock, headers [, opts [, pre]]): the upgrade request
 * was read from a raw TCP socket by Lua; headers maps names (any case) to
 * values; pre holds the bytes read past the request (the first frames). */
int rm_ws_upgrade_lua(lua_State *L) {
  rm_sock_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t prelen;
  const char *pre = luaL_optlstring(L, 4, "", &prelen);
  lua_settop(L, 4);
  int opts = lua_istable(L, 3) ? 3 : 0;
  return upgrade(L, 1, push_fields_of_table(L, 2), opts, pre, prelen);
}

/* req2sock(request [, opts]) on an upgrade request (the HTTP layer calls
 * this through the registry): the request's headers, its connection as a raw
 * socket with the bytes read past the request, then the handshake. */
static int req_upgrade(lua_State *L) {
  int opts = lua_istable(L, 2) ? 2 : lua_istable(L, 3) ? 3 : 0;
  lua_settop(L, 3);
  int f = push_fields_of_request(L, 1);
  lua_getglobal(L, "ba");
  lua_getfield(L, -1, "socket");
  lua_getfield(L, -1, "req2sock");
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);   /* raw: the connection as it is */
  lua_call(L, 2, 2);   /* the socket [, the bytes read past the request] */
  if (lua_isnil(L, -2)) return 2;
  size_t prelen = 0;
  const char *pre = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &prelen) : "";
  return upgrade(L, lua_gettop(L) - 1, f, opts, pre, prelen);
}

static int client_finish(lua_State *L);

void rm_ws_open(lua_State *L) {
  lua_pushcfunction(L, req_upgrade);
  lua_setfield(L, LUA_REGISTRYINDEX, "remora.websocket.upgrade");
  lua_pushcfunction(L, client_finish);   /* for httpc's http2sock */
  lua_setfield(L, LUA_REGISTRYINDEX, "remora.websocket.finish");
}

/* ---- the client ---- */

/* key(opts): a fresh Sec-WebSocket-Key and the Sec-WebSocket-Extensions
 * offer (nil when deflate is off). */
static int client_key(lua_State *L) {
  char key[RM_WS_KEY_LEN + 1], offer[RM_WS_EXTENSION_MAX];
  rm_ws_deflate_params want;
  int opts = lua_istable(L, 1) ? 1 : 0;
  if (rm_ws_client_key(key) != RM_OK) return luaL_error(L, "no random source for the key");
  lua_pushstring(L, key);
  if (opt_deflate(L, opts, &want) && rm_ws_deflate_offer(&want, offer, sizeof offer) == RM_OK) lua_pushstring(L, offer);
  else lua_pushnil(L);
  return 2;
}

/* finish(sock, key, status, headers, rest, opts, offer): checks the server's
 * answer to our upgrade request and makes sock a WebSocket. */
static int client_finish(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  const char *key = luaL_checkstring(L, 2);
  lua_Integer status = luaL_checkinteger(L, 3);
  size_t restlen;
  const char *rest = luaL_optlstring(L, 5, "", &restlen);
  int opts = lua_istable(L, 6) ? 6 : 0;
  const char *offer = lua_tostring(L, 7);
  const char *accept = header(L, 4, "sec-websocket-accept");
  const char *proto = header(L, 4, "sec-websocket-protocol");
  const char *ext = header(L, 4, "sec-websocket-extensions");
  rm_ws_deflate_params want, agreed;
  const char *why = NULL;
  int deflate = 0;
  if (status != 101) why = "the server refused the upgrade";
  else if (!has_token(header(L, 4, "upgrade"), "websocket") || !has_token(header(L, 4, "connection"), "upgrade"))
    why = "the answer is not a WebSocket upgrade";
  else if (!accept || rm_ws_check_accept(key, accept) != RM_OK) why = "wrong Sec-WebSocket-Accept";
  else if (ext && *ext && !offer) why = "an extension that was not offered";
  else if (offer) {
    opt_deflate(L, opts, &want);
    deflate = rm_ws_deflate_confirm(ext, &want, &agreed);
    if (deflate < 0) why = "an invalid permessage-deflate answer";
  }
  if (!why && proto && push_protocols(L, opts)) {
    const char *name;
    size_t len;
    if (!rm_ws_select_protocol(proto, lua_tostring(L, -1), &name, &len) || len != strlen(proto))
      why = "a subprotocol that was not offered";
    lua_pop(L, 1);
  } else if (!why && proto) {
    why = "a subprotocol that was not offered";
  }
  if (why) {
    rm_sock_close(s);
    lua_pushnil(L);
    lua_pushstring(L, why);
    lua_pushinteger(L, status);
    return 3;
  }
  attach(L, s, 0, opts, deflate == 1 ? &agreed : NULL, proto, deflate == 1 ? ext : NULL, rest, restlen);
  lua_settop(L, 1);
  return 1;
}

/* The client's steps that suspend (connect, write the request, read the
 * answer) are plainest in Lua; the checks and the codec are C. */
static const char CLIENT[] =
  "local key, finish, timeout_default = ...\n"
  "local function bad(v) return type(v) ~= 'string' or v:find('[%c]') end\n"
  "return function(url, opts)\n"
  "  opts = opts or {}\n"
  "  local scheme, host, port, path = url:match('^(wss?)://([^/:?#]+):?(%d*)([^#]*)')\n"
  "  if not scheme or host:find('[%s@]') then return nil, 'invalidurl' end\n"
  "  if path == '' then path = '/' elseif path:sub(1, 1) == '?' then path = '/' .. path end\n"
  "  if bad(path) then return nil, 'invalidurl' end\n"
  "  port = tonumber(port) or (scheme == 'wss' and 443 or 80)\n"
  "  local timeout = opts.timeout or timeout_default\n"
  "  local s, err = ba.socket.connect(host, port, {timeout = timeout, shark = scheme == 'wss' and opts.shark or nil})\n"
  "  if not s then return nil, err end\n"
  "  local k, offer = key(opts)\n"
  "  local hostport = (port == 80 or port == 443) and host or host .. ':' .. port\n"
  "  local req = {'GET ', path, ' HTTP/1.1\\r\\nHost: ', hostport,\n"
  "    '\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: ', k,\n"
  "    '\\r\\nSec-WebSocket-Version: 13\\r\\n'}\n"
  "  local function add(name, value)\n"
  "    if bad(value) or not tostring(name):match(\"^[%w!#$%%&'*+.^_`|~-]+$\") then error('websocket header ' .. tostring(name) .. ': invalid', 3) end\n"
  "    req[#req + 1] = name .. ': ' .. value .. '\\r\\n'\n"
  "  end\n"
  "  if opts.origin then add('Origin', opts.origin) end\n"
  "  local protos = opts.protocols\n"
  "  if type(protos) == 'table' then protos = table.concat(protos, ', ') end\n"
  "  if protos and protos ~= '' then add('Sec-WebSocket-Protocol', protos) end\n"
  "  if offer then add('Sec-WebSocket-Extensions', offer) end\n"
  "  for name, value in pairs(opts.headers or {}) do add(name, value) end\n"
  "  req[#req + 1] = '\\r\\n'\n"
  "  local ok, werr = s:write(table.concat(req))\n"
  "  if not ok then s:close() return nil, werr end\n"
  "  local buf, e = ''\n"
  "  repeat\n"
  "    local d, rerr = s:read(timeout)\n"
  "    if not d then s:close() return nil, rerr end\n"
  "    buf = buf .. d\n"
  "    e = buf:find('\\r\\n\\r\\n', 1, true)\n"
  "    if not e and #buf > 16384 then s:close() return nil, 'the answer head is too long' end\n"
  "  until e\n"
  "  local status = tonumber(buf:match('^HTTP/1%.1 (%d%d%d) '))\n"
  "  if not status then s:close() return nil, 'not an HTTP answer' end\n"
  "  local h = {}\n"
  "  for name, value in buf:sub(1, e + 1):gmatch('\\n([^:\\r\\n]+):[ \\t]*([^\\r\\n]-)[ \\t]*\\r') do\n"
  "    name = name:lower()\n"
  "    h[name] = h[name] and h[name] .. ', ' .. value or value\n"
  "  end\n"
  "  return finish(s, k, status, h, buf:sub(e + 4), opts, offer)\n"
  "end\n";

static const char CLIENT_KEY = 0;   /* the registry key of the compiled client */

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  return lua_gettop(L) - (int)ctx;
}

/* ba.socket.wsconnect(url [, {protocols=, origin=, headers=, deflate=,
 * timeout=, shark=, fragment=, max_frame=, max_message=, ping=, ping_timeout=,
 * close_timeout=, level=}]) */
int rm_ws_connect(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_settop(L, 2);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CLIENT_KEY) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, CLIENT, sizeof CLIENT - 1, "=wsconnect") != LUA_OK) return lua_error(L);
    lua_pushcfunction(L, client_key);
    lua_pushcfunction(L, client_finish);
    lua_pushinteger(L, HANDSHAKE_MS);
    lua_call(L, 3, 1);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CLIENT_KEY);
  }
  lua_insert(L, 1);
  lua_callk(L, 2, LUA_MULTRET, 0, connect_k);
  return connect_k(L, LUA_OK, 0);
}
