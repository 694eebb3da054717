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

/* ---- response ---- */

/* Field values are checked eight bytes at a time: a control byte is refused
 * wherever it falls in a long value, in requests and in answers alike, and
 * tabs and obs-text are kept. */
static void test_value_bytes(void) {
  static const char bad[] = {'\x01', '\x7f', '\n', '\r', '\x1f'};
  static transcript t;
  char req[128], value[40], head[256];
  rm_http_head w;
  for (size_t b = 0; b < sizeof bad; b++) {
    for (size_t at = 0; at < 24; at++) {
      memset(value, 'v', 24);
      value[24] = '\0';
      value[at] = bad[b];
      snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: x\r\nA: %s\r\n\r\n", value);
      CHECK_EQ(status_of(req, NULL), 400);
      rm_http_head_begin(&w, head, sizeof head, 200, NULL);
      rm_http_head_add(&w, "A", value, 24);
      CHECK_EQ(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0), RM_EINVAL);
    }
  }
  parse_whole("GET / HTTP/1.1\r\nHost: x\r\nA: \tone\ttwo three \x80\xff four\t \r\n\r\n", NULL, &t);
  CHECK(t.err == 0 && strstr(t.text, "[A=one\ttwo three \x80\xff four]") != NULL);
  const char *kept = "one\ttwo three \x80\xff four";
  memset(head, 0, sizeof head);
  rm_http_head_begin(&w, head, sizeof head, 200, NULL);
  rm_http_head_add(&w, "A", kept, strlen(kept));
  CHECK(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0) > 0 && strstr(head, "A: one\ttwo three \x80\xff four\r\n"));
}

/* Names compare without case, and only letters fold: '[' is not '{'. */
static void test_case_folding(void) {
  const rm_http_header h[] = {{"Content-LENGTH", 14, "1", 1}, {"[", 1, "2", 1}, {"a\0", 2, "3", 1}};
  CHECK(rm_http_header_find(h, 3, "content-length") == &h[0]);
  CHECK(rm_http_header_find(h, 3, "content-lengt") == NULL);
  CHECK(rm_http_header_find(h, 3, "{") == NULL);
  CHECK(rm_http_header_find(h, 3, "[") == &h[1]);
  CHECK(rm_http_header_find(h, 3, "a") == NULL);
  CHECK(rm_http_has_token("foo, Keep-Alive", 15, "keep-alive"));
  CHECK(!rm_http_has_token("foo, Keep-Alivf", 15, "keep-alive"));
}

static void test_head_writer(void) {
  char buf[256], small[20];
  rm_http_head w;
  long n;
  rm_http_head_begin(&w, buf, sizeof buf, 404, NULL);
  rm_http_head_add(&w, "Content-Type", "text/plain", 10);
  n = rm_http_head_end(&w, RM_HTTP_FRAME_LENGTH, 5);
  CHECK(n > 0 && memcmp(buf, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                             "Content-Length: 5\r\n\r\n", (size_t)n) == 0);
  rm_http_head_begin(&w, buf, sizeof buf, 200, "Fine");
  n = rm_http_head_end(&w, RM_HTTP_FRAME_CHUNKED, 0);
  CHECK(n > 0 && memcmp(buf, "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\n\r\n", (size_t)n) == 0);
  /* no injection through names or values */
  rm_http_head_begin(&w, buf, sizeof buf, 200, NULL);
  rm_http_head_add(&w, "X", "a\r\nSet-Cookie: evil", 19);
  CHECK_EQ(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0), RM_EINVAL);
  rm_http_head_begin(&w, buf, sizeof buf, 200, NULL);
  rm_http_head_add(&w, "Bad Name", "v", 1);
  CHECK_EQ(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0), RM_EINVAL);
  rm_http_head_begin(&w, buf, sizeof buf, 200, "OK\r\nX: y");
  CHECK_EQ(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0), RM_EINVAL);
  rm_http_head_begin(&w, small, sizeof small, 200, NULL);
  rm_http_head_add(&w, "Server", "remora", 6);
  CHECK_EQ(rm_http_head_end(&w, RM_HTTP_FRAME_NONE, 0), RM_EFULL);
  CHECK(strcmp(rm_http_reason(431), "Request Header Fields Too Large") == 0);
  CHECK(strcmp(rm_http_reason(299), "Unknown") == 0);
  {
    char ch[RM_HTTP_CHUNK_HEADER_MAX];
    CHECK_EQ(rm_http_chunk_header(ch, 0x1a2b), 6);
    CHECK(strcmp(ch, "1a2b\r\n") == 0);
    CHECK_EQ(rm_http_chunk_header(ch, UINT64_MAX), 18);
  }
}

