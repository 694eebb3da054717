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


/* The status a server would answer in with the whole input parsed: 200 when
 * every message parsed. */
static int status_of(const char *in, const rm_http_limits *lim) {
  static transcript t;
  feed(in, strlen(in), NULL, 0, lim, &t);
  return rm_http_status_for(t.err);
}

static void test_transcripts(void) {
  static transcript t;
  parse_whole(examples[3], NULL, &t);
  CHECK(strcmp(t.text, "POST /c 1.1 flags=3 cl=-1 head=57 [Host=x] [Transfer-Encoding=chunked] "
                       "body:hello world <T1=a> <T2=b> DONE\n") == 0);
  parse_whole(examples[1], NULL, &t);
  CHECK(strstr(t.text, "[User-Agent=curl/8] [Accept=*/*]") != NULL); /* OWS trimmed */
  CHECK(strstr(t.text, " 1.0 flags=0 ") != NULL);
}

static void test_pipelining(void) {
  static transcript t;
  const char *in = examples[4];
  parse_whole(in, NULL, &t);
  CHECK_EQ(t.err, 0);
  CHECK(strstr(t.text, "GET /a 1.1 flags=1") == t.text);
  CHECK(strstr(t.text, "body:abc DONE\nGET /c 1.1 flags=0 ") != NULL);
  CHECK_EQ(t.left, 0);
  /* the parser stops at the end of one message and leaves the next alone */
  {
    rm_http_parser *p = rm_http_parser_new(NULL, NULL, NULL);
    rm_http_event ev;
    const char *two = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    long n = rm_http_parse(p, two, strlen(two), &ev);
    CHECK_EQ(ev.type, RM_HTTP_HEAD);
    CHECK_EQ(n, 28);
    CHECK_EQ(rm_http_parse(p, two + n, strlen(two) - (size_t)n, &ev), 0);
    CHECK_EQ(ev.type, RM_HTTP_DONE);
    CHECK_EQ(rm_http_parse(p, two + n, strlen(two) - (size_t)n, &ev), 0); /* stays DONE */
    CHECK_EQ(ev.type, RM_HTTP_DONE);
    rm_http_parser_reset(p);
    CHECK_EQ(rm_http_parse(p, two + n, strlen(two) - (size_t)n, &ev), 28);
    CHECK_EQ(ev.type, RM_HTTP_HEAD);
    CHECK(rm_http_parser_request(p)->target.p[1] == '2');
    rm_http_parser_free(p);
  }
  /* the leftover of an incomplete pipelined request is not consumed */
  parse_whole(examples[6], NULL, &t);
  CHECK_EQ(t.left, strlen("GET / HTTP/1.1\r\n"));
}

