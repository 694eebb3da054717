/* libFuzzer harness for URL decoding and path normalisation (http/url.c),
 * the code a file server trusts to keep requests inside its root.
 *
 *   make fuzz              (or: make build-fuzz/fuzz_url && build-fuzz/fuzz_url fuzz/corpus/url)
 *
 * The input is a request target. Beyond "no crash", the harness traps when
 * a result breaks a promise:
 *   - percent-decoding never grows, never yields a NUL, and decoding in
 *     place gives the same bytes as decoding into another buffer;
 *   - a normalised path starts with '/', has no empty, "." or ".." segment,
 *     no NUL, control byte or '\', no hidden segment when asked, and
 *     normalising it again (when it holds no '%') changes nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "remora/http.h"

static void must(int cond) {
  if (!cond) __builtin_trap();
}

static void check_decode(const char *in, size_t len, int form) {
  char *out = malloc(len + 1), *inplace = malloc(len + 1);
  memcpy(inplace, in, len);
  long n = rm_http_percent_decode(in, len, out, len, form);
  long m = rm_http_percent_decode(inplace, len, inplace, len, form);
  must(n == m);
  if (n >= 0) {
    must((size_t)n <= len);
    must(memchr(out, '\0', (size_t)n) == NULL);
    must(memcmp(out, inplace, (size_t)n) == 0);
  }
  free(out);
  free(inplace);
}

/* Every promise rm_http_path_normalize makes about its output. */
static void check_path(const char *out, size_t n, unsigned flags) {
  must(n >= 1 && out[0] == '/');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)out[i];
    must(c >= 0x20 && c != 0x7f && c != '\\');
  }
  for (size_t i = 0; i < n;) {   /* segment by segment */
    size_t j = i + 1;
    while (j < n && out[j] != '/') j++;
    size_t seg = j - i - 1;
    const char *s = out + i + 1;
    must(seg > 0 || j == n);   /* only a trailing '/' leaves an empty last segment */
    must(!(seg == 1 && s[0] == '.') && !(seg == 2 && s[0] == '.' && s[1] == '.'));
    if (flags & RM_HTTP_PATH_NO_HIDDEN) must(seg == 0 || s[0] != '.');
    i = j;
  }
}

static void check_normalize(const char *p, size_t len, unsigned flags) {
  char *out = malloc(len + 1), *again = malloc(len + 2);
  long n = rm_http_path_normalize(p, len, out, len + 1, flags);
  must(n <= (long)len + 1);
  if (n > 0) {
    check_path(out, (size_t)n, flags);
    if (!memchr(out, '%', (size_t)n)) {
      long m = rm_http_path_normalize(out, (size_t)n, again, (size_t)n + 1, flags);
      must(m == n && memcmp(out, again, (size_t)n) == 0);
    }
  }
  must(rm_http_path_normalize(p, len, out, len, flags) == RM_EFULL || len == 0 || p[0] != '/');
  free(out);
  free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *t = (const char *)data;
  rm_http_slice path, query, k, v;
  rm_http_target_split(t, size, &path, &query);
  must(path.p == t && path.len <= size);
  must(query.p >= t && query.p + query.len <= t + size);
  check_decode(t, size, 0);
  check_decode(query.p, query.len, 1);
  check_normalize(path.p, path.len, 0);
  check_normalize(path.p, path.len, RM_HTTP_PATH_NO_HIDDEN);
  for (const char *cur = query.p; rm_http_form_next(&cur, query.p + query.len, &k, &v);) {
    must(k.p >= query.p && k.p + k.len <= query.p + query.len);
    must(v.p >= query.p && v.p + v.len <= query.p + query.len);
    check_decode(k.p, k.len, 1);
  }
  return 0;
}
