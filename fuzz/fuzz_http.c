/* libFuzzer harness for the HTTP protocol core. Build from the repository root:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -I. \
 *     fuzz/fuzz_http.c http/[a-z]*.c -o build/fuzz_http
 *   build/fuzz_http fuzz/corpus/http
 *
 * The first input byte picks the feed size (1 to 32 bytes per read), the rest
 * is a connection's bytes: every request in it is parsed the way a server
 * would, with its body, through pipelining, and its target and fields go
 * through the URL, path, cookie, range and multipart helpers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "remora/http.h"

static void helpers(const rm_http_request *r) {
  char out[512];
  rm_http_slice path, query, k, v;
  const char *cur;
  size_t i;
  uint64_t a, b;
  rm_http_target_split(r->target.p, r->target.len, &path, &query);
  if (path.len < sizeof out) rm_http_path_normalize(path.p, path.len, out, sizeof out, RM_HTTP_PATH_NO_HIDDEN);
  for (cur = query.p; rm_http_form_next(&cur, query.p + query.len, &k, &v);)
    if (v.len <= sizeof out) rm_http_percent_decode(v.p, v.len, out, sizeof out, 1);
  for (i = 0; i < r->nheaders; i++) {
    const rm_http_header *h = &r->headers[i];
    time_t t;
    for (cur = h->value; rm_http_cookie_next(&cur, h->value + h->value_len, &k, &v);) {}
    rm_http_range(h->value, h->value_len, 1000, &a, &b);
    rm_http_etag_match(h->value, h->value_len, "\"1-2\"", 5);
    rm_http_date_parse(h->value, h->value_len, &t);
    rm_http_param(h->value, h->value_len, "boundary", &k);
  }
}

/* The body goes through a multipart parser when the request says it is one. */
static rm_http_multipart *multipart_for(const rm_http_request *r) {
  const rm_http_header *ct = rm_http_header_find(r->headers, r->nheaders, "content-type");
  rm_http_multipart *m = NULL;
  if (ct) rm_http_multipart_new(&m, ct->value, ct->value_len, NULL, NULL, NULL);
  return m;
}

/* Feeds a body piece to the multipart parser with the same contract. */
static void multipart_feed(rm_http_multipart *m, char *mbuf, size_t *mhave, size_t cap,
                           const char *data, size_t len) {
  rm_http_event ev;
  long n;
  if (len > cap - *mhave) len = cap - *mhave;
  memcpy(mbuf + *mhave, data, len);
  *mhave += len;
  do {
    n = rm_http_multipart_parse(m, mbuf, *mhave, &ev);
    if (n < 0) return;
    memmove(mbuf, mbuf + n, *mhave - (size_t)n);
    *mhave -= (size_t)n;
  } while (ev.type != RM_HTTP_AGAIN && ev.type != RM_HTTP_DONE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char mbuf[65536];
  rm_http_limits lim;
  rm_http_parser *p;
  rm_http_multipart *m = NULL;
  char *buf;
  size_t step, fed = 0, have = 0, mhave = 0;
  if (size < 1) return 0;
  step = 1 + data[0] % 32;
  data++;
  size--;
  rm_http_limits_default(&lim);
  lim.max_body = 65536;
  p = rm_http_parser_new(&lim, NULL, NULL);
  buf = malloc(size + 1);
  while (fed < size) {
    size_t k = size - fed < step ? size - fed : step;
    memcpy(buf + have, data + fed, k);
    have += k;
    fed += k;
    for (;;) {
      rm_http_event ev;
      long n = rm_http_parse(p, buf, have, &ev);
      if (n < 0) goto out;
      if (ev.type == RM_HTTP_HEAD) {
        helpers(rm_http_parser_request(p));
        m = multipart_for(rm_http_parser_request(p));
      } else if (ev.type == RM_HTTP_BODY && m) {
        multipart_feed(m, mbuf, &mhave, sizeof mbuf, ev.data, ev.len);
      }
      memmove(buf, buf + n, have - (size_t)n);
      have -= (size_t)n;
      if (ev.type == RM_HTTP_DONE) {
        rm_http_multipart_free(m);
        m = NULL;
        mhave = 0;
        rm_http_parser_reset(p);
      } else if (ev.type == RM_HTTP_AGAIN) {
        break;
      }
    }
  }
out:
  rm_http_multipart_free(m);
  rm_http_parser_free(p);
  free(buf);
  return 0;
}