static void test_chunked(void) {
  static transcript t;
  parse_whole("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
              "A\r\n0123456789\r\n00000003\r\nabc\r\n0;last=\"yes\"\r\n\r\n", NULL, &t);
  CHECK_EQ(t.err, 0);
  CHECK(strstr(t.text, "body:0123456789abc DONE\n") != NULL);
  CHECK(same_in_every_split("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "1;a=b;c\r\nx\r\n0\r\nChecksum: 1\r\n\r\n"));
  /* trailers come with the request */
  parse_whole("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\n\r\n",
              NULL, &t);
  CHECK(strstr(t.text, "body: <A=1> DONE") != NULL);
}

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_smuggling(void) {
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", NULL), 200);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", NULL), 200);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabc", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", NULL), 501);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", NULL), 501);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", NULL), 400);
  /* chunk sizes */
  CHECK_EQ(status_of(CHUNKED_HEAD "-5\r\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "\r\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "5\r\nhelloXX\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "5;a\x01\r\nhello\r\n0\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of(CHUNKED_HEAD "10000000000000000\r\n", NULL), 400); /* 2^64 overflows */
  CHECK_EQ(status_of(CHUNKED_HEAD "ffffffffffffffff\r\n", NULL), 413);
  CHECK_EQ(status_of(CHUNKED_HEAD "0000000000000000000000001\r\nx\r\n0\r\n\r\n", NULL), 200);
  /* line syntax */
  CHECK_EQ(status_of("GET / HTTP/1.1\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: x\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET  / HTTP/1.1\r\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1 \r\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("G@T / HTTP/1.1\r\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1\r\n Host: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", NULL), 400); /* obs-fold */
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: x\r\nA: b\x01\r\n\r\n", NULL), 400);
  {
    const char nul[] = "GET / HTTP/1.1\r\nHost: x\r\nA: b\0c\r\n\r\n";
    static transcript t;
    feed(nul, sizeof nul - 1, NULL, 0, NULL, &t);
    CHECK_EQ(rm_http_status_for(t.err), 400);
  }
  CHECK_EQ(status_of("GET / HTTP/1.1\r\n\r\n", NULL), 400);                 /* no Host */
  CHECK_EQ(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / HTTP/1.0\r\n\r\n", NULL), 200);
  CHECK_EQ(status_of("GET / HTTP/1.2\r\nHost: x\r\n\r\n", NULL), 505);
  CHECK_EQ(status_of("GET / HTTP/2.0\r\nHost: x\r\n\r\n", NULL), 505);
  CHECK_EQ(status_of("GET / HTTP/1.10\r\nHost: x\r\n\r\n", NULL), 400);
  CHECK_EQ(status_of("GET / http/1.1\r\nHost: x\r\n\r\n", NULL), 400);
}

static void test_limits(void) {
  rm_http_limits lim;
  static char big[40000];
  size_t i;
  rm_http_limits_default(&lim);
  /* request line */
  strcpy(big, "GET /");
  memset(big + 5, 'a', 9000);
  strcpy(big + 9005, " HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK_EQ(status_of(big, NULL), 414);
  lim.max_request_line = 10000;
  CHECK_EQ(status_of(big, &lim), 200);
  /* header section */
  strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\nBig: ");
  memset(big + strlen(big), 'b', 17000);
  strcat(big, "\r\n\r\n");
  CHECK_EQ(status_of(big, NULL), 431);
  lim.max_head = 20000;
  CHECK_EQ(status_of(big, &lim), 200);
  /* number of fields */
  strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\n");
  for (i = 0; i < 100; i++) strcat(big, "A: 1\r\n");
  strcat(big, "\r\n");
  CHECK_EQ(status_of(big, NULL), 431);
  lim.max_headers = 101;
  CHECK_EQ(status_of(big, &lim), 200);
  /* body */
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8388609\r\n\r\n", NULL), 413);
  lim.max_body = 4;
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", &lim), 413);
  CHECK_EQ(status_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nhell", &lim), 200);
  CHECK_EQ(status_of(CHUNKED_HEAD "2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n", &lim), 413);
  CHECK_EQ(status_of(CHUNKED_HEAD "2\r\nhe\r\n2\r\nll\r\n0\r\n\r\n", &lim), 200);
  /* trailers share the header budget */
  lim.max_headers = 2;
  CHECK_EQ(status_of(CHUNKED_HEAD "0\r\nA: 1\r\n\r\n", &lim), 431);
  /* chunk-size line */
  lim.max_chunk_line = 8;
  CHECK_EQ(status_of(CHUNKED_HEAD "1;abcdefgh\r\nx\r\n0\r\n\r\n", &lim), 400);
  /* the caller raises the body limit for one message */
  {
    rm_http_parser *p = rm_http_parser_new(&lim, NULL, NULL);
    const char *in = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    rm_http_event ev;
    long n = rm_http_parse(p, in, strlen(in), &ev);
    CHECK_EQ(ev.type, RM_HTTP_HEAD);
    rm_http_parser_set_max_body(p, 5);
    CHECK_EQ(rm_http_parse(p, in + n, strlen(in) - (size_t)n, &ev), 5);
    CHECK_EQ(ev.type, RM_HTTP_BODY);
    rm_http_parser_free(p);
  }
  CHECK_EQ(rm_http_status_for(RM_ENOMEM), 503);
  CHECK_EQ(rm_http_status_for(RM_HTTP_ERANGE), 416);
}

static void test_flags(void) {
  static transcript t;
  parse_whole("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", NULL, &t);
  CHECK(strstr(t.text, "flags=1 ") != NULL);
  parse_whole("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n", NULL, &t);
  CHECK(strstr(t.text, "flags=0 ") != NULL);
  parse_whole("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", NULL, &t);
  CHECK(strstr(t.text, "flags=1 ") != NULL); /* Upgrade without Connection: upgrade */
  parse_whole("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c, WebSocket\r\n\r\n", NULL, &t);
  CHECK(strstr(t.text, "flags=9 ") != NULL);
  parse_whole("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", NULL, &t);
  CHECK(strstr(t.text, "flags=0 ") != NULL); /* 1.0 clients never wait */
  {
    rm_http_header h[2] = {{"Host", 4, "x", 1}, {"X-Thing", 7, "y", 1}};
    CHECK(rm_http_header_find(h, 2, "x-THING") == &h[1]);
    CHECK(rm_http_header_find(h, 2, "x-thin") == NULL);
  }
}

static void test_errors_stick(void) {
  rm_http_parser *p = rm_http_parser_new(NULL, NULL, NULL);
  rm_http_event ev;
  const char *in = "GET / HTTP/1.1\r\nA : b\r\n\r\n";
  CHECK_EQ(rm_http_parse(p, in, strlen(in), &ev), RM_HTTP_EBAD);
  CHECK(strcmp(rm_http_parser_error(p), "whitespace before colon") == 0);
  CHECK_EQ(rm_http_parse(p, "", 0, &ev), RM_HTTP_EBAD);
  rm_http_parser_free(p);
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
  RUN(test_transcripts);
  RUN(test_pipelining);
  RUN(test_chunked);
  RUN(test_smuggling);
  RUN(test_limits);
  RUN(test_flags);
  RUN(test_errors_stick);
  return CHECK_DONE();
}
