/* http/fields.c: the field-section scanner and helpers over field values.
 *
 * The grammar is RFC 9112's, read strictly because a lenient parser that sits
 * behind or in front of another one is how requests get smuggled: lines end
 * in CRLF only, no whitespace between a field name and its colon, no
 * obsolete line folding, no control bytes in values.
 */
#include <stdlib.h>
#include <string.h>
#include "http/fields.h"

void *rm__http_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

enum { F_START, F_NAME, F_OWS, F_VALUE, F_LF, F_END_LF };

int rm__http_hex(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Equal bytes are the common case (a literal matched against what a client
 * sent), decided before any case folding. */
int rm__http_ieq(const char *s, size_t len, const char *lit) {
  size_t i;
  for (i = 0; i < len; i++) {
    unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
    if (a == b && b) continue;
    if (b == '\0' || (a | 0x20) != (b | 0x20) || (unsigned)((a | 0x20) - 'a') > 'z' - 'a') return 0;
  }
  return lit[len] == '\0';
}

static const char *skip_blanks(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

rm_http_slice rm__http_trim(const char *s, size_t len) {
  rm_http_slice r;
  const char *end = s + len;
  s = skip_blanks(s, end);
  while (end > s && (end[-1] == ' ' || end[-1] == '\t')) end--;
  r.p = s;
  r.len = (size_t)(end - s);
  return r;
}

void rm__http_fields_init(rm__http_fields *s, size_t start) {
  memset(s, 0, sizeof *s);
  s->pos = s->line = start;
  s->state = F_START;
}

/* Some byte of x is below 0x20 or is 0x7f (a tab also counts: the caller
 * looks at each byte of such a word). */
static int suspect(uint64_t x) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u, y = x ^ (0x7f * ones);
  return ((((x - 0x20 * ones) & ~x) | ((y - ones) & ~y)) & highs) != 0;
}

size_t rm__http_value_span(const char *p, size_t n) {
  size_t i = 0;
  for (uint64_t x; i + 8 <= n; i += 8) {
    memcpy(&x, p + i, 8);
    if (suspect(x)) break;
  }
  for (; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c < 0x20 ? c != '\t' : c == 0x7f) break;
  }
  return i;
}

static int fail(rm__http_fields *s, size_t pos, const char *why) {
  s->pos = pos;
  s->why = why;
  return RM_HTTP_EBAD;
}

/* A name, the blanks after the colon and a value are each scanned by a loop
 * of their own up to the byte that ends them, rather than a state switch
 * per byte: most of a head is names and values. */
int rm__http_fields_scan(rm__http_fields *s, const char *buf, size_t len, size_t limit,
                         rm__http_field_fn fn, void *ud) {
  const unsigned char *b = (const unsigned char *)buf;
  size_t end = len < limit ? len : limit, pos = s->pos, ve;
  int r;
  while (pos < end) {
    unsigned char c = b[pos];
    switch (s->state) {
    case F_START:
      s->line = pos;
      if (c == '\r') s->state = F_END_LF;
      else if (c == ' ' || c == '\t') return fail(s, pos, "obsolete line folding");
      else if (rm__http_is_tchar(c)) s->state = F_NAME;
      else return fail(s, pos, "invalid byte in field name");
      pos++;
      break;
    case F_NAME:
      while (pos < end && rm__http_is_tchar(b[pos])) pos++;
      if (pos == end) break;
      c = b[pos];
      if (c != ':')
        return fail(s, pos, c == ' ' || c == '\t' ? "whitespace before colon" : "invalid byte in field name");
      s->name_end = pos++;
      s->value = s->value_end = pos;
      s->state = F_OWS;
      break;
    case F_OWS:
      while (pos < end && (b[pos] == ' ' || b[pos] == '\t')) pos++;
      s->value = s->value_end = pos;
      if (pos < end) s->state = F_VALUE;
      break;
    case F_VALUE:   /* up to the CR, its blanks at the end not kept */
      pos += rm__http_value_span((const char *)b + pos, end - pos);
      for (ve = pos; ve > s->value && (b[ve - 1] == ' ' || b[ve - 1] == '\t'); ve--) {}
      s->value_end = ve;
      if (pos == end) break;
      if (b[pos] != '\r') return fail(s, pos, "invalid byte in field value");
      s->state = F_LF;
      pos++;
      break;
    case F_LF:
      if (c != '\n') return fail(s, pos, "CR without LF");
      s->pos = pos;
      r = fn(ud, buf, s->line, s->name_end - s->line, s->value, s->value_end - s->value);
      if (r < 0) return r;
      s->state = F_START;
      pos++;
      break;
    default: /* F_END_LF */
      if (c != '\n') return fail(s, pos, "CR without LF");
      s->pos = pos + 1;
      return 1;
    }
  }
  s->pos = pos;
  if (pos < len) {
    s->why = "header section too large";
    return RM_HTTP_EHEAD;
  }
  return 0;
}

int rm__http_list_next(const char **cur, const char *end, rm_http_slice *item) {
  while (*cur < end) {
    const char *p = *cur, *comma = memchr(p, ',', (size_t)(end - p));
    const char *stop = comma ? comma : end;
    *cur = comma ? comma + 1 : end;
    *item = rm__http_trim(p, (size_t)(stop - p));
    if (item->len) return 1;
  }
  return 0;
}

int rm_http_has_token(const char *v, size_t len, const char *token) {
  const char *cur = v;
  rm_http_slice item;
  while (rm__http_list_next(&cur, v + len, &item))
    if (rm__http_ieq(item.p, item.len, token)) return 1;
  return 0;
}

const rm_http_header *rm_http_header_find(const rm_http_header *h, size_t n, const char *name) {
  size_t i;
  for (i = 0; i < n; i++)
    if (rm__http_ieq(h[i].name, h[i].name_len, name)) return &h[i];
  return NULL;
}

/* A parameter's value: a token or a quoted-string (quotes dropped). Returns
 * one past its end, or NULL when malformed. */
static const char *param_value(const char *p, const char *end, rm_http_slice *val) {
  if (p < end && *p == '"') {
    val->p = ++p;
    while (p < end && *p != '"') {
      if (*p == '\\' && ++p == end) return NULL;
      p++;
    }
    if (p == end) return NULL;
    val->len = (size_t)(p - val->p);
    return p + 1;
  }
  val->p = p;
  while (p < end && rm__http_is_tchar((unsigned char)*p)) p++;
  val->len = (size_t)(p - val->p);
  return val->len ? p : NULL;
}

int rm_http_param(const char *v, size_t len, const char *name, rm_http_slice *out) {
  const char *end = v + len, *p = memchr(v, ';', len);
  if (!p) return 0;
  while (p < end) { /* here *p == ';' */
    const char *key;
    size_t key_len;
    rm_http_slice val;
    p = skip_blanks(p + 1, end);
    if (p == end) return 0;
    if (*p == ';') continue;
    for (key = p; p < end && rm__http_is_tchar((unsigned char)*p); p++) {}
    key_len = (size_t)(p - key);
    if (key_len == 0 || p == end || *p != '=') return RM_HTTP_EBAD;
    p = param_value(p + 1, end, &val);
    if (!p) return RM_HTTP_EBAD;
    if (rm__http_ieq(key, key_len, name)) {
      *out = val;
      return 1;
    }
    p = skip_blanks(p, end);
    if (p < end && *p != ';') return RM_HTTP_EBAD;
  }
  return 0;
}
