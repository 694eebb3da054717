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

int rm__http_is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* VCHAR or obs-text: what a field value holds besides blanks. */
static int is_value_char(unsigned char c) {
  return c > 0x20 && c != 0x7f;
}

int rm__http_hex(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

int rm__http_ieq(const char *s, size_t len, const char *lit) {
  size_t i;
  for (i = 0; i < len; i++)
    if (lit[i] == '\0' || lower((unsigned char)s[i]) != lower((unsigned char)lit[i])) return 0;
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

static int fail(rm__http_fields *s, const char *why) {
  s->why = why;
  return RM_HTTP_EBAD;
}

int rm__http_fields_scan(rm__http_fields *s, const char *buf, size_t len, size_t limit,
                         rm__http_field_fn fn, void *ud) {
  for (; s->pos < len; s->pos++) {
    unsigned char c = (unsigned char)buf[s->pos];
    int r;
    if (s->pos >= limit) {
      s->why = "header section too large";
      return RM_HTTP_EHEAD;
    }
    switch (s->state) {
    case F_START:
      s->line = s->pos;
      if (c == '\r') s->state = F_END_LF;
      else if (c == ' ' || c == '\t') return fail(s, "obsolete line folding");
      else if (rm__http_is_tchar(c)) s->state = F_NAME;
      else return fail(s, "invalid byte in field name");
      break;
    case F_NAME:
      if (c == ':') {
        s->name_end = s->pos;
        s->value = s->value_end = s->pos + 1;
        s->state = F_OWS;
      } else if (!rm__http_is_tchar(c)) {
        return fail(s, c == ' ' || c == '\t' ? "whitespace before colon" : "invalid byte in field name");
      }
      break;
    case F_OWS:
      if (c == ' ' || c == '\t') {
        s->value = s->value_end = s->pos + 1;
        break;
      }
      s->state = F_VALUE;
      /* fall through */
    case F_VALUE:
      if (c == '\r') s->state = F_LF;
      else if (is_value_char(c)) s->value_end = s->pos + 1;
      else if (c != ' ' && c != '\t') return fail(s, "invalid byte in field value");
      break;
    case F_LF:
      if (c != '\n') return fail(s, "CR without LF");
      r = fn(ud, buf, s->line, s->name_end - s->line, s->value, s->value_end - s->value);
      if (r < 0) return r;
      s->state = F_START;
      break;
    default: /* F_END_LF */
      if (c != '\n') return fail(s, "CR without LF");
      s->pos++;
      return 1;
    }
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
