/* http/parser.c: the incremental HTTP/1.1 request parser (RFC 9112).
 *
 * One parser per connection, one message at a time. The head is scanned byte
 * by byte, resuming where the last call stopped, and consumed only once it
 * is complete; fields are recorded as offsets and turned into pointers at
 * that moment, so the caller may move its buffer while the head grows. The
 * body is then consumed as it comes and handed out in pieces that point into
 * the caller's buffer: a chunked body is de-chunked by slicing, never copied.
 *
 * Framing is decided once, from the complete head, by the rules that keep a
 * request from being read two ways (RFC 9112 section 6): Transfer-Encoding
 * with Content-Length, differing Content-Lengths, a coding after chunked,
 * and Transfer-Encoding in HTTP/1.0 are all refused.
 */
#include <string.h>
#include "http/fields.h"

enum { /* where the message is */
  P_LINE, P_FIELDS, P_BODY_START, P_BODY, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END,
  P_TRAILERS, P_DONE, P_ERROR
};
enum { L_START, L_START_LF, L_METHOD, L_TARGET, L_VERSION, L_LF }; /* in P_LINE */
enum { C_FIRST, C_DIGITS, C_BWS, C_EXT, C_LF };                      /* in P_CHUNK_SIZE */

/* A field as offsets from the start of the buffer its section was in. */
typedef struct field {
  size_t name, name_len, value, value_len;
} field;

struct rm_http_parser {
  rm_http_limits lim;
  rm_alloc_fn alloc;
  void *ud;
  int state, sub;
  /* the request line, as offsets */
  size_t pos, method, method_end, target_end;
  /* fields: one block holds cap offsets then cap headers */
  rm__http_fields fs;
  field *fields;
  rm_http_header *headers;
  size_t nfields, cap;
  size_t section_bytes;   /* header section bytes, shared with trailers */
  uint64_t max_body;      /* for this message */
  uint64_t received;      /* body bytes announced so far */
  uint64_t remaining;     /* left in the body or the current chunk */
  size_t chunk_line;      /* bytes of the current chunk-size line */
  int err;
  const char *why;
  rm_http_request req;
};

void rm_http_limits_default(rm_http_limits *lim) {
  lim->max_request_line = 8 * 1024;
  lim->max_head = 16 * 1024;
  lim->max_headers = 100;
  lim->max_chunk_line = 4 * 1024;
  lim->max_body = 8 * 1024 * 1024;
}

rm_http_parser *rm_http_parser_new(const rm_http_limits *lim, rm_alloc_fn alloc, void *ud) {
  rm_http_parser *p;
  rm_http_limits d;
  if (!alloc) alloc = rm__http_alloc;
  p = alloc(ud, NULL, 0, sizeof *p);
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  rm_http_limits_default(&d);
  p->lim = lim ? *lim : d;
  if (!p->lim.max_request_line) p->lim.max_request_line = d.max_request_line;
  if (!p->lim.max_head) p->lim.max_head = d.max_head;
  if (!p->lim.max_headers) p->lim.max_headers = d.max_headers;
  if (!p->lim.max_chunk_line) p->lim.max_chunk_line = d.max_chunk_line;
  if (!p->lim.max_body) p->lim.max_body = d.max_body;
  p->alloc = alloc;
  p->ud = ud;
  rm_http_parser_reset(p);
  return p;
}

static size_t block_size(size_t cap) {
  return cap * (sizeof(field) + sizeof(rm_http_header));
}

void rm_http_parser_free(rm_http_parser *p) {
  if (!p) return;
  if (p->fields) p->alloc(p->ud, p->fields, block_size(p->cap), 0);
  p->alloc(p->ud, p, sizeof *p, 0);
}

void rm_http_parser_reset(rm_http_parser *p) {
  p->state = P_LINE;
  p->sub = L_START;
  p->pos = p->method = p->method_end = p->target_end = 0;
  p->nfields = 0;
  p->section_bytes = 0;
  p->max_body = p->lim.max_body;
  p->received = p->remaining = 0;
  p->err = 0;
  p->why = NULL;
  memset(&p->req, 0, sizeof p->req);
  p->req.content_length = -1;
}

