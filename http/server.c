/* http/server.c: the HTTP/1.1 server's connections, on the dispatcher.
 *
 * A connection goes IDLE (waiting for a request; idle timeout) -> HEAD (bytes
 * of a head arrived; the head timeout runs from the first byte, so a client
 * that trickles a head cannot hold the connection) -> BODY (the body is read
 * whole into memory, bounded by max_body; the body timeout is reset by each
 * read) -> PAGE (a handler answers) or FILE (a static file is being sent) ->
 * IDLE again for keep-alive, or closed. Nothing is read while a request is
 * answered: bytes of pipelined requests wait in the buffer (or the kernel),
 * so answers leave in order. The one exception is a page whose body has not
 * all come with its head, when the handler can read bodies on demand: the
 * page runs at once and reads the body (whole, or streamed past max_body)
 * with rm_http_x_body_more; a body it leaves unread closes the connection.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "http/server.h"

enum {
  HEAD_MAX = 2048,            /* our own response heads */
  IN_SIZE = 8 * 1024,         /* a connection's input buffer: READ_RESERVE, which make_room
                                 * wants free before a read (at 4 KiB, every new connection
                                 * grew its buffer at once, and its record was not kept) */
  SPARE_CONNS = 16,           /* records of closed connections kept for new ones */
  READ_RESERVE = 8 * 1024,    /* free input space kept for a body's chunk lines */
  STREAM_PIECE = 64 * 1024,   /* a streamed body is handed over in pieces up to this */
  DEFAULT_HEADER_MS = 10000, DEFAULT_IDLE_MS = 15000, DEFAULT_BODY_MS = 30000,
  DEFAULT_MAX_CONNS = 1024, DEFAULT_GZIP_MAX = 8 * 1024 * 1024,
  DEFAULT_MAX_UPLOAD = 1 << 30,
  QUEUE_LOWAT = 64 * 1024     /* a page is told to go on writing below this */
};

static void pump(rm_http_exchange *x);
static void conn_free(rm_http_exchange *x);

/* ---- small helpers ---- */

static rm_loop *loop_of(rm_http_exchange *x) { return x->srv->loop; }

const rm_http_header *rm__http_field(const rm_http_exchange *x, const char *name) {
  const rm_http_request *r = rm_http_parser_request(x->parser);
  return rm_http_header_find(r->headers, r->nheaders, name);
}

/* Sets the timer for a wait of ms (0: none). Restarting it costs a clock
 * read and two heap operations, so a wait that ends no earlier than the
 * one the timer is set for leaves it alone: it fires early and on_timeout
 * sets it again for the rest. A keep-alive connection's idle wait, begun
 * after every answer, restarts it once per idle timeout, not per request. */
static void set_timer(rm_http_exchange *x, unsigned ms) {
  if (!ms) { rm_timer_stop(x->timer); return; }
  x->due = rm_loop_now(loop_of(x)) + ms;
  if (rm_timer_active(x->timer) && x->timer_due <= x->due) return;
  rm_timer_start(x->timer, ms, 0);
  x->timer_due = x->due;
}

/* ---- answers ---- */

/* The server's own lines of every head, made once per second. */
static size_t own_lines(rm_http_server *s, const char **out) {
  time_t now = time(NULL);
  if (!s->own_len || s->own_sec != now) {
    char date[RM_HTTP_DATE_LEN + 1];
    rm_http_date_format(now, date);
    s->own_len = (size_t)snprintf(s->own, sizeof s->own, "Date: %s\r\nServer: remora\r\n", date);
    s->own_sec = now;
  }
  *out = s->own;
  return s->own_len;
}

