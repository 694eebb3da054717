/* http/content.c: what a static file server needs besides the file: its
 * media type, the byte range asked for, and the validators that let a
 * client reuse its copy. */
#include <stdio.h>
#include <string.h>
#include "http/fields.h"

typedef struct mime {
  const char *ext, *type;
} mime;

static const mime mimes[] = {
  {"html", "text/html; charset=utf-8"}, {"htm", "text/html; charset=utf-8"},
  {"lsp", "text/html; charset=utf-8"}, {"css", "text/css; charset=utf-8"},
  {"js", "text/javascript; charset=utf-8"}, {"mjs", "text/javascript; charset=utf-8"},
  {"json", "application/json"}, {"txt", "text/plain; charset=utf-8"},
  {"xml", "application/xml"}, {"svg", "image/svg+xml"}, {"png", "image/png"},
  {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
  {"ico", "image/x-icon"}, {"wasm", "application/wasm"}, {"pdf", "application/pdf"},
  {"zip", "application/zip"}, {"gz", "application/gzip"}, {"mp4", "video/mp4"},
  {"webm", "video/webm"}, {"woff", "font/woff"}, {"woff2", "font/woff2"},
};

const char *rm_http_mime_type(const char *path, size_t len) {
  size_t i = len;
  while (i > 0 && path[i - 1] != '.' && path[i - 1] != '/') i--;
  if (i > 0 && path[i - 1] == '.') {
    size_t k;
    for (k = 0; k < sizeof mimes / sizeof *mimes; k++)
      if (rm__http_ieq(path + i, len - i, mimes[k].ext)) return mimes[k].type;
  }
  return "application/octet-stream";
}

/* 1*DIGIT, saturating at UINT64_MAX: a huge position is still a position.
 * Returns one past the digits, or NULL when there are none. */
static const char *number(const char *p, const char *end, uint64_t *v) {
  const char *start = p;
  *v = 0;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    uint64_t d = (uint64_t)(*p - '0');
    *v = *v > (UINT64_MAX - d) / 10 ? UINT64_MAX : *v * 10 + d;
  }
  return p > start ? p : NULL;
}

int rm_http_range(const char *v, size_t len, uint64_t size, uint64_t *first, uint64_t *last) {
  const char *p, *end = v + len;
  uint64_t a = 0, b = 0;
  int has_a = 0, has_b = 0;
  if (len < 6 || !rm__http_ieq(v, 6, "bytes=")) return 0;
  if (memchr(v, ',', len)) return 0; /* several ranges: the whole will do */
  p = v + 6;
  if (p < end && *p != '-') {
    if ((p = number(p, end, &a)) == NULL) return 0;
    has_a = 1;
  }
  if (p == end || *p++ != '-') return 0;
  if (p < end) {
    if ((p = number(p, end, &b)) == NULL || p != end) return 0;
    has_b = 1;
  }
  if (!has_a) { /* "-n": the last n bytes */
    if (!has_b) return 0;
    if (b == 0 || size == 0) return RM_HTTP_ERANGE;
    a = b >= size ? 0 : size - b;
    b = size - 1;
  } else {
    if (has_b && b < a) return 0;
    if (a >= size) return RM_HTTP_ERANGE;
    if (!has_b || b >= size) b = size - 1;
  }
  *first = a;
  *last = b;
  return 1;
}

long rm_http_etag(char *out, size_t cap, uint64_t size, int64_t mtime) {
  char tag[48];
  int n = snprintf(tag, sizeof tag, "\"%llx-%llx\"", (unsigned long long)size,
                   (unsigned long long)mtime);
  if ((size_t)n >= cap) return RM_EFULL;
  memcpy(out, tag, (size_t)n + 1);
  return n;
}

/* An entity-tag without its weakness prefix, for the weak comparison. */
static rm_http_slice opaque(rm_http_slice t) {
  if (t.len >= 2 && t.p[0] == 'W' && t.p[1] == '/') {
    t.p += 2;
    t.len -= 2;
  }
  return t;
}

int rm_http_etag_match(const char *v, size_t len, const char *etag, size_t etag_len) {
  const char *cur = v;
  rm_http_slice item, mine;
  mine.p = etag;
  mine.len = etag_len;
  mine = opaque(mine);
  while (rm__http_list_next(&cur, v + len, &item)) {
    if (item.len == 1 && item.p[0] == '*') return 1;
    item = opaque(item);
    if (item.len >= 2 && item.p[0] == '"' && item.len == mine.len &&
        memcmp(item.p, mine.p, mine.len) == 0)
      return 1;
  }
  return 0;
}

int rm_http_not_modified(const char *v, size_t len, time_t mtime) {
  time_t since;
  return rm_http_date_parse(v, len, &since) == RM_OK && mtime <= since;
}