const rm_http_request *rm_http_parser_request(const rm_http_parser *p) {
  return &p->req;
}

void rm_http_parser_set_max_body(rm_http_parser *p, uint64_t max) {
  p->max_body = max;
}

const char *rm_http_parser_error(const rm_http_parser *p) {
  return p->why ? p->why : "no error";
}

int rm_http_status_for(int err) {
  switch (err) {
  case RM_OK: return 200;
  case RM_HTTP_EURI: return 414;
  case RM_HTTP_EHEAD: return 431;
  case RM_HTTP_EBODY: return 413;
  case RM_HTTP_ECODING: return 501;
  case RM_HTTP_EVERSION: return 505;
  case RM_HTTP_ERANGE: return 416;
  case RM_ENOMEM: return 503;
  default: return 400;
  }
}

static int bad(rm_http_parser *p, const char *why) {
  p->why = why;
  return RM_HTTP_EBAD;
}

/* ---- request line ---- */

/* "HTTP/1.1" at the version's place: 1 when it is 1.0 or 1.1. */
static int check_version(rm_http_parser *p, const char *v, size_t len) {
  if (len != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
      v[7] < '0' || v[7] > '9')
    return bad(p, "malformed HTTP version");
  if (v[5] != '1' || v[7] > '1') {
    p->why = "unsupported HTTP version";
    return RM_HTTP_EVERSION;
  }
  p->req.minor = v[7] - '0';
  return 1;
}

/* method SP request-target SP HTTP-version CRLF, single spaces only, after
 * any empty lines a client left behind the previous request. Each part is
 * scanned by a loop of its own up to the byte that ends it, rather than a
 * state switch per byte. */
static int scan_line(rm_http_parser *p, const char *buf, size_t len) {
  const unsigned char *b = (const unsigned char *)buf;
  size_t end = len < p->lim.max_request_line ? len : p->lim.max_request_line, pos = p->pos;
  while (pos < end) {
    switch (p->sub) {
    case L_START:
      if (b[pos] == '\r') {
        p->sub = L_START_LF;
        pos++;
        break;
      }
      p->method = pos;
      p->sub = L_METHOD;
      /* fall through */
    case L_METHOD:
      while (pos < end && rm__http_is_tchar(b[pos])) pos++;
      if (pos == end) break;
      if (b[pos] != ' ' || pos == p->method) return bad(p, "invalid method");
      p->method_end = pos++;
      p->sub = L_TARGET;
      break;
    case L_START_LF:
      if (b[pos++] != '\n') return bad(p, "CR without LF");
      p->sub = L_START;
      break;
    case L_TARGET:
      while (pos < end && b[pos] > 0x20 && b[pos] < 0x7f) pos++;
      if (pos == end) break;
      if (b[pos] != ' ' || pos == p->method_end + 1) return bad(p, "invalid byte in request target");
      p->target_end = pos++;
      p->sub = L_VERSION;
      break;
    case L_VERSION:
      for (; pos < end && b[pos] != '\r'; pos++)
        if (pos - p->target_end > 8) return bad(p, "malformed HTTP version");
      if (pos == end) break;
      pos++;
      p->sub = L_LF;
      break;
    default: /* L_LF */
      if (b[pos] != '\n') return bad(p, "CR without LF");
      p->pos = ++pos;
      return check_version(p, buf + p->target_end + 1, p->pos - 2 - (p->target_end + 1));
    }
  }
  p->pos = pos;
  if (pos < len) {
    p->why = "request line too long";
    return RM_HTTP_EURI;
  }
  return 0;
}

/* ---- fields ---- */

static int grow(rm_http_parser *p) {
  size_t cap = p->cap ? p->cap * 2 : 16;
  char *block;
  if (cap > p->lim.max_headers) cap = p->lim.max_headers;
  block = p->alloc(p->ud, NULL, 0, block_size(cap));
  if (!block) return RM_ENOMEM;
  if (p->fields) {
    memcpy(block, p->fields, p->cap * sizeof(field));
    memcpy(block + cap * sizeof(field), p->headers, p->cap * sizeof(rm_http_header));
    p->alloc(p->ud, p->fields, block_size(p->cap), 0);
  }
  p->fields = (field *)(void *)block;
  p->headers = (rm_http_header *)(void *)(block + cap * sizeof(field));
  p->cap = cap;
  if (p->req.headers) p->req.headers = p->headers; /* the head's fields moved */
  return RM_OK;
}