int rm__http_send_head(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                       int framing, uint64_t length, const void *body, size_t len) {
  char buf[HEAD_MAX];
  rm_http_head w;
  const rm_http_request *r = rm_http_parser_request(x->parser);
  const char *own;
  size_t own_len = own_lines(x->srv, &own);
  rm_loop_update_time(loop_of(x));
  if (!(r->flags & RM_HTTP_KEEP_ALIVE)) x->must_close = 1;
  /* A body not read yet may stay unread: it would be in the way of the next
   * request, so the connection closes after this answer. */
  if (x->lazy && !x->complete) x->must_close = 1;
  rm_http_head_begin(&w, buf, sizeof buf, status, NULL);
  rm_http_head_add_lines(&w, own, own_len);
  for (size_t i = 0; i < n; i++) rm_http_head_add(&w, fields[i].name, fields[i].value, fields[i].value_len);
  static const char close_line[] = "Connection: close\r\n", keep_line[] = "Connection: keep-alive\r\n";
  if (x->must_close) rm_http_head_add_lines(&w, close_line, sizeof close_line - 1);   /* ours: unchecked */
  else if (r->minor == 0) rm_http_head_add_lines(&w, keep_line, sizeof keep_line - 1);
  /* 1xx, 204 and 304 carry no body and no framing. */
  int bodyless = status == 204 || status == 304 || status < 200;
  long hl = rm_http_head_end(&w, bodyless ? RM_HTTP_FRAME_NONE : framing, length);
  if (hl < 0) return (int)hl;
  x->status = status;
  x->head_sent = 1;
  x->chunked = framing == RM_HTTP_FRAME_CHUNKED && !bodyless;
  if (x->is_head || bodyless) len = 0;
  struct iovec iov[4];
  int cnt = 0;
  char ch[RM_HTTP_CHUNK_HEADER_MAX];
  iov[cnt++] = (struct iovec){buf, (size_t)hl};
  if (len && x->chunked) {
    iov[cnt++] = (struct iovec){ch, rm_http_chunk_header(ch, len)};
    iov[cnt++] = (struct iovec){(void *)body, len};
    iov[cnt++] = (struct iovec){"\r\n", 2};
  } else if (len) {
    iov[cnt++] = (struct iovec){(void *)body, len};
  }
  x->sent += len;
  return rm_conn_writev(x->conn, iov, cnt);
}

void rm__http_simple(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                     const char *body) {
  rm_http_header f[8];
  size_t k = 0;
  for (; k < n && k < 7; k++) f[k] = fields[k];
  size_t len = body ? strlen(body) : 0;
  if (body) f[k++] = (rm_http_header){"Content-Type", 12, "text/html; charset=utf-8", 24};
  rm__http_send_head(x, status, f, k, RM_HTTP_FRAME_LENGTH, len, body, len);
  rm__http_done(x);
}

/* An error page that says no more than the status. */
static void send_error(rm_http_exchange *x, int status) {
  char body[256];
  snprintf(body, sizeof body, "<html><body><h1>%d %s</h1></body></html>\n", status, rm_http_reason(status));
  rm__http_simple(x, status, NULL, 0, body);
}

/* A request the parser refused: answer and close (the stream cannot be trusted). */
static void refuse(rm_http_exchange *x, int err) {
  int status = rm_http_status_for(err);
  const char *why = rm_http_parser_error(x->parser);
  rm_loop_log(loop_of(x), RM_LOG_INFO, "http: %d for a request from fd %d: %s", status,
              rm_conn_fd(x->conn), why ? why : rm_strerror(err));
  x->must_close = 1;
  x->state = RM__ST_PAGE;   /* not parsing any more */
  if (x->head_end == 0) {   /* no head to answer with: a bare status line */
    char buf[256];
    int n = snprintf(buf, sizeof buf, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                     status, rm_http_reason(status));
    rm_conn_write(x->conn, buf, (size_t)n);
    x->status = status;
    rm__http_done(x);
    return;
  }
  send_error(x, status);
}

/* ---- the access log ---- */

static void access_log(rm_http_exchange *x) {
  FILE *f = x->srv->cfg.access_log;
  if (!f || !x->head_end) return;
  const rm_http_request *r = rm_http_parser_request(x->parser);
  char ip[64] = "-", when[64];
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getpeername(rm_conn_fd(x->conn), (struct sockaddr *)&ss, &sl) == 0)
    rm_addr_format((struct sockaddr *)&ss, ip, sizeof ip, NULL);
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S %z", &tm);
  fprintf(f, "%s - - [%s] \"%.*s %.*s HTTP/1.%d\" %d %llu\n", ip, when, (int)r->method.len, r->method.p,
          (int)r->target.len, r->target.p, r->minor, x->status, (unsigned long long)x->sent);
  fflush(f);
}

/* ---- the end of a request ---- */

/* Parses what is buffered (a pipelined request, bytes handed over), or else
 * lets the loop report input: a read now would nearly always find nothing,
 * on a new connection as after an answer (a filter may hold decrypted bytes
 * the socket does not report, so those are parsed at once too). */
static void next_request(rm_http_exchange *x) {
  if (x->len || rm_conn_pending(x->conn)) pump(x);
  else rm_conn_want_read(x->conn, 1);
}

