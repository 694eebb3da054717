/* http/multipart.c: an incremental multipart/form-data parser (RFC 7578,
 * RFC 2046 section 5.1).
 *
 * The body is data separated by delimiters, CRLF "--" boundary. Data is
 * handed out as it arrives except for a tail that might be the start of a
 * delimiter: that tail is left unconsumed, so the caller passes it again
 * with the next bytes and the parser never has to keep a copy. Part heads
 * follow the request parser's contract: consumed once complete.
 */
#include <string.h>
#include "http/fields.h"

#define MAX_BOUNDARY 70 /* RFC 2046 */

enum { M_START, M_PREAMBLE, M_AFTER, M_HEADERS, M_DATA, M_DONE, M_ERROR };
enum { A_FIRST, A_DASH, A_PAD, A_LF }; /* in M_AFTER, past a delimiter */

struct rm_http_multipart {
  rm_http_multipart_limits lim;
  rm_alloc_fn alloc;
  void *ud;
  int state, sub, err;
  char delim[4 + MAX_BOUNDARY]; /* CRLF "--" boundary */
  size_t dlen;
  rm__http_fields fs;
  size_t nfields;
  /* what the part head being scanned said, as offsets into it */
  struct { size_t off, len; int seen; } name, filename, type;
  rm_http_part part;
};

int rm_http_multipart_new(rm_http_multipart **out, const char *content_type, size_t len,
                          const rm_http_multipart_limits *lim, rm_alloc_fn alloc, void *ud) {
  const char *semi = memchr(content_type, ';', len);
  rm_http_slice type = rm__http_trim(content_type, semi ? (size_t)(semi - content_type) : len);
  rm_http_slice b;
  rm_http_multipart *m;
  *out = NULL;
  if (!rm__http_ieq(type.p, type.len, "multipart/form-data") ||
      rm_http_param(content_type, len, "boundary", &b) != 1 || b.len == 0 || b.len > MAX_BOUNDARY)
    return RM_HTTP_EBAD;
  if (!alloc) alloc = rm__http_alloc;
  m = alloc(ud, NULL, 0, sizeof *m);
  if (!m) return RM_ENOMEM;
  memset(m, 0, sizeof *m);
  m->lim.max_part_head = lim && lim->max_part_head ? lim->max_part_head : 8 * 1024;
  m->lim.max_part_headers = lim && lim->max_part_headers ? lim->max_part_headers : 16;
  m->alloc = alloc;
  m->ud = ud;
  memcpy(m->delim, "\r\n--", 4);
  memcpy(m->delim + 4, b.p, b.len);
  m->dlen = 4 + b.len;
  m->state = M_START;
  *out = m;
  return RM_OK;
}

void rm_http_multipart_free(rm_http_multipart *m) {
  if (m) m->alloc(m->ud, m, sizeof *m, 0);
}

const rm_http_part *rm_http_multipart_part(const rm_http_multipart *m) {
  return &m->part;
}

/* The first place in b[0, n) where the delimiter starts: whole or, at the
 * very end, a prefix that more bytes may complete (*whole = 0). n if none. */
static size_t find_delim(const rm_http_multipart *m, const char *b, size_t n, int *whole) {
  size_t i = 0;
  *whole = 0;
  while (i < n) {
    const char *cr = memchr(b + i, '\r', n - i);
    size_t k;
    if (!cr) return n;
    i = (size_t)(cr - b);
    k = n - i < m->dlen ? n - i : m->dlen;
    if (memcmp(b + i, m->delim, k) == 0) {
      *whole = k == m->dlen;
      return i;
    }
    i++;
  }
  return n;
}

static void remember(const char *buf, rm_http_slice v, size_t *off, size_t *len, int *seen) {
  *off = (size_t)(v.p - buf);
  *len = v.len;
  *seen = 1;
}

static int part_field(void *ud, const char *buf, size_t name, size_t name_len, size_t value,
                      size_t value_len) {
  rm_http_multipart *m = ud;
  const char *v = buf + value;
  rm_http_slice s;
  if (++m->nfields > m->lim.max_part_headers) return RM_HTTP_EHEAD;
  if (rm__http_ieq(buf + name, name_len, "content-type")) {
    s.p = v;
    s.len = value_len;
    remember(buf, s, &m->type.off, &m->type.len, &m->type.seen);
  } else if (rm__http_ieq(buf + name, name_len, "content-disposition")) {
    const char *semi = memchr(v, ';', value_len);
    s = rm__http_trim(v, semi ? (size_t)(semi - v) : value_len);
    if (!rm__http_ieq(s.p, s.len, "form-data")) return RM_HTTP_EBAD;
    if (rm_http_param(v, value_len, "name", &s) == 1)
      remember(buf, s, &m->name.off, &m->name.len, &m->name.seen);
    if (rm_http_param(v, value_len, "filename", &s) == 1)
      remember(buf, s, &m->filename.off, &m->filename.len, &m->filename.seen);
  }
  return RM_OK;
}

