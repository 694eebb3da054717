/* http/url.c: request targets, percent-decoding, form data, cookies, and the
 * path normalisation a file server stands on.
 *
 * Paths are decoded before "." and ".." are resolved, so "%2e%2e" climbs like
 * ".." does and is caught the same way; an encoded '/' or any '\' is refused
 * outright rather than guessed at, since either would let one segment turn
 * into two on the file system. */
#include <string.h>
#include "http/fields.h"

void rm_http_target_split(const char *t, size_t len, rm_http_slice *path, rm_http_slice *query) {
  const char *hash = memchr(t, '#', len), *q;
  if (hash) len = (size_t)(hash - t);
  q = memchr(t, '?', len);
  path->p = t;
  path->len = q ? (size_t)(q - t) : len;
  query->p = q ? q + 1 : t + len;
  query->len = q ? len - path->len - 1 : 0;
}

long rm_http_percent_decode(const char *in, size_t len, char *out, size_t cap, int form) {
  size_t i, o = 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)in[i];
    if (c == '%') {
      int hi, lo;
      if (len - i < 3 || (hi = rm__http_hex((unsigned char)in[i + 1])) < 0 ||
          (lo = rm__http_hex((unsigned char)in[i + 2])) < 0)
        return RM_EINVAL;
      c = (unsigned char)(hi << 4 | lo);
      i += 2;
    } else if (c == '+' && form) {
      c = ' ';
    }
    if (c == '\0') return RM_EINVAL;
    if (o == cap) return RM_EFULL;
    out[o++] = (char)c;
  }
  return (long)o;
}

/* The next piece of [*cur, end) up to sep, with *cur moved past the
 * separator. */
static rm_http_slice next_piece(const char **cur, const char *end, char sep) {
  rm_http_slice s;
  const char *stop = memchr(*cur, sep, (size_t)(end - *cur));
  s.p = *cur;
  s.len = (size_t)((stop ? stop : end) - *cur);
  *cur = stop ? stop + 1 : end;
  return s;
}

int rm_http_form_next(const char **cur, const char *end, rm_http_slice *key, rm_http_slice *value) {
  while (*cur < end) {
    rm_http_slice pair = next_piece(cur, end, '&');
    const char *eq;
    if (pair.len == 0) continue;
    eq = memchr(pair.p, '=', pair.len);
    key->p = pair.p;
    key->len = eq ? (size_t)(eq - pair.p) : pair.len;
    value->p = eq ? eq + 1 : pair.p + pair.len;
    value->len = eq ? pair.len - key->len - 1 : 0;
    return 1;
  }
  return 0;
}

int rm_http_cookie_next(const char **cur, const char *end, rm_http_slice *name, rm_http_slice *value) {
  while (*cur < end) {
    rm_http_slice pair = next_piece(cur, end, ';');
    const char *eq = memchr(pair.p, '=', pair.len);
    if (!eq) continue;
    *name = rm__http_trim(pair.p, (size_t)(eq - pair.p));
    *value = rm__http_trim(eq + 1, (size_t)(pair.p + pair.len - (eq + 1)));
    if (name->len == 0) continue;
    if (value->len >= 2 && value->p[0] == '"' && value->p[value->len - 1] == '"') {
      value->p++;
      value->len -= 2;
    }
    return 1;
  }
  return 0;
}

/* Bytes a segment holds as they are: not '%' (decoded), '\\' or a control
 * byte (refused by decode_segment). */
static const unsigned char seg_special[256] = {[0 ... 0x1f] = 1, ['%'] = 1, ['\\'] = 1, [0x7f] = 1};

/* Decodes one segment to out; refuses what could name another file than
 * the one the segment spells. A segment of plain bytes (nearly every one)
 * is copied after one look at each byte. */
static long decode_segment(const char *seg, size_t len, char *out, size_t cap) {
  size_t plain = 0;
  while (plain < len && !seg_special[(unsigned char)seg[plain]]) plain++;
  if (plain == len) {
    if (len > cap) return RM_EFULL;
    memcpy(out, seg, len);
    return (long)len;
  }
  long n = rm_http_percent_decode(seg, len, out, cap, 0), i;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)out[i];
    if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f) return RM_EINVAL;
  }
  return n;
}

long rm_http_path_normalize(const char *path, size_t len, char *out, size_t cap, unsigned flags) {
  const char *p = path, *end = path + len;
  size_t o = 0; /* out[0, o) is the result so far, without a trailing '/' */
  int dir = 0;  /* does the result name a directory (trailing '/')? */
  if (len == 0 || path[0] != '/') return RM_EINVAL;
  if (cap < len + 1) return RM_EFULL;
  while (p < end) {
    const char *seg = p + 1, *stop = memchr(seg, '/', (size_t)(end - seg));
    char *s = out + o + 1;
    long n;
    if (!stop) stop = end;
    out[o] = '/';
    n = decode_segment(seg, (size_t)(stop - seg), s, cap - o - 1);
    p = stop;
    if (n < 0) return n;
    dir = 1;
    if (n == 0 || (n == 1 && s[0] == '.')) continue;
    if (n == 2 && s[0] == '.' && s[1] == '.') {
      if (o == 0) return RM_EINVAL; /* above the root */
      while (out[--o] != '/') {}
      continue;
    }
    if (s[0] == '.' && (flags & RM_HTTP_PATH_NO_HIDDEN)) return RM_EINVAL;
    o += 1 + (size_t)n;
    dir = 0;
  }
  if (o == 0 || dir) out[o++] = '/';
  return (long)o;
}