void rm__http_done(rm_http_exchange *x) {
  access_log(x);
  rm__http_static_end(x);
  if (x->must_close || rm_conn_is_broken(x->conn)) {
    /* The client asked to close after a request read whole, with nothing
     * after it: it sends no more, so no lingering for its end of stream
     * (nginx's lingering_close auto). */
    const rm_http_request *r = rm_http_parser_request(x->parser);
    if (x->complete && !(r->flags & RM_HTTP_KEEP_ALIVE) && x->pos == x->len) x->final_close = 1;
    conn_free(x);
    return;
  }
  /* Keep-alive: what follows the request moves to the buffer's start. */
  memmove(x->in, x->in + x->pos, x->len - x->pos);
  x->len -= x->pos;
  x->pos = x->head_end = 0;
  x->body_len = 0;
  x->status = x->chunked = x->is_head = x->head_sent = x->complete = 0;
  x->routed = x->lazy = x->body_wait = x->body_err = 0;
  x->sent = 0;
  x->data = NULL;
  rm_http_parser_reset(x->parser);
  x->state = RM__ST_IDLE;
  set_timer(x, x->srv->cfg.idle_timeout_ms);
  next_request(x);
}

/* ---- reading ---- */

/* Room for more input. The buffer may move only while no head is parsed
 * (the parser's pointers point into it); after that, consumed body bytes
 * are dropped instead. */
static int make_room(rm_http_exchange *x) {
  const rm_http_limits *lim = &x->srv->cfg.limits;
  if (x->head_end && x->pos > x->head_end) {
    memmove(x->in + x->head_end, x->in + x->pos, x->len - x->pos);
    x->len -= x->pos - x->head_end;
    x->pos = x->head_end;
  }
  size_t want = x->len + READ_RESERVE;
  if (!x->head_end && want > x->cap) {
    size_t max = lim->max_request_line + lim->max_head + 2 * READ_RESERVE;
    size_t cap = x->cap * 2 > want ? x->cap * 2 : want;
    if (cap > max) cap = max;
    if (cap > x->cap) {
      char *p = rm_loop_realloc(loop_of(x), x->in, x->cap, cap);
      if (!p) return 0;
      x->in = p;
      x->cap = cap;
    }
  }
  return x->len < x->cap;
}

/* Waiting for more of a request: its head must be whole header_timeout_ms
 * after its first byte, and each read of its body restarts body_timeout_ms.
 * The timer is set only when a wait begins, not at each change of state: a
 * request that comes in one read touches it only once, when its answer is
 * done (a timer still set from the idle wait fires later and is ignored). */
static void arm_wait(rm_http_exchange *x) {
  const rm_http_server_config *c = &x->srv->cfg;
  if (x->state == RM__ST_HEAD) {
    if (x->head_armed) return;   /* once per head: a trickling client costs no timer work */
    uint64_t spent = rm_loop_now(loop_of(x)) - x->head_since;
    set_timer(x, spent < c->header_timeout_ms ? (unsigned)(c->header_timeout_ms - spent) : 1);
    x->head_armed = 1;
  } else if (x->state == RM__ST_BODY) {
    set_timer(x, c->body_timeout_ms);
  }
}

static void head_begins(rm_http_exchange *x) {
  x->state = RM__ST_HEAD;
  x->head_since = rm_loop_now(loop_of(x));
  x->head_armed = 0;
}

/* Reads what the connection has: 1 when bytes came, 0 to wait, -1 when the
 * connection is over (x freed). */
static int read_more(rm_http_exchange *x) {
  if (!make_room(x)) return 0;   /* full of pipelined requests: parse those first */
  long n = rm_conn_read(x->conn, x->in + x->len, x->cap - x->len);
  if (n > 0) {
    x->len += (size_t)n;
    if (x->state == RM__ST_IDLE) head_begins(x);
    return 1;
  }
  if (n == RM_EAGAIN) {
    arm_wait(x);
    rm_conn_want_read(x->conn, 1);
    return 0;
  }
  conn_free(x);   /* end of stream or a failure: nothing to answer to */
  return -1;
}

static int add_body(rm_http_exchange *x, const char *p, size_t n) {
  if (x->body_len + n > x->body_cap) {
    size_t cap = x->body_cap ? x->body_cap : 4096;
    while (cap < x->body_len + n) cap *= 2;
    char *b = rm_loop_realloc(loop_of(x), x->body, x->body_cap, cap);
    if (!b) return RM_ENOMEM;
    x->body = b;
    x->body_cap = cap;
  }
  memcpy(x->body + x->body_len, p, n);
  x->body_len += n;
  return RM_OK;
}

static int route(rm_http_exchange *x);
static int is_page(rm_http_server *s, const char *file);