static int add_field(void *ud, const char *buf, size_t name, size_t name_len, size_t value,
                     size_t value_len) {
  rm_http_parser *p = ud;
  field f;
  if (p->nfields >= p->lim.max_headers) {
    p->fs.why = "too many header fields";
    return RM_HTTP_EHEAD;
  }
  if (p->nfields == p->cap && grow(p) < 0) {
    p->fs.why = "out of memory";
    return RM_ENOMEM;
  }
  f.name = name;
  f.name_len = name_len;
  f.value = value;
  f.value_len = value_len;
  p->fields[p->nfields++] = f;
  return RM_OK;
}

/* Turns fields [from, nfields) into pointers into buf. */
static void resolve(rm_http_parser *p, const char *buf, size_t from) {
  size_t i;
  for (i = from; i < p->nfields; i++) {
    rm_http_header *h = &p->headers[i];
    h->name = buf + p->fields[i].name;
    h->name_len = p->fields[i].name_len;
    h->value = buf + p->fields[i].value;
    h->value_len = p->fields[i].value_len;
  }
}

/* ---- framing ---- */

/* Content-Length: 1*DIGIT, or a list of one value repeated; every
 * Content-Length field must agree. */
static int merge_length(rm_http_parser *p, const rm_http_header *h) {
  const char *cur = h->value, *end = h->value + h->value_len;
  rm_http_slice item;
  int any = 0;
  while (rm__http_list_next(&cur, end, &item)) {
    int64_t v = 0;
    size_t i;
    for (i = 0; i < item.len; i++) {
      int d = item.p[i] - '0';
      if (d < 0 || d > 9) return bad(p, "invalid Content-Length");
      if (v > (INT64_MAX - d) / 10) return bad(p, "Content-Length overflows");
      v = v * 10 + d;
    }
    if (p->req.content_length >= 0 && p->req.content_length != v)
      return bad(p, "conflicting Content-Length");
    p->req.content_length = v;
    any = 1;
  }
  return any ? RM_OK : bad(p, "empty Content-Length");
}

/* Only chunked is implemented; it must be the last coding, and only once. */
static int add_codings(rm_http_parser *p, const rm_http_header *h) {
  const char *cur = h->value, *end = h->value + h->value_len;
  rm_http_slice item;
  while (rm__http_list_next(&cur, end, &item)) {
    if (p->req.flags & RM_HTTP_CHUNKED) return bad(p, "chunked is not the last transfer coding");
    if (!rm__http_ieq(item.p, item.len, "chunked")) {
      p->why = "transfer coding not implemented";
      return RM_HTTP_ECODING;
    }
    p->req.flags |= RM_HTTP_CHUNKED;
  }
  return RM_OK;
}

static int has(const rm_http_header *h, const char *token) {
  return rm_http_has_token(h->value, h->value_len, token);
}

/* The Connection field's options, in one walk over its list. */
static void connection_options(const rm_http_header *h, int *close, int *keep, int *upgrade) {
  const char *cur = h->value, *end = h->value + h->value_len;
  rm_http_slice item;
  while (rm__http_list_next(&cur, end, &item)) {
    *close |= rm__http_ieq(item.p, item.len, "close");
    *keep |= rm__http_ieq(item.p, item.len, "keep-alive");
    *upgrade |= rm__http_ieq(item.p, item.len, "upgrade");
  }
}

/* The field is name (lower case): the length first, which rules out most
 * names without looking at their bytes. */
static int is_field(const rm_http_header *h, const char *name) {
  return h->name_len == strlen(name) && rm__http_ieq(h->name, h->name_len, name);
}