static void test_dates(void) {
  char d[RM_HTTP_DATE_LEN + 1];
  time_t t;
  rm_http_date_cache c;
  CHECK_EQ(rm_http_date_format(784111777, d), RM_OK);
  CHECK(strcmp(d, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
  CHECK_EQ(rm_http_date_parse(d, strlen(d), &t), RM_OK);
  CHECK_EQ(t, 784111777);
  CHECK_EQ(rm_http_date_format(951782400, d), RM_OK); /* a leap day */
  CHECK(strcmp(d, "Tue, 29 Feb 2000 00:00:00 GMT") == 0);
  CHECK_EQ(rm_http_date_parse(d, strlen(d), &t), RM_OK);
  CHECK_EQ(t, 951782400);
  CHECK_EQ(rm_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", 30, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun Nov  6 08:49:37 1994", 24, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun, 06 Nox 1994 08:49:37 GMT", 29, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun, 31 Nov 1994 08:49:37 GMT", 29, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun, 06 Nov 1994 24:49:37 GMT", 29, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun, 06 Nov 1994 08:49:37 UTC", 29, &t), RM_HTTP_EBAD);
  CHECK_EQ(rm_http_date_parse("Sun, 0x Nov 1994 08:49:37 GMT", 29, &t), RM_HTTP_EBAD);
  memset(&c, 0, sizeof c);
  CHECK(strcmp(rm_http_date_cached(&c, 0), "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
  CHECK(rm_http_date_cached(&c, 0) == c.text);
  CHECK(strcmp(rm_http_date_cached(&c, 784111777), "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
}

/* ---- URLs ---- */

static long decode(const char *in, int form, char *out) {
  long n = rm_http_percent_decode(in, strlen(in), out, 64, form);
  if (n >= 0) out[n] = '\0';
  return n;
}

static void test_percent(void) {
  char out[64], small[2];
  CHECK_EQ(decode("a%20b%2Fc%e2%82%AC", 0, out), 8);
  CHECK(strcmp(out, "a b/c\xe2\x82\xac") == 0);
  CHECK_EQ(decode("a+b", 0, out), 3);
  CHECK(strcmp(out, "a+b") == 0);
  CHECK_EQ(decode("a+b%2B", 1, out), 4);
  CHECK(strcmp(out, "a b+") == 0);
  CHECK_EQ(decode("%00", 0, out), RM_EINVAL);
  CHECK_EQ(decode("%", 0, out), RM_EINVAL);
  CHECK_EQ(decode("%4", 0, out), RM_EINVAL);
  CHECK_EQ(decode("%4g", 0, out), RM_EINVAL);
  CHECK_EQ(decode("%%41", 0, out), RM_EINVAL);
  CHECK_EQ(rm_http_percent_decode("a\0b", 3, out, 64, 0), RM_EINVAL);
  CHECK_EQ(rm_http_percent_decode("abc", 3, small, 2, 0), RM_EFULL);
  {
    char inplace[] = "x%41y";
    CHECK_EQ(rm_http_percent_decode(inplace, 5, inplace, 5, 0), 3);
    CHECK(memcmp(inplace, "xAy", 3) == 0);
  }
}

static const char *norm(const char *in, unsigned flags, char *out) {
  long n = rm_http_path_normalize(in, strlen(in), out, 256, flags);
  if (n < 0) return n == RM_EINVAL ? "EINVAL" : "ERR";
  out[n] = '\0';
  return out;
}

static void test_paths(void) {
  static const char *cases[][2] = {
    {"/", "/"}, {"/a/b", "/a/b"}, {"/a/b/", "/a/b/"}, {"/a/./b", "/a/b"}, {"/a/b/..", "/a/"},
    {"/a/b/../c", "/a/c"}, {"//a///b", "/a/b"}, {"/a/.", "/a/"}, {"/./", "/"}, {"/a/..", "/"},
    {"/%61%62", "/ab"}, {"/a/%2e%2E/b", "/b"}, {"/a/%2e/b", "/a/b"}, {"/..", "EINVAL"},
    {"/../etc/passwd", "EINVAL"}, {"/a/../../etc", "EINVAL"}, {"/%2e%2e/etc", "EINVAL"},
    {"/a/%2e%2e/%2e%2e/x", "EINVAL"}, {"/a%2fb", "EINVAL"}, {"/a%2F..%2F..%2Fx", "EINVAL"},
    {"/a%00.html", "EINVAL"}, {"/a\\..\\b", "EINVAL"}, {"/a%5c..%5cb", "EINVAL"},
    {"/..\\x", "EINVAL"}, {"a/b", "EINVAL"}, {"", "EINVAL"}, {"/a%0a", "EINVAL"},
    {"/a%zz", "EINVAL"}, {"/.hidden", "/.hidden"}, {"/a/..b", "/a/..b"}, {"/...", "/..."},
    {"/a\x01" "b", "EINVAL"}, {"/a/b\x7f", "EINVAL"}, {"/plain/name.lsp", "/plain/name.lsp"},
  };
  char out[256];
  size_t i;
  for (i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *got = norm(cases[i][0], 0, out);
    if (strcmp(got, cases[i][1]) != 0) {
      printf("  %s -> %s, expected %s\n", cases[i][0], got, cases[i][1]);
      CHECK(0);
    }
  }
  CHECK(strcmp(norm("/.git/config", RM_HTTP_PATH_NO_HIDDEN, out), "EINVAL") == 0);
  CHECK(strcmp(norm("/a/%2egit", RM_HTTP_PATH_NO_HIDDEN, out), "EINVAL") == 0);
  CHECK(strcmp(norm("/a/./b/../c", RM_HTTP_PATH_NO_HIDDEN, out), "/a/c") == 0);
  CHECK_EQ(rm_http_path_normalize("/abc", 4, out, 4, 0), RM_EFULL);
}

static void test_forms_and_cookies(void) {
  rm_http_slice path, query, k, v;
  const char *t = "/s/p?q=a+b&&x&y=%41=&=z#frag", *cur, *end;
  char key[16], val[16];
  rm_http_target_split(t, strlen(t), &path, &query);
  CHECK(path.len == 4 && memcmp(path.p, "/s/p", 4) == 0);
  CHECK(query.len == 18 && memcmp(query.p, "q=a+b&&x&y=%41=&=z", 18) == 0);
  cur = query.p;
  end = query.p + query.len;
  CHECK(rm_http_form_next(&cur, end, &k, &v) == 1);
  CHECK(rm_http_percent_decode(k.p, k.len, key, sizeof key, 1) == 1 && key[0] == 'q');
  CHECK(rm_http_percent_decode(v.p, v.len, val, sizeof val, 1) == 3 && memcmp(val, "a b", 3) == 0);
  CHECK(rm_http_form_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 1 && k.p[0] == 'x' && v.len == 0);
  CHECK(rm_http_form_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 1 && v.len == 4 && memcmp(v.p, "%41=", 4) == 0);
  CHECK(rm_http_form_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 0 && v.len == 1 && v.p[0] == 'z');
  CHECK(rm_http_form_next(&cur, end, &k, &v) == 0);
  rm_http_target_split("/x", 2, &path, &query);
  CHECK(path.len == 2 && query.len == 0);

  t = "sid=abc; theme=\"dark\";junk; empty=; =x;  a = b ";
  cur = t;
  end = t + strlen(t);
  CHECK(rm_http_cookie_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 3 && memcmp(k.p, "sid", 3) == 0 && v.len == 3 && memcmp(v.p, "abc", 3) == 0);
  CHECK(rm_http_cookie_next(&cur, end, &k, &v) == 1);
  CHECK(v.len == 4 && memcmp(v.p, "dark", 4) == 0);
  CHECK(rm_http_cookie_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 5 && v.len == 0);
  CHECK(rm_http_cookie_next(&cur, end, &k, &v) == 1);
  CHECK(k.len == 1 && k.p[0] == 'a' && v.len == 1 && v.p[0] == 'b');
  CHECK(rm_http_cookie_next(&cur, end, &k, &v) == 0);

  CHECK(rm_http_param("text/html; charset=\"utf-8\"", 26, "charset", &v) == 1);
  CHECK(v.len == 5 && memcmp(v.p, "utf-8", 5) == 0);
  CHECK(rm_http_param("a; filename*=x; filename=y", 26, "filename", &v) == 1 && v.p[0] == 'y');
  CHECK(rm_http_param("a; b=\"unterminated", 18, "b", &v) == RM_HTTP_EBAD);
  CHECK(rm_http_param("a; b", 4, "b", &v) == RM_HTTP_EBAD);
  CHECK(rm_http_param("a", 1, "b", &v) == 0);
  CHECK(rm_http_has_token("a, B ,c", 7, "b"));
  CHECK(!rm_http_has_token("ab, bc", 6, "b"));
}

/* ---- multipart ---- */

#define MP_TYPE "multipart/form-data; boundary=XyZ"
static const char mp_body[] =
  "preamble\r\n--XyZ\r\n"
  "Content-Disposition: form-data; name=\"title\"\r\n\r\n"
  "hello\r\n--X\r\n--XyZ  \r\n"
  "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
  "Content-Type: text/plain\r\n\r\n"
  "line1\r\nline2\r\r\n-\r\n--XyZ\r\n"
  "content-disposition: form-data; name=empty\r\n\r\n"
  "\r\n--XyZ--\r\nepilogue";

/* Feeds body in steps of step bytes; returns the transcript or an error. */
static int mp_feed(const char *body, size_t len, size_t step, char *out, size_t cap) {
  rm_http_multipart *m;
  char *buf = malloc(len + 1);
  size_t have = 0, fed = 0, o = 0;
  int r = rm_http_multipart_new(&m, MP_TYPE, strlen(MP_TYPE), NULL, NULL, NULL), done = 0;
  out[0] = '\0';
  if (r < 0) {
    free(buf);
    return r;
  }
  while (!done && (fed < len || have)) {
    size_t k = len - fed < step ? len - fed : step;
    memcpy(buf + have, body + fed, k);
    have += k;
    fed += k;
    for (;;) {
      rm_http_event ev;
      long n = rm_http_multipart_parse(m, buf, have, &ev);
      if (n < 0) {
        r = (int)n;
        goto out;
      }
      if (ev.type == RM_HTTP_PART) {
        const rm_http_part *p = rm_http_multipart_part(m);
        o += (size_t)snprintf(out + o, cap - o, "[%.*s|%.*s|%.*s]", (int)p->name.len, p->name.p,
                              p->filename.p ? (int)p->filename.len : 1, p->filename.p ? p->filename.p : "-",
                              p->content_type.p ? (int)p->content_type.len : 1,
                              p->content_type.p ? p->content_type.p : "-");
      } else if (ev.type == RM_HTTP_BODY) {
        o += (size_t)snprintf(out + o, cap - o, "%.*s", (int)ev.len, ev.data);
      } else if (ev.type == RM_HTTP_DONE) {
        o += (size_t)snprintf(out + o, cap - o, "(done)");
        done = 1;
      }
      memmove(buf, buf + n, have - (size_t)n);
      have -= (size_t)n;
      if (ev.type == RM_HTTP_AGAIN || done) break;
    }
    if (fed == len && !done) break;
  }
out:
  rm_http_multipart_free(m);
  free(buf);
  return r;
}

static void test_multipart(void) {
  char whole[1024], part[1024];
  size_t step;
  CHECK_EQ(mp_feed(mp_body, sizeof mp_body - 1, sizeof mp_body, whole, sizeof whole), RM_OK);
  CHECK(strcmp(whole, "[title|-|-]hello\r\n--X[file|a.txt|text/plain]line1\r\nline2\r\r\n-"
                      "[empty|-|-](done)") == 0);
  for (step = 1; step < 12; step++) {
    CHECK_EQ(mp_feed(mp_body, sizeof mp_body - 1, step, part, sizeof part), RM_OK);
    CHECK(strcmp(whole, part) == 0);
  }
  {
    const char *b = "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nxx\r\n--XyZ--";
    CHECK_EQ(mp_feed(b, strlen(b), 1, part, sizeof part), RM_OK);
    CHECK(strcmp(part, "[a|-|-]xx(done)") == 0);
    b = "--XyZ\r\nContent-Disposition: form-data\r\n\r\nxx\r\n--XyZ--"; /* unnamed */
    CHECK_EQ(mp_feed(b, strlen(b), 1, part, sizeof part), RM_HTTP_EBAD);
    b = "--XyZ\r\nContent-Disposition: attachment; name=a\r\n\r\nxx\r\n--XyZ--";
    CHECK_EQ(mp_feed(b, strlen(b), 3, part, sizeof part), RM_HTTP_EBAD);
    b = "--XyZx\r\nContent-Disposition: form-data; name=a\r\n\r\n"; /* not a delimiter */
    CHECK_EQ(mp_feed(b, strlen(b), 1, part, sizeof part), RM_HTTP_EBAD);
    b = "--XyZ\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    {
      rm_http_multipart *m;
      rm_http_multipart_limits lim = {0, 2};
      rm_http_event ev;
      CHECK_EQ(rm_http_multipart_new(&m, MP_TYPE, strlen(MP_TYPE), &lim, NULL, NULL), RM_OK);
      CHECK_EQ(rm_http_multipart_parse(m, b, strlen(b), &ev), RM_HTTP_EHEAD);
      rm_http_multipart_free(m);
    }
  }
  {
    rm_http_multipart *m;
    CHECK_EQ(rm_http_multipart_new(&m, "text/plain; boundary=a", 22, NULL, NULL, NULL), RM_HTTP_EBAD);
    CHECK_EQ(rm_http_multipart_new(&m, "multipart/form-data", 19, NULL, NULL, NULL), RM_HTTP_EBAD);
    CHECK_EQ(rm_http_multipart_new(&m, "multipart/form-data; boundary=\"\"", 32, NULL, NULL, NULL), RM_HTTP_EBAD);
    CHECK_EQ(rm_http_multipart_new(&m, "Multipart/Form-Data; boundary=\"a b\"", 35, NULL, NULL, NULL), RM_OK);
    rm_http_multipart_free(m);
  }
}

/* ---- static files ---- */

static int range(const char *v, uint64_t size, uint64_t *a, uint64_t *b) {
  return rm_http_range(v, strlen(v), size, a, b);
}

static void test_range(void) {
  uint64_t a = 0, b = 0;
  CHECK(range("bytes=0-99", 1000, &a, &b) == 1 && a == 0 && b == 99);
  CHECK(range("bytes=500-", 1000, &a, &b) == 1 && a == 500 && b == 999);
  CHECK(range("bytes=-100", 1000, &a, &b) == 1 && a == 900 && b == 999);
  CHECK(range("bytes=-5000", 1000, &a, &b) == 1 && a == 0 && b == 999);
  CHECK(range("bytes=900-5000", 1000, &a, &b) == 1 && a == 900 && b == 999);
  CHECK(range("BYTES=1-1", 1000, &a, &b) == 1 && a == 1 && b == 1);
  CHECK(range("bytes=0-99999999999999999999999", 10, &a, &b) == 1 && b == 9);
  CHECK_EQ(range("bytes=1000-", 1000, &a, &b), RM_HTTP_ERANGE);
  CHECK_EQ(range("bytes=99999999999999999999999-", 1000, &a, &b), RM_HTTP_ERANGE);
  CHECK_EQ(range("bytes=-0", 1000, &a, &b), RM_HTTP_ERANGE);
  CHECK_EQ(range("bytes=0-0", 0, &a, &b), RM_HTTP_ERANGE);
  CHECK_EQ(range("bytes=-1", 0, &a, &b), RM_HTTP_ERANGE);
  CHECK_EQ(range("bytes=5-1", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=0-1,5-6", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=-", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=a-b", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=1-2x", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes=--1", 1000, &a, &b), 0);
  CHECK_EQ(range("items=0-1", 1000, &a, &b), 0);
  CHECK_EQ(range("bytes 0-1", 1000, &a, &b), 0);
}

static void test_validators(void) {
  char tag[40];
  long n = rm_http_etag(tag, sizeof tag, 0x1234, 0x5678);
  CHECK(n == 11 && strcmp(tag, "\"1234-5678\"") == 0);
  CHECK_EQ(rm_http_etag(tag, 5, 1, 1), RM_EFULL);
  CHECK(rm_http_etag_match("\"1234-5678\"", 11, tag, (size_t)n));
  CHECK(rm_http_etag_match("\"x\", W/\"1234-5678\"", 18, tag, (size_t)n));
  CHECK(rm_http_etag_match("*", 1, tag, (size_t)n));
  CHECK(!rm_http_etag_match("\"1234-567\"", 10, tag, (size_t)n));
  CHECK(!rm_http_etag_match("1234-5678", 9, tag, (size_t)n));
  CHECK(rm_http_not_modified("Sun, 06 Nov 1994 08:49:37 GMT", 29, 784111777));
  CHECK(rm_http_not_modified("Sun, 06 Nov 1994 08:49:37 GMT", 29, 784111776));
  CHECK(!rm_http_not_modified("Sun, 06 Nov 1994 08:49:37 GMT", 29, 784111778));
  CHECK(!rm_http_not_modified("yesterday", 9, 0));
  CHECK(strcmp(rm_http_mime_type("/a/index.HTML", 13), "text/html; charset=utf-8") == 0);
  CHECK(strcmp(rm_http_mime_type("page.lsp", 8), "text/html; charset=utf-8") == 0);
  CHECK(strcmp(rm_http_mime_type("x.woff2", 7), "font/woff2") == 0);
  CHECK(strcmp(rm_http_mime_type("x.tar.gz", 8), "application/gzip") == 0);
  CHECK(strcmp(rm_http_mime_type("x.unknown", 9), "application/octet-stream") == 0);
  CHECK(strcmp(rm_http_mime_type("/dir.js/file", 12), "application/octet-stream") == 0);
  CHECK(strcmp(rm_http_mime_type("js", 2), "application/octet-stream") == 0);
}

/* ---- the caller's allocator ---- */

typedef struct counting {
  long live;    /* bytes held */
  int fail_at;  /* the allocation number that fails; 0: none */
  int calls;
} counting;

static void *count_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  counting *c = ud;
  if (ptr) c->live -= (long)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (++c->calls == c->fail_at) return NULL;
  ptr = realloc(ptr, nsize);
  if (ptr) c->live += (long)nsize;
  return ptr;
}

static void test_allocator(void) {
  counting c = {0, 0, 0};
  rm_http_parser *p = rm_http_parser_new(NULL, count_alloc, &c);
  rm_http_event ev;
  static char in[4096];
  int i;
  strcpy(in, "GET / HTTP/1.1\r\nHost: x\r\n");
  for (i = 0; i < 40; i++) strcat(in, "A: 1\r\n"); /* grows the field table twice */
  strcat(in, "\r\n");
  CHECK(rm_http_parse(p, in, strlen(in), &ev) > 0);
  CHECK_EQ(rm_http_parser_request(p)->nheaders, 41);
  CHECK(rm_http_parser_request(p)->headers[40].value[0] == '1');
  rm_http_parser_free(p);
  CHECK_EQ(c.live, 0);
  c.calls = 0;
  c.fail_at = 3; /* the second growth of the table */
  p = rm_http_parser_new(NULL, count_alloc, &c);
  CHECK_EQ(rm_http_parse(p, in, strlen(in), &ev), RM_ENOMEM);
  rm_http_parser_free(p);
  CHECK_EQ(c.live, 0);
  c.calls = 0;
  c.fail_at = 1;
  CHECK(rm_http_parser_new(NULL, count_alloc, &c) == NULL);
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
  RUN(test_value_bytes);
  RUN(test_case_folding);
  RUN(test_head_writer);
  RUN(test_dates);
  RUN(test_percent);
  RUN(test_paths);
  RUN(test_forms_and_cookies);
  RUN(test_multipart);
  RUN(test_range);
  RUN(test_validators);
  RUN(test_allocator);
  return CHECK_DONE();
}