static void on_head(rm_http_exchange *x) {
  const rm_http_request *r = rm_http_parser_request(x->parser);
  const rm_http_handler *h = x->srv->cfg.handler;
  x->head_end = x->pos;
  x->state = RM__ST_BODY;
  x->is_head = r->method.len == 4 && memcmp(r->method.p, "HEAD", 4) == 0;
  int has_body = r->content_length > 0 || (r->flags & RM_HTTP_CHUNKED);
  if (has_body && h && h->body) {   /* a page may read its body itself: routed now */
    x->route = route(x);
    x->routed = 1;
    if (x->route == 0 && is_page(x->srv, x->file)) {
      x->lazy = 1;
      rm_http_parser_set_max_body(x->parser, x->srv->cfg.max_upload);   /* whole: max_body, below */
    }
  }
  if ((r->flags & RM_HTTP_EXPECT_CONTINUE) && has_body && r->minor == 1) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    rm_conn_write(x->conn, cont, sizeof cont - 1);
  }
}

static void dispatch(rm_http_exchange *x);

/* Parses what is buffered and reads more until a request is complete. */
static void pump(rm_http_exchange *x) {
  while (x->state <= RM__ST_BODY) {
    rm_http_event ev;
    long n = rm_http_parse(x->parser, x->in + x->pos, x->len - x->pos, &ev);
    if (n < 0) { refuse(x, (int)n); return; }
    x->pos += (size_t)n;
    switch (ev.type) {
    case RM_HTTP_AGAIN:
      if (x->lazy && x->state == RM__ST_BODY) {   /* the page reads the rest */
        x->state = RM__ST_PAGE;
        dispatch(x);
        return;
      }
      if (read_more(x) <= 0) return;
      break;
    case RM_HTTP_HEAD: on_head(x); break;
    case RM_HTTP_BODY:
      if (add_body(x, ev.data, ev.len) != RM_OK) { refuse(x, RM_ENOMEM); return; }
      break;
    case RM_HTTP_DONE:
      if (!x->head_end) on_head(x);   /* defensive: DONE always follows HEAD */
      x->complete = 1;   /* reading stays on: on_readable turns it off if bytes come meanwhile */
      x->state = RM__ST_PAGE;
      dispatch(x);
      return;
    }
  }
}

/* ---- routing ---- */

/* The target's path, decoded and normalised into x->path: 0 or a status. */
static int target_path(rm_http_exchange *x, rm_http_slice *query) {
  const rm_http_request *r = rm_http_parser_request(x->parser);
  rm_http_slice t = r->target, path;
  if (t.len > 7 && (memcmp(t.p, "http://", 7) == 0 || memcmp(t.p, "https:/", 7) == 0)) {
    const char *s = memchr(t.p + 8, '/', t.len - 8);   /* absolute form: drop the authority */
    if (!s) return 400;
    t.len -= (size_t)(s - t.p);
    t.p = s;
  }
  rm_http_target_split(t.p, t.len, &path, query);
  if (path.len + 1 > sizeof x->path) return 414;
  long n = rm_http_path_normalize(path.p, path.len, x->path, sizeof x->path, 0);
  if (n < 0) return 400;
  x->path[n] = '\0';
  if (strstr(x->path, "/.")) return 404;   /* .preload, .lua/, dot files: never served */
  return 0;
}

static int is_page(rm_http_server *s, const char *file) {
  const char *ext = s->cfg.page_ext;
  size_t fl = strlen(file), el = ext ? strlen(ext) : 0;
  return el && fl > el && strcmp(file + fl - el, ext) == 0;
}

/* A directory URL without its '/' is redirected, so relative links work. */
static void redirect_slash(rm_http_exchange *x, rm_http_slice query) {
  char loc[RM__HTTP_PATH_MAX + 16];
  int n = snprintf(loc, sizeof loc, "%s/%s%.*s", x->path, query.len ? "?" : "", (int)query.len, query.p);
  rm_http_header h = {"Location", 8, loc, (size_t)n};
  rm__http_simple(x, 301, &h, 1, "<html><body>Moved</body></html>\n");
}

/* Where the request goes: x->file and its stat (a directory's index file),
 * or the status to answer (301: the directory URL lacks its '/'). */
static int route(rm_http_exchange *x) {
  rm_http_server *s = x->srv;
  struct stat *st = &x->st;
  int status = target_path(x, &x->query);
  if (!status) status = rm__http_map(s, x->path, x->file, sizeof x->file, st);
  if (status) return status;
  if (S_ISDIR(st->st_mode)) {
    size_t pl = strlen(x->path);
    if (x->path[pl - 1] != '/') return 301;
    static const char *index[] = {"index.lsp", "index.html"};
    char file[RM__HTTP_PATH_MAX];
    status = 404;
    for (int i = 0; i < 2 && status; i++) {
      if (pl + strlen(index[i]) + 1 > sizeof x->path) break;
      snprintf(file, sizeof file, "%s%s", x->path, index[i]);
      if (i == 0 && !s->cfg.handler) continue;
      status = rm__http_map(s, file, x->file, sizeof x->file, st);
      if (!status && !S_ISREG(st->st_mode)) status = 404;
    }
    if (status) return status;
  }
  return S_ISREG(st->st_mode) ? 0 : 404;
}