static void begin_head(rm_http_multipart *m) {
  m->state = M_HEADERS;
  m->nfields = 0;
  m->name.seen = m->filename.seen = m->type.seen = 0;
  rm__http_fields_init(&m->fs, 0);
}

static rm_http_slice slice_at(const char *buf, size_t off, size_t len, int seen) {
  rm_http_slice s;
  s.p = seen ? buf + off : NULL;
  s.len = seen ? len : 0;
  return s;
}

/* The part head is complete in buf: publish it. */
static int finish_head(rm_http_multipart *m, const char *buf) {
  if (!m->name.seen) return RM_HTTP_EBAD; /* RFC 7578: every part is named */
  m->part.name = slice_at(buf, m->name.off, m->name.len, 1);
  m->part.filename = slice_at(buf, m->filename.off, m->filename.len, m->filename.seen);
  m->part.content_type = slice_at(buf, m->type.off, m->type.len, m->type.seen);
  m->state = M_DATA;
  return RM_OK;
}

/* One byte after a delimiter: "--" closes the body, blanks then CRLF open a
 * part. Returns 1 to go on, or RM_HTTP_EBAD. */
static int after_delim(rm_http_multipart *m, unsigned char c) {
  int blank = c == ' ' || c == '\t';
  switch (m->sub) {
  case A_FIRST:
    if (c == '-') m->sub = A_DASH;
    else if (blank) m->sub = A_PAD;
    else if (c == '\r') m->sub = A_LF;
    else return RM_HTTP_EBAD;
    break;
  case A_DASH:
    if (c != '-') return RM_HTTP_EBAD;
    m->state = M_DONE;
    break;
  case A_PAD:
    if (c == '\r') m->sub = A_LF;
    else if (!blank) return RM_HTTP_EBAD;
    break;
  default: /* A_LF */
    if (c != '\n') return RM_HTTP_EBAD;
    begin_head(m);
    break;
  }
  return 1;
}

static long fail(rm_http_multipart *m, int err) {
  m->state = M_ERROR;
  m->err = err;
  return err;
}

long rm_http_multipart_parse(rm_http_multipart *m, const char *buf, size_t len, rm_http_event *ev) {
  size_t used = 0;
  ev->type = RM_HTTP_AGAIN;
  ev->data = NULL;
  ev->len = 0;
  for (;;) {
    const char *b = buf + used;
    size_t n = len - used, i, k;
    int whole, r;
    switch (m->state) {
    case M_START: /* the first delimiter may come without its CRLF */
      k = n < m->dlen - 2 ? n : m->dlen - 2;
      if (memcmp(b, m->delim + 2, k) != 0) {
        m->state = M_PREAMBLE;
      } else if (k < m->dlen - 2) {
        return (long)used;
      } else {
        used += k;
        m->state = M_AFTER;
        m->sub = A_FIRST;
      }
      break;
    case M_PREAMBLE: /* skipped */
      i = find_delim(m, b, n, &whole);
      used += i;
      if (!whole) return (long)used;
      used += m->dlen;
      m->state = M_AFTER;
      m->sub = A_FIRST;
      break;
    case M_AFTER:
      if (n == 0) return (long)used;
      if ((r = after_delim(m, (unsigned char)b[0])) < 0) return fail(m, r);
      used++;
      break;
    case M_HEADERS:
      r = rm__http_fields_scan(&m->fs, b, n, m->lim.max_part_head, part_field, m);
      if (r == 1) r = finish_head(m, b);
      else if (r == 0) return (long)used;
      if (r < 0) return fail(m, r);
      ev->type = RM_HTTP_PART;
      return (long)(used + m->fs.pos);
    case M_DATA:
      i = find_delim(m, b, n, &whole);
      if (i > 0) {
        ev->type = RM_HTTP_BODY;
        ev->data = b;
        ev->len = i;
        return (long)(used + i);
      }
      if (!whole) return (long)used;
      used += m->dlen;
      m->state = M_AFTER;
      m->sub = A_FIRST;
      break;
    case M_DONE: /* the epilogue is ignored */
      ev->type = RM_HTTP_DONE;
      return (long)len;
    default:
      return m->err;
    }
  }
}
