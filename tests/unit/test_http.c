/* Tests of the HTTP/1.1 protocol core: the request parser fed in every
 * possible split, framing and smuggling cases, limits, the response writer,
 * URL and path helpers, multipart, ranges and validators. */
#include <stdio.h>
#include <string.h>
#include "remora/http.h"
#include "tests/unit/check.h"

/* ---- a caller that feeds the parser like a connection would ---- */

typedef struct transcript {
  char text[8192]; /* what the parser reported, message by message */
  size_t len;
  int err;
  size_t left; /* bytes the parser never consumed */
} transcript;

static void say(transcript *t, const char *s, size_t n) {
  if (n > sizeof t->text - 1 - t->len) n = sizeof t->text - 1 - t->len;
  memcpy(t->text + t->len, s, n);
  t->len += n;
  t->text[t->len] = '\0';
}

static void says(transcript *t, const char *s) {
  say(t, s, strlen(s));
}

static void say_head(transcript *t, const rm_http_request *r) {
  char line[128];
  size_t i;
  say(t, r->method.p, r->method.len);
  says(t, " ");
  say(t, r->target.p, r->target.len);
  snprintf(line, sizeof line, " 1.%d flags=%u cl=%lld head=%zu", r->minor, r->flags,
           (long long)r->content_length, r->head_len);
  says(t, line);
  for (i = 0; i < r->nheaders; i++) {
    says(t, " [");
    say(t, r->headers[i].name, r->headers[i].name_len);
    says(t, "=");
    say(t, r->headers[i].value, r->headers[i].value_len);
    says(t, "]");
  }
  says(t, " body:");
}

static void say_done(transcript *t, const rm_http_request *r) {
  size_t i;
  for (i = 0; i < r->ntrailers; i++) {
    says(t, " <");
    say(t, r->trailers[i].name, r->trailers[i].name_len);
    says(t, "=");
    say(t, r->trailers[i].value, r->trailers[i].value_len);
    says(t, ">");
  }
  says(t, " DONE\n");
}

/* Feeds in[0, len) in pieces ending at the offsets in cuts (then the rest),
 * compacting the buffer after every call so that it moves as a real one
 * would. Parses messages until the input runs out. */
static void feed(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                 const rm_http_limits *lim, transcript *t) {
  rm_http_parser *p = rm_http_parser_new(lim, NULL, NULL);
  char *buf = malloc(len + 1);
  size_t have = 0, fed = 0, c = 0;
  memset(t, 0, sizeof *t);
  while (fed < len || c == 0) {
    size_t upto = c < ncuts && cuts[c] < len ? cuts[c] : len;
    c++;
    if (upto < fed) continue;
    memcpy(buf + have, in + fed, upto - fed);
    have += upto - fed;
    fed = upto;
    for (;;) {
      rm_http_event ev;
      long n = rm_http_parse(p, buf, have, &ev);
      if (n < 0) {
        t->err = (int)n;
        goto out;
      }
      if (ev.type == RM_HTTP_HEAD) say_head(t, rm_http_parser_request(p));
      if (ev.type == RM_HTTP_BODY) say(t, ev.data, ev.len);
      if (ev.type == RM_HTTP_DONE) say_done(t, rm_http_parser_request(p));
      memmove(buf, buf + n, have - (size_t)n);
      have -= (size_t)n;
      if (ev.type == RM_HTTP_DONE) rm_http_parser_reset(p);
      else if (ev.type == RM_HTTP_AGAIN) break;
    }
  }
out:
  t->left = have + (len - fed);
  free(buf);
  rm_http_parser_free(p);
}

static void parse_whole(const char *in, const rm_http_limits *lim, transcript *t) {
  feed(in, strlen(in), NULL, 0, lim, t);
}

/* The transcript of in fed whole must equal the one of every two-piece split
 * and of a one-byte-at-a-time feed. */
static int same_in_every_split(const char *in) {
  size_t len = strlen(in), k, ok = 1;
  static transcript whole, part;
  size_t *ones = malloc((len + 1) * sizeof *ones);
  parse_whole(in, NULL, &whole);
  for (k = 0; k <= len; k++) {
    feed(in, len, &k, 1, NULL, &part);
    if (strcmp(whole.text, part.text) != 0 || whole.err != part.err || whole.left != part.left) {
      printf("  split at %zu differs (err %d/%d left %zu/%zu):\n%s\nvs\n%s\n", k, whole.err, part.err, whole.left, part.left, whole.text, part.text);
      ok = 0;
      break;
    }
  }
  for (k = 0; k <= len; k++) ones[k] = k;
  feed(in, len, ones, len + 1, NULL, &part);
  if (strcmp(whole.text, part.text) != 0 || whole.err != part.err) {
    printf("  byte-by-byte differs:\n%s\nvs\n%s\n", whole.text, part.text);
    ok = 0;
  }
  free(ones);
  return ok;
}

static const char *examples[] = {
  "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
  "GET /index.html?q=1&r=%20 HTTP/1.0\r\nUser-Agent:  curl/8 \t\r\nAccept: */*\r\n\r\n",
  "\r\nPOST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
  "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
  "5;name=\"v a\";x\r\nhello\r\n6 ;y\r\n world\r\n0\r\nT1: a\r\nT2:b\r\n\r\n",
  "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
  "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
  "PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n",
  "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
};

static void test_splits(void) {
  size_t i;
  for (i = 0; i < sizeof examples / sizeof *examples; i++) CHECK(same_in_every_split(examples[i]));
}

int main(int argc, char **argv) {
  if (argc > 1) { /* debugging aid: print each example's transcript */
    size_t i;
    static transcript t;
    for (i = 0; i < sizeof examples / sizeof *examples; i++) {
      parse_whole(examples[i], NULL, &t);
      printf("%s-- err %d left %zu\n", t.text, t.err, t.left);
    }
    return 0;
  }
  RUN(test_splits);
  return CHECK_DONE();
}