static void dispatch(rm_http_exchange *x) {
  rm_http_server *s = x->srv;
  struct stat *st = &x->st;
  int status = x->routed ? x->route : route(x);
  if (status == 301) { redirect_slash(x, x->query); return; }
  if (status) { send_error(x, status); return; }
  if (is_page(s, x->file)) {
    if (!s->cfg.handler) { send_error(x, 404); return; }   /* never the source */
    s->cfg.handler->run(x, s->cfg.handler_ud);
    return;
  }
  const rm_http_request *r = rm_http_parser_request(x->parser);
  if (!(r->method.len == 3 && memcmp(r->method.p, "GET", 3) == 0) && !x->is_head) {
    rm_http_header allow = {"Allow", 5, "GET, HEAD", 9};
    rm__http_simple(x, 405, &allow, 1, "<html><body><h1>405 Method Not Allowed</h1></body></html>\n");
    return;
  }
  rm__http_static(x, st);
}

/* ---- connection callbacks ---- */

/* A page waiting for its body hears that the wait ended (err: why not). */
static void body_wait_ends(rm_http_exchange *x, int err) {
  x->body_wait = 0;
  if (err) {
    x->body_err = err;
    x->must_close = 1;
  }
  x->srv->cfg.handler->body(x, x->srv->cfg.handler_ud);
}

static void on_readable(rm_conn *c, void *ud) {
  rm_http_exchange *x = ud;
  if (x->state <= RM__ST_BODY) pump(x);
  else if (x->body_wait) body_wait_ends(x, 0);
  else rm_conn_want_read(c, 0);
}

static void on_writable(rm_conn *c, void *ud) {
  rm_http_exchange *x = ud;
  if (x->state == RM__ST_FILE) rm__http_static_more(x);
  else if (x->state == RM__ST_PAGE && x->srv->cfg.handler && x->srv->cfg.handler->drain)
    x->srv->cfg.handler->drain(x, x->srv->cfg.handler_ud);
}

static void on_error(rm_conn *c, int err, void *ud) {
  rm_http_exchange *x = ud;
  /* A page learns it from its next write (or its wait for the body);
   * anything else just ends. */
  if (x->state != RM__ST_PAGE) conn_free(x);
  else if (x->body_wait) body_wait_ends(x, RM_ECLOSED);
}

static const rm_conn_handler conn_handler = {NULL, on_readable, on_writable, on_error};