static int analyze(rm_http_parser *p) {
  rm_http_request *r = &p->req;
  int hosts = 0, te = 0, close = 0, keep = 0, upgrade = 0, websocket = 0, expect = 0, err;
  size_t i;
  for (i = 0; i < r->nheaders; i++) {
    const rm_http_header *h = &r->headers[i];
    if (is_field(h, "content-length")) {
      if ((err = merge_length(p, h)) < 0) return err;
    } else if (is_field(h, "transfer-encoding")) {
      te = 1;
      if ((err = add_codings(p, h)) < 0) return err;
    } else if (is_field(h, "connection")) {
      connection_options(h, &close, &keep, &upgrade);
    } else if (is_field(h, "host")) {
      hosts++;
    } else if (is_field(h, "expect")) {
      expect |= rm__http_ieq(h->value, h->value_len, "100-continue");
    } else if (is_field(h, "upgrade")) {
      websocket |= has(h, "websocket");
    }
  }
  if (te && r->minor == 0) return bad(p, "Transfer-Encoding in HTTP/1.0");
  if (te && !(r->flags & RM_HTTP_CHUNKED)) return bad(p, "empty Transfer-Encoding");
  if (te && r->content_length >= 0) return bad(p, "both Transfer-Encoding and Content-Length");
  if (hosts > 1 || (r->minor == 1 && hosts == 0)) return bad(p, "missing or repeated Host");
  if (!close && (r->minor == 1 || keep)) r->flags |= RM_HTTP_KEEP_ALIVE;
  if (expect && r->minor == 1) r->flags |= RM_HTTP_EXPECT_CONTINUE;
  if (upgrade && websocket) r->flags |= RM_HTTP_UPGRADE;
  return RM_OK;
}

/* The header section is complete in buf: fill in the request. */
static int finish_head(rm_http_parser *p, const char *buf) {
  rm_http_request *r = &p->req;
  resolve(p, buf, 0);
  r->method.p = buf + p->method;
  r->method.len = p->method_end - p->method;
  r->target.p = buf + p->method_end + 1;
  r->target.len = p->target_end - (p->method_end + 1);
  r->headers = p->headers;
  r->nheaders = p->nfields;
  r->head_len = p->fs.pos;
  p->section_bytes = p->fs.pos - p->pos;
  return analyze(p);
}

/* ---- chunked body ---- */

static int start_chunk(rm_http_parser *p) {
  if (p->remaining == 0) {
    p->state = P_TRAILERS;
    rm__http_fields_init(&p->fs, 0);
  } else if (p->received > p->max_body || p->remaining > p->max_body - p->received) {
    p->why = "body too large";
    return RM_HTTP_EBODY;
  } else {
    p->received += p->remaining;
    p->state = P_CHUNK_DATA;
  }
  return 1;
}

/* chunk-size [ BWS ";" chunk-ext ] CRLF. Extensions are checked for stray
 * control bytes and otherwise ignored. */
static int scan_chunk_line(rm_http_parser *p, const char *b, size_t n, size_t *took) {
  size_t i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)b[i];
    int d = rm__http_hex(c);
    if (++p->chunk_line > p->lim.max_chunk_line) return bad(p, "chunk-size line too long");
    switch (p->sub) {
    case C_FIRST:
      if (d < 0) return bad(p, "invalid chunk size");
      p->remaining = (uint64_t)d;
      p->sub = C_DIGITS;
      break;
    case C_DIGITS:
      if (d >= 0) {
        if (p->remaining > (UINT64_MAX >> 4)) return bad(p, "chunk size overflows");
        p->remaining = p->remaining << 4 | (uint64_t)d;
      } else if (c == ';') {
        p->sub = C_EXT;
      } else if (c == ' ' || c == '\t') {
        p->sub = C_BWS;
      } else if (c == '\r') {
        p->sub = C_LF;
      } else {
        return bad(p, "invalid chunk size");
      }
      break;
    case C_BWS:
      if (c == ';') p->sub = C_EXT;
      else if (c != ' ' && c != '\t') return bad(p, "invalid chunk size");
      break;
    case C_EXT:
      if (c == '\r') p->sub = C_LF;
      else if (c < 0x20 ? c != '\t' : c == 0x7f) return bad(p, "invalid chunk extension");
      break;
    default: /* C_LF */
      if (c != '\n') return bad(p, "CR without LF");
      *took = i + 1;
      return start_chunk(p);
    }
  }
  *took = n;
  return 0;
}