static void on_timeout(rm_timer *t, void *ud) {
  rm_http_exchange *x = ud;
  uint64_t now = rm_loop_now(loop_of(x));
  if (now < x->due) {   /* set for an earlier wait (set_timer): the rest of this one */
    set_timer(x, (unsigned)(x->due - now));
    return;
  }
  if (x->body_wait) {
    rm_loop_log(loop_of(x), RM_LOG_INFO, "http: fd %d: request body timed out", rm_conn_fd(x->conn));
    body_wait_ends(x, RM_ETIMEDOUT);
    return;
  }
  if (x->state > RM__ST_BODY) return;   /* set for a wait that has ended: the request came */
  if (x->state == RM__ST_IDLE) { conn_free(x); return; }
  rm_loop_log(loop_of(x), RM_LOG_INFO, "http: fd %d: %s timed out", rm_conn_fd(x->conn),
              x->state == RM__ST_HEAD ? "request head" : "request body");
  x->state = RM__ST_PAGE;
  x->must_close = 1;
  if (x->head_end) { send_error(x, 408); return; }
  static const char msg[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
  rm_conn_write(x->conn, msg, sizeof msg - 1);
  conn_free(x);
}

/* ---- connections ---- */

static void exchange_free(rm_http_server *s, rm_http_exchange *x) {
  if (x->timer) rm_timer_free(x->timer);
  if (x->parser) rm_http_parser_free(x->parser);
  if (x->in) rm_loop_free_mem(s->loop, x->in, x->cap);
  rm_loop_free_mem(s->loop, x, sizeof *x);
}

/* A record for a new connection: a spare one, whose input buffer, parser and
 * timer are kept, or a new one. */
static rm_http_exchange *exchange_new(rm_http_server *s) {
  rm_http_exchange *x = s->spare;
  if (x) {
    s->spare = x->next;
    s->nspare--;
    char *in = x->in;
    size_t cap = x->cap;
    rm_http_parser *parser = x->parser;
    rm_timer *timer = x->timer;
    memset(x, 0, offsetof(rm_http_exchange, path));
    x->in = in;
    x->cap = cap;
    x->parser = parser;
    x->timer = timer;
    x->path[0] = x->file[0] = '\0';
    rm_http_parser_reset(x->parser);
    return x;
  }
  if (!(x = rm_loop_alloc(s->loop, sizeof *x))) return NULL;
  memset(x, 0, offsetof(rm_http_exchange, path));
  x->path[0] = x->file[0] = '\0';
  void *aud;
  rm_alloc_fn alloc = rm_loop_allocator(s->loop, &aud);
  x->cap = IN_SIZE;
  x->in = rm_loop_alloc(s->loop, x->cap);
  x->parser = rm_http_parser_new(&s->cfg.limits, alloc, aud);
  x->timer = rm_timer_new(s->loop, on_timeout, x);
  if (!x->in || !x->parser || !x->timer) {
    exchange_free(s, x);
    return NULL;
  }
  return x;
}

/* Keeps x for a later connection (up to SPARE_CONNS), or frees it. */
static void exchange_release(rm_http_server *s, rm_http_exchange *x) {
  rm__http_static_end(x);
  if (x->body) rm_loop_free_mem(s->loop, x->body, x->body_cap);
  x->body = NULL;
  rm_timer_stop(x->timer);
  if (!s->freed && s->nspare < SPARE_CONNS && x->cap == IN_SIZE) {
    x->next = s->spare;
    s->spare = x;
    s->nspare++;
    return;
  }
  exchange_free(s, x);
}

static rm_http_exchange *conn_new(rm_http_server *s, rm_conn *c) {
  rm_http_exchange *x = exchange_new(s);
  if (!x) return NULL;
  x->srv = s;
  x->conn = c;
  x->fd = -1;
  x->next = s->all;
  if (s->all) s->all->prev = x;
  s->all = x;
  s->nconns++;
  rm_conn_set_handler(c, &conn_handler, x);
  rm_conn_set_limits(c, 0, QUEUE_LOWAT);
  x->state = RM__ST_IDLE;
  set_timer(x, s->cfg.idle_timeout_ms);
  return x;
}

/* The server's memory, once it is freed and its last connection is gone. */
static void server_release(rm_http_server *s) {
  for (rm_http_exchange *x = s->spare, *next; x; x = next) {
    next = x->next;
    exchange_free(s, x);
  }
  rm__http_map_free(s);
  rm_loop_free_mem(s->loop, s, sizeof *s);
}

/* Releases x; its connection closes after delivering what is queued. */
static void unlink_conn(rm_http_exchange *x) {
  rm_http_server *s = x->srv;
  if (x->prev) x->prev->next = x->next; else s->all = x->next;
  if (x->next) x->next->prev = x->prev;
  s->nconns--;
  exchange_release(s, x);
  if (s->freed && !s->all) server_release(s);
}

static void conn_free(rm_http_exchange *x) {
  if (x->final_close) rm_conn_close_final(x->conn);
  else rm_conn_close(x->conn);
  unlink_conn(x);
}

int rm_http_server_adopt(rm_http_server *s, rm_conn *c, const char *pre, size_t prelen) {
  rm_http_exchange *x = conn_new(s, c);
  if (!x) { rm_conn_close(c); return RM_ENOMEM; }
  if (prelen) {
    if (prelen > x->cap) {
      char *p = rm_loop_realloc(s->loop, x->in, x->cap, prelen);
      if (!p) { conn_free(x); return RM_ENOMEM; }
      x->in = p;
      x->cap = prelen;
    }
    memcpy(x->in, pre, prelen);
    x->len = prelen;
    head_begins(x);
  }
  next_request(x);
  return RM_OK;
}

static void on_accept(rm_listener *l, int fd, void *ud) {
  rm_http_server *s = ud;
  rm_conn *c = rm_conn_accepted(s->loop, fd, NULL, NULL);
  if (!c) { close(fd); return; }
  if (s->nconns >= s->cfg.max_conns) {
    /* Refused at once, so a flood cannot starve the connections at work. */
    static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                              "Retry-After: 1\r\nContent-Length: 0\r\n\r\n";
    rm_loop_log(s->loop, RM_LOG_WARN, "http: %d connections open: refusing one", s->nconns);
    if (!s->cfg.on_accept || s->cfg.on_accept(c, s->cfg.accept_ud) >= 0)
      rm_conn_write(c, msg, sizeof msg - 1);
    rm_conn_set_linger(c, 1000);
    rm_conn_close(c);
    return;
  }
  if (s->cfg.on_accept && s->cfg.on_accept(c, s->cfg.accept_ud) < 0) { rm_conn_close(c); return; }
  rm_http_server_adopt(s, c, NULL, 0);
}

/* ---- the server ---- */

int rm_http_server_new(rm_loop *loop, const char *host, int port, const rm_http_server_config *cfg,
                       rm_http_server **out) {
  char real[PATH_MAX];
  if (!cfg || !cfg->root || !realpath(cfg->root, real) || strlen(real) >= RM__HTTP_PATH_MAX) return RM_EINVAL;
  rm_http_server *s = rm_loop_alloc(loop, sizeof *s);
  if (!s) return RM_ENOMEM;
  memset(s, 0, sizeof *s);
  s->loop = loop;
  s->cfg = *cfg;
  rm_http_limits d;
  rm_http_limits_default(&d);
  rm_http_limits *l = &s->cfg.limits;
  if (!l->max_request_line) l->max_request_line = d.max_request_line;
  if (!l->max_head) l->max_head = d.max_head;
  if (!l->max_headers) l->max_headers = d.max_headers;
  if (!l->max_chunk_line) l->max_chunk_line = d.max_chunk_line;
  if (!l->max_body) l->max_body = d.max_body;
  if (!s->cfg.header_timeout_ms) s->cfg.header_timeout_ms = DEFAULT_HEADER_MS;
  if (!s->cfg.idle_timeout_ms) s->cfg.idle_timeout_ms = DEFAULT_IDLE_MS;
  if (!s->cfg.body_timeout_ms) s->cfg.body_timeout_ms = DEFAULT_BODY_MS;
  if (!s->cfg.max_upload) s->cfg.max_upload = DEFAULT_MAX_UPLOAD;
  if (s->cfg.max_conns <= 0) s->cfg.max_conns = DEFAULT_MAX_CONNS;
  if (!s->cfg.gzip_max) s->cfg.gzip_max = DEFAULT_GZIP_MAX;
  strcpy(s->root, real);
  s->root_len = strlen(real);
  if (s->root_len == 1) s->root_len = 0;   /* "/": prefixes are "/..." */
  int rc = rm_listen(loop, host, port, 0, 0, on_accept, s, &s->lst);
  if (rc != RM_OK) { rm_loop_free_mem(loop, s, sizeof *s); return rc; }
  *out = s;
  return RM_OK;
}

int rm_http_server_port(const rm_http_server *s) { return rm_listener_port(s->lst); }

void rm_http_server_free(rm_http_server *s) {
  rm_listener_close(s->lst);
  s->lst = NULL;
  s->freed = 1;
  for (rm_http_exchange *x = s->all, *next; x; x = next) {
    next = x->next;
    if (x->state == RM__ST_PAGE || x->state == RM__ST_FILE) {   /* ends after its answer */
      x->must_close = 1;
      continue;
    }
    if (x == s->all && !x->next) { conn_free(x); return; }   /* the last one frees s */
    conn_free(x);
  }
  /* Connections still answering keep pointing at s: the last one frees it. */
  if (!s->all) server_release(s);
}

/* ---- the exchange ---- */

const rm_http_request *rm_http_x_request(const rm_http_exchange *x) { return rm_http_parser_request(x->parser); }
const char *rm_http_x_body(const rm_http_exchange *x, size_t *len) { *len = x->body_len; return x->body; }
const char *rm_http_x_path(const rm_http_exchange *x) { return x->path; }
const char *rm_http_x_file(const rm_http_exchange *x) { return x->file; }
const struct stat *rm_http_x_stat(const rm_http_exchange *x) { return &x->st; }
rm_conn *rm_http_x_conn(const rm_http_exchange *x) { return x->conn; }
rm_http_server *rm_http_x_server(const rm_http_exchange *x) { return x->srv; }
int rm_http_x_secure(const rm_http_exchange *x) { return x->srv->cfg.secure; }
void **rm_http_x_data(rm_http_exchange *x) { return &x->data; }
size_t rm_http_x_queued(const rm_http_exchange *x) { return rm_conn_queued(x->conn); }

int rm_http_x_map(const rm_http_exchange *x, const char *path, char *out, size_t cap) {
  char norm[RM__HTTP_PATH_MAX];
  struct stat st;
  size_t len = strlen(path);
  if (len + 1 > sizeof norm) return 414;
  long n = rm_http_path_normalize(path, len, norm, sizeof norm, RM_HTTP_PATH_NO_HIDDEN);
  if (n < 0) return 400;
  norm[n] = '\0';
  int status = rm__http_map(x->srv, norm, out, cap, &st);
  if (!status && !S_ISREG(st.st_mode)) status = 404;
  return status;
}

int rm_http_x_begin(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                    int framing, uint64_t length, const void *body, size_t len) {
  if (x->head_sent) return RM_EINVAL;
  return rm__http_send_head(x, status, fields, n, framing, length, body, len);
}

int rm_http_x_write(rm_http_exchange *x, const void *p, size_t n) {
  if (!x->head_sent) return RM_EINVAL;
  if (x->is_head || n == 0) return rm_conn_is_broken(x->conn) ? RM_ECLOSED : RM_OK;
  x->sent += n;
  if (!x->chunked) return rm_conn_write(x->conn, p, n);
  char ch[RM_HTTP_CHUNK_HEADER_MAX];
  struct iovec iov[3] = {{ch, rm_http_chunk_header(ch, n)}, {(void *)p, n}, {"\r\n", 2}};
  return rm_conn_writev(x->conn, iov, 3);
}

void rm_http_x_finish(rm_http_exchange *x, int close) {
  if (close) x->must_close = 1;
  if (!x->head_sent) { x->must_close = 1; send_error(x, 500); return; }
  if (x->chunked && !x->is_head && close != RM_HTTP_X_BROKEN) rm_conn_write(x->conn, RM_HTTP_LAST_CHUNK, sizeof RM_HTTP_LAST_CHUNK - 1);
  rm__http_done(x);
}

int rm_http_x_body_complete(const rm_http_exchange *x) { return x->complete; }

void rm_http_x_body_taken(rm_http_exchange *x) { x->body_len = 0; }

/* The body cannot be read on: the connection closes after the answer. */
static int body_fail(rm_http_exchange *x, int err) {
  x->body_err = err;
  x->must_close = 1;
  return err;
}

static int body_too_large(rm_http_exchange *x) {
  rm_loop_log(loop_of(x), RM_LOG_INFO, "http: 413 for a request from fd %d: body too large to read whole",
              rm_conn_fd(x->conn));
  return body_fail(x, RM_HTTP_EBODY);
}

int rm_http_x_body_more(rm_http_exchange *x, int whole) {
  if (x->body_err) return x->body_err;
  uint64_t max = x->srv->cfg.limits.max_body;
  int64_t declared = rm_http_parser_request(x->parser)->content_length;
  if (whole && ((declared > 0 && (uint64_t)declared > max) || x->body_len > max)) return body_too_large(x);
  if (x->complete) return RM_OK;
  size_t before = x->body_len;
  for (;;) {
    rm_http_event ev;
    long n = rm_http_parse(x->parser, x->in + x->pos, x->len - x->pos, &ev);
    if (n < 0) return body_fail(x, (int)n);
    x->pos += (size_t)n;
    if (ev.type == RM_HTTP_BODY) {
      if (add_body(x, ev.data, ev.len) != RM_OK) return body_fail(x, RM_ENOMEM);
      if (whole && x->body_len > max) return body_too_large(x);
      continue;
    }
    if (ev.type == RM_HTTP_DONE) {
      x->complete = 1;
      return RM_OK;
    }
    /* Parsed all there is: hand over what came, or read more. */
    if (x->body_len > before && (whole || x->body_len >= STREAM_PIECE)) return RM_OK;
    make_room(x);
    long got = x->len < x->cap ? rm_conn_read(x->conn, x->in + x->len, x->cap - x->len) : RM_EAGAIN;
    if (got > 0) {
      x->len += (size_t)got;
      continue;
    }
    if (got != RM_EAGAIN) return body_fail(x, RM_ECLOSED);
    if (x->body_len > before) return RM_OK;
    x->body_wait = 1;
    set_timer(x, x->srv->cfg.body_timeout_ms);
    rm_conn_want_read(x->conn, 1);
    return RM_EAGAIN;
  }
}

const char *rm_http_x_rest(const rm_http_exchange *x, size_t *len) {
  *len = x->len - x->pos;
  return x->in + x->pos;
}

rm_conn *rm_http_x_detach(rm_http_exchange *x) {
  rm_conn *c = x->conn;
  if (rm_conn_is_broken(c)) { conn_free(x); return NULL; }
  rm_conn_set_handler(c, NULL, NULL);
  rm_conn_want_read(c, 0);
  unlink_conn(x);
  return c;
}