/* ---- the driver ---- */

static long fail(rm_http_parser *p, int err) {
  p->state = P_ERROR;
  p->err = err;
  return err;
}

/* Hands out up to remaining bytes of body as one piece. */
static long piece(rm_http_parser *p, const char *b, size_t n, size_t used, rm_http_event *ev) {
  size_t k = n < p->remaining ? n : (size_t)p->remaining;
  p->remaining -= k;
  ev->type = RM_HTTP_BODY;
  ev->data = b;
  ev->len = k;
  return (long)(used + k);
}

long rm_http_parse(rm_http_parser *p, const char *buf, size_t len, rm_http_event *ev) {
  size_t used = 0;
  ev->type = RM_HTTP_AGAIN;
  ev->data = NULL;
  ev->len = 0;
  for (;;) {
    const char *b = buf + used;
    size_t n = len - used, took = 0;
    int r;
    switch (p->state) {
    case P_LINE:
      if (len < p->pos) return fail(p, RM_EINVAL); /* the caller dropped bytes */
      r = scan_line(p, buf, len);
      if (r <= 0) return r < 0 ? fail(p, r) : 0;
      p->state = P_FIELDS;
      rm__http_fields_init(&p->fs, p->pos);
      break;
    case P_FIELDS:
      if (len < p->fs.pos) return fail(p, RM_EINVAL);
      r = rm__http_fields_scan(&p->fs, buf, len, p->pos + p->lim.max_head, add_field, p);
      if (r == 0) return 0;
      if (r < 0) p->why = p->fs.why;
      else r = finish_head(p, buf);
      if (r < 0) return fail(p, r);
      p->state = P_BODY_START;
      ev->type = RM_HTTP_HEAD;
      return (long)p->req.head_len;
    case P_BODY_START:
      if (p->req.flags & RM_HTTP_CHUNKED) {
        p->state = P_CHUNK_SIZE;
        p->sub = C_FIRST;
        p->chunk_line = 0;
      } else if (p->req.content_length > 0) {
        if ((uint64_t)p->req.content_length > p->max_body) {
          p->why = "body too large";
          return fail(p, RM_HTTP_EBODY);
        }
        p->remaining = (uint64_t)p->req.content_length;
        p->state = P_BODY;
      } else {
        p->state = P_DONE;
      }
      break;
    case P_BODY:
      if (n == 0) return (long)used;
      if (n >= p->remaining) p->state = P_DONE;
      return piece(p, b, n, used, ev);
    case P_CHUNK_SIZE:
      r = scan_chunk_line(p, b, n, &took);
      used += took;
      if (r <= 0) return r < 0 ? fail(p, r) : (long)used;
      break;
    case P_CHUNK_DATA:
      if (n == 0) return (long)used;
      if (n >= p->remaining) {
        p->state = P_CHUNK_END;
        p->sub = 0;
      }
      return piece(p, b, n, used, ev);
    case P_CHUNK_END: /* the CRLF after a chunk's data */
      if (n == 0) return (long)used;
      if (b[0] != (p->sub ? '\n' : '\r')) {
        p->why = "chunk data not followed by CRLF";
        return fail(p, RM_HTTP_EBAD);
      }
      used++;
      if (p->sub) {
        p->state = P_CHUNK_SIZE;
        p->sub = C_FIRST;
        p->chunk_line = 0;
      } else {
        p->sub = 1;
      }
      break;
    case P_TRAILERS: {
      size_t first = p->req.nheaders;
      r = rm__http_fields_scan(&p->fs, b, n, p->lim.max_head - p->section_bytes, add_field, p);
      if (r < 0) p->why = p->fs.why;
      if (r <= 0) return r < 0 ? fail(p, r) : (long)used;
      resolve(p, b, first);
      p->req.trailers = p->headers + first;
      p->req.ntrailers = p->nfields - first;
      used += p->fs.pos;
      p->state = P_DONE;
      break;
    }
    case P_DONE:
      ev->type = RM_HTTP_DONE;
      return (long)used;
    default: /* P_ERROR */
      return p->err;
    }
  }
}
