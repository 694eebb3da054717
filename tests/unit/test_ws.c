/* The WebSocket codec: handshake values, framing rules, UTF-8, permessage-deflate. */
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include "remora/ws.h"
#include "check.h"

/* ---- Helpers ------------------------------------------------------------- */

/* What a reader or decoder reported, payload bytes copied as they came. */
typedef struct got {
  int kinds[64], nkinds;
  int last_flags[64];
  uint64_t frame_pos[64], frame_len[64];
  int opcode, close_code;
  uint8_t *data;
  size_t len, cap;
  int err;
  size_t err_at; /* bytes fed when the error came */
} got;

static void got_free(got *g)
{
  free(g->data);
}

static void got_event(got *g, int kind, const rm_ws_event *ev)
{
  if (g->nkinds < 64) {
    g->last_flags[g->nkinds] = ev->last;
    g->frame_pos[g->nkinds] = ev->frame_pos;
    g->frame_len[g->nkinds] = ev->frame_len;
    g->kinds[g->nkinds++] = kind;
  }
  if (kind == RM_WS_EV_HEADER || kind == RM_WS_EV_FRAME_END)
    return;
  g->opcode = ev->opcode;
  if (kind == RM_WS_EV_CLOSE)
    g->close_code = ev->close_code;
  if (g->len + ev->len > g->cap) {
    g->cap = (g->len + ev->len) * 2 + 64;
    g->data = realloc(g->data, g->cap);
  }
  if (ev->len)
    memcpy(g->data + g->len, ev->data, ev->len);
  g->len += ev->len;
}

/* Feeds in[0..n) to a reader (or a decoder when decoder != 0), step bytes at
 * a time (0: all at once). The input is copied: payload is unmasked in place. */
static int feed(const rm_ws_config *cfg, int decoder, const uint8_t *in, size_t n, size_t step, got *g)
{
  uint8_t *buf = malloc(n + 1);
  rm_ws_reader *r = decoder ? NULL : rm_ws_reader_new(cfg);
  rm_ws_decoder *d = decoder ? rm_ws_decoder_new(cfg) : NULL;
  size_t off = 0;
  memset(g, 0, sizeof *g);
  g->cap = 64;
  g->data = malloc(g->cap);
  memcpy(buf, in, n);
  if (step == 0)
    step = n ? n : 1;
  while (!g->err && off < n) {
    size_t end = off + step < n ? off + step : n;
    for (;;) { /* until NEED_MORE: events may come with no bytes left */
      rm_ws_event ev;
      size_t used;
      int k = decoder ? rm_ws_decode(d, buf + off, end - off, &used, &ev)
                      : rm_ws_read(r, buf + off, end - off, &used, &ev);
      off += used;
      if (k < 0) {
        g->err = k;
        g->err_at = off;
        break;
      }
      if (k == RM_WS_NEED_MORE)
        break;
      got_event(g, k, &ev);
    }
  }
  rm_ws_reader_free(r);
  rm_ws_decoder_free(d);
  free(buf);
  return g->err;
}

/* Appends one frame to out (which must have room); returns its length. */
static size_t frame(uint8_t *out, int opcode, int flags, const void *payload, size_t len, int masked)
{
  uint8_t mask[4];
  int h;
  if (masked)
    rm_ws_new_mask(mask);
  h = rm_ws_encode_header(out, opcode, flags, len, masked ? mask : NULL);
  if (h < 0)
    return 0;
  if (len)
    memcpy(out + h, payload, len);
  if (masked)
    rm_ws_mask(out + h, out + h, len, mask, 0);
  return (size_t)h + len;
}

static int hexval(char c)
{
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* "ce ba" or "ceba" to bytes; returns the count. */
static size_t unhex(const char *s, uint8_t *out)
{
  size_t n = 0;
  while (*s) {
    if (*s == ' ') {
      s++;
      continue;
    }
    out[n++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
    s += 2;
  }
  return n;
}

/* A tiny deterministic generator for sizes and contents. */
static uint32_t rnd(uint32_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

/* An allocator that counts, to see bounds and leaks. */
typedef struct counter {
  size_t cur, peak;
} counter;

static void *counting_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
  counter *c = ud;
  if (p)
    c->cur -= osize;
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  p = realloc(p, nsize);
  if (p) {
    c->cur += nsize;
    if (c->cur > c->peak)
      c->peak = c->cur;
  }
  return p;
}

/* ---- Handshake ---------------------------------------------------------- */

static void test_accept_key(void)
{
  char out[RM_WS_ACCEPT_LEN + 1], key[RM_WS_KEY_LEN + 1], key2[RM_WS_KEY_LEN + 1];
  /* RFC 6455 section 1.3 */
  CHECK_EQ(rm_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), RM_OK);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  CHECK_EQ(rm_ws_accept_key(" dGhlIHNhbXBsZSBub25jZQ== ", out), RM_OK);
  CHECK_EQ(rm_ws_check_accept("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), RM_OK);
  CHECK_EQ(rm_ws_check_accept("dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOp="), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_check_accept("dGhlIHNhbXBsZSBub25jZQ==", ""), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_check_accept("dGhlIHNhbXBsZSBub25jZQ==", NULL), RM_WS_EPROTOCOL);
  /* Keys must be base64 of exactly 16 bytes. */
  CHECK_EQ(rm_ws_accept_key("", out), RM_EINVAL);
  CHECK_EQ(rm_ws_accept_key("dGhlIHNhbXBsZSBub25j", out), RM_EINVAL);
  CHECK_EQ(rm_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ!!", out), RM_EINVAL);
  CHECK_EQ(rm_ws_accept_key("dGhlIHNhbXBsZSBub25jZWU=", out), RM_EINVAL); /* 17 bytes */
  /* Client keys are random and acceptable. */
  CHECK_EQ(rm_ws_client_key(key), RM_OK);
  CHECK_EQ(rm_ws_client_key(key2), RM_OK);
  CHECK_EQ(strlen(key), RM_WS_KEY_LEN);
  CHECK(strcmp(key, key2) != 0);
  CHECK_EQ(rm_ws_accept_key(key, out), RM_OK);
  CHECK_EQ(rm_ws_check_accept(key, out), RM_OK);
}

static void test_select_protocol(void)
{
  const char *name;
  size_t len;
  CHECK_EQ(rm_ws_select_protocol("chat, superchat", "superchat,chat", &name, &len), 1);
  CHECK(len == 9 && memcmp(name, "superchat", 9) == 0);
  CHECK_EQ(rm_ws_select_protocol("chat, superchat", " mqtt , chat ", &name, &len), 1);
  CHECK(len == 4 && memcmp(name, "chat", 4) == 0);
  CHECK_EQ(rm_ws_select_protocol("chatx", "chat", &name, &len), 0);
  CHECK_EQ(rm_ws_select_protocol("Chat", "chat", &name, &len), 0);
  CHECK_EQ(rm_ws_select_protocol("", "chat", &name, &len), 0);
  CHECK_EQ(rm_ws_select_protocol(NULL, "chat", &name, &len), 0);
  CHECK_EQ(rm_ws_select_protocol("a,,b", "b", &name, &len), 1);
}

/* ---- permessage-deflate negotiation ------------------------------------- */

static int server_accepts(const char *offers, const rm_ws_deflate_params *want,
                          rm_ws_deflate_params *agreed, char *resp)
{
  return rm_ws_deflate_accept(offers, want, agreed, resp, RM_WS_EXTENSION_MAX);
}

static void test_deflate_negotiation_server(void)
{
  rm_ws_deflate_params a, want = {0};
  char resp[RM_WS_EXTENSION_MAX];
  CHECK_EQ(server_accepts("permessage-deflate", NULL, &a, resp), 1);
  CHECK(strcmp(resp, "permessage-deflate") == 0);
  CHECK(!a.server_no_context_takeover && !a.client_no_context_takeover);
  CHECK_EQ(a.server_max_window_bits, 15);
  CHECK_EQ(a.client_max_window_bits, 15);

  CHECK_EQ(server_accepts("permessage-deflate; client_max_window_bits; server_no_context_takeover",
                          NULL, &a, resp), 1);
  CHECK(strcmp(resp, "permessage-deflate; server_no_context_takeover") == 0);
  CHECK(a.server_no_context_takeover);

  want.client_max_window_bits = 10;
  want.client_no_context_takeover = 1;
  want.server_max_window_bits = 12;
  CHECK_EQ(server_accepts("permessage-deflate; client_max_window_bits", &want, &a, resp), 1);
  CHECK(strcmp(resp, "permessage-deflate; client_no_context_takeover; server_max_window_bits=12; "
                     "client_max_window_bits=10") == 0);
  CHECK_EQ(a.client_max_window_bits, 10);
  /* Without the client's consent its window stays at 15. */
  CHECK_EQ(server_accepts("permessage-deflate", &want, &a, resp), 1);
  CHECK_EQ(a.client_max_window_bits, 15);
  CHECK(strstr(resp, "client_max_window_bits") == NULL);

  /* The offer's limits win when smaller; quoted values are tokens too. */
  CHECK_EQ(server_accepts("permessage-deflate; server_max_window_bits=\"9\"; client_max_window_bits=8",
                          NULL, &a, resp), 1);
  CHECK_EQ(a.server_max_window_bits, 9);
  CHECK_EQ(a.client_max_window_bits, 8);
  CHECK(strcmp(resp, "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8") == 0);

  /* Invalid offers are declined, and the next one is tried. */
  const char *bad[] = {
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=1O",
    "permessage-deflate; client_max_window_bits=",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; unknown_parameter",
    "permessage-deflate; server_max_window_bits=\"1\"0",
    "permessage-deflate;",
    "x-webkit-deflate-frame",
    ";",
    "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char offers[200];
    int r = server_accepts(bad[i], NULL, &a, resp);
    if (r != 0)
      printf("  accepted: %s\n", bad[i]);
    CHECK_EQ(r, 0);
    snprintf(offers, sizeof offers, "%s, permessage-deflate; client_no_context_takeover", bad[i]);
    r = server_accepts(offers, NULL, &a, resp);
    if (r != 1 || strcmp(resp, "permessage-deflate; client_no_context_takeover") != 0)
      printf("  fallback failed after: %s\n", bad[i]);
    CHECK_EQ(r, 1);
  }
  /* An unterminated quote swallows the rest of the list. */
  CHECK_EQ(server_accepts("permessage-deflate; x=\"a, permessage-deflate", NULL, &a, resp), 0);
  CHECK_EQ(server_accepts(NULL, NULL, &a, resp), 0);
  CHECK_EQ(rm_ws_deflate_accept("permessage-deflate; server_no_context_takeover", NULL, &a, resp, 20),
           RM_EINVAL);
}

static void test_deflate_negotiation_client(void)
{
  rm_ws_deflate_params want = {0}, a, sa;
  char offer[RM_WS_EXTENSION_MAX], resp[RM_WS_EXTENSION_MAX];
  CHECK_EQ(rm_ws_deflate_offer(NULL, offer, sizeof offer), RM_OK);
  CHECK(strcmp(offer, "permessage-deflate; client_max_window_bits") == 0);
  CHECK_EQ(rm_ws_deflate_confirm(NULL, NULL, &a), 0);
  CHECK_EQ(rm_ws_deflate_confirm("", NULL, &a), 0);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate", NULL, &a), 1);
  CHECK_EQ(a.server_max_window_bits, 15);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
                                 NULL, &a), 1);
  CHECK_EQ(a.client_max_window_bits, 9);
  CHECK_EQ(a.server_max_window_bits, 10);
  /* What the client must refuse. */
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; client_max_window_bits", NULL, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate, permessage-deflate", NULL, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("x-other", NULL, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; bogus", NULL, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; server_max_window_bits=16", NULL, &a), RM_WS_EPROTOCOL);
  want.server_max_window_bits = 10;
  want.client_max_window_bits = 11;
  want.client_no_context_takeover = 1;
  CHECK_EQ(rm_ws_deflate_offer(&want, offer, sizeof offer), RM_OK);
  CHECK(strcmp(offer, "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; "
                      "client_max_window_bits=11") == 0);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; server_max_window_bits=12", &want, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; client_max_window_bits=12", &want, &a), RM_WS_EPROTOCOL);
  CHECK_EQ(rm_ws_deflate_confirm("permessage-deflate; server_max_window_bits=10", &want, &a), 1);
  CHECK(a.client_no_context_takeover);
  CHECK_EQ(a.client_max_window_bits, 11);
  /* Both ends of a negotiation agree. */
  CHECK_EQ(rm_ws_deflate_accept(offer, NULL, &sa, resp, sizeof resp), 1);
  CHECK_EQ(rm_ws_deflate_confirm(resp, &want, &a), 1);
  CHECK(memcmp(&a, &sa, sizeof a) == 0);
  CHECK_EQ(rm_ws_deflate_offer(&want, offer, 10), RM_EINVAL);
}

/* ---- Framing: RFC 6455 section 5.7 -------------------------------------- */

static void check_rfc_frame(const char *hex, int is_server, int kind, int opcode, const char *payload)
{
  uint8_t in[32];
  size_t n = unhex(hex, in);
  rm_ws_config cfg = {.is_server = is_server};
  got g;
  for (size_t step = 0; step <= 1; step++) {
    CHECK_EQ(feed(&cfg, 0, in, n, step, &g), RM_OK);
    CHECK_EQ(g.nkinds, 1);
    CHECK_EQ(g.kinds[0], kind);
    CHECK_EQ(g.opcode, opcode);
    CHECK(g.len == strlen(payload) && memcmp(g.data, payload, g.len) == 0);
    got_free(&g);
  }
}

static void test_rfc_examples(void)
{
  uint8_t *big = malloc(65536 + 20);
  rm_ws_config client = {0}, frag = {.fragment_mode = 1};
  got g;
  size_t step;
  check_rfc_frame("81 05 48 65 6c 6c 6f", 0, RM_WS_EV_MESSAGE, RM_WS_OP_TEXT, "Hello");
  check_rfc_frame("81 85 37 fa 21 3d 7f 9f 4d 51 58", 1, RM_WS_EV_MESSAGE, RM_WS_OP_TEXT, "Hello");
  check_rfc_frame("01 03 48 65 6c 80 02 6c 6f", 0, RM_WS_EV_MESSAGE, RM_WS_OP_TEXT, "Hello");
  check_rfc_frame("89 05 48 65 6c 6c 6f", 0, RM_WS_EV_PING, RM_WS_OP_PING, "Hello");
  check_rfc_frame("8a 85 37 fa 21 3d 7f 9f 4d 51 58", 1, RM_WS_EV_PONG, RM_WS_OP_PONG, "Hello");

  /* The decoder's view of the fragmented one: two frames. */
  {
    uint8_t in[16];
    size_t n = unhex("01 03 48 65 6c 80 02 6c 6f", in);
    for (step = 0; step <= 1; step++) {
      CHECK_EQ(feed(&client, 1, in, n, step, &g), RM_OK);
      CHECK_EQ(g.kinds[0], RM_WS_EV_HEADER);
      CHECK_EQ(g.kinds[g.nkinds - 1], RM_WS_EV_FRAME_END);
      CHECK(g.len == 5 && memcmp(g.data, "Hello", 5) == 0);
      got_free(&g);
    }
  }

  /* 256 bytes (16-bit length) and 64 KiB (64-bit length). */
  for (int big_one = 0; big_one <= 1; big_one++) {
    size_t len = big_one ? 65536 : 256, h = big_one ? 10 : 4;
    uint8_t *want = big + h;
    big[0] = 0x82;
    if (big_one)
      memcpy(big + 1, "\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 9);
    else
      memcpy(big + 1, "\x7e\x01\x00", 3);
    for (size_t i = 0; i < len; i++)
      want[i] = (uint8_t)(i * 7);
    for (step = 0; step <= 1; step++) {
      CHECK_EQ(feed(&client, 0, big, h + len, step, &g), RM_OK);
      CHECK_EQ(g.nkinds, 1);
      CHECK_EQ(g.kinds[0], RM_WS_EV_MESSAGE);
      CHECK_EQ(g.opcode, RM_WS_OP_BINARY);
      CHECK(g.len == len && memcmp(g.data, want, len) == 0);
      got_free(&g);
    }
    /* In fragment mode, byte by byte, the frame streams out in pieces. */
    CHECK_EQ(feed(&frag, 0, big, h + len, 1, &g), RM_OK);
    CHECK(g.nkinds > 1);
    CHECK(g.len == len && memcmp(g.data, want, len) == 0);
    CHECK_EQ(g.frame_len[0], len);
    CHECK_EQ(g.frame_pos[0], 1);
    CHECK(g.last_flags[g.nkinds < 64 ? g.nkinds - 1 : 63] || g.nkinds == 64);
    got_free(&g);
  }
  free(big);
}

/* ---- Framing errors ----------------------------------------------------- */

typedef struct bad_case {
  const char *hex;
  int is_server, deflate;
  int err;
} bad_case;

static void test_protocol_errors(void)
{
  static const bad_case cases[] = {
    {"a1 00", 0, 0, RM_WS_EPROTOCOL},                /* RSV2 */
    {"91 00", 0, 0, RM_WS_EPROTOCOL},                /* RSV3 */
    {"c1 00", 0, 0, RM_WS_EPROTOCOL},                /* RSV1 without deflate */
    {"41 01 00 c0 00", 0, 1, RM_WS_EPROTOCOL},       /* RSV1 on a continuation */
    {"c9 00", 0, 1, RM_WS_EPROTOCOL},                /* RSV1 on a ping */
    {"83 00", 0, 0, RM_WS_EPROTOCOL},                /* opcodes 3..7 */
    {"87 00", 0, 0, RM_WS_EPROTOCOL},
    {"8b 00", 0, 0, RM_WS_EPROTOCOL},                /* opcodes B..F */
    {"8f 00", 0, 0, RM_WS_EPROTOCOL},
    {"89 7e 00 7e", 0, 0, RM_WS_EPROTOCOL},          /* ping of 126 bytes */
    {"09 00", 0, 0, RM_WS_EPROTOCOL},                /* fragmented ping */
    {"08 00", 0, 0, RM_WS_EPROTOCOL},                /* fragmented close */
    {"80 00", 0, 0, RM_WS_EPROTOCOL},                /* continuation, no message */
    {"00 00", 0, 0, RM_WS_EPROTOCOL},
    {"01 00 81 00", 0, 0, RM_WS_EPROTOCOL},          /* text inside a text */
    {"02 00 89 00 82 00", 0, 0, RM_WS_EPROTOCOL},    /* binary inside a binary */
    {"81 00", 1, 0, RM_WS_EPROTOCOL},                /* server: unmasked */
    {"81 80 00 00 00 00", 0, 0, RM_WS_EPROTOCOL},    /* client: masked */
    {"82 7f 80 00 00 00 00 00 00 00", 0, 0, RM_WS_EPROTOCOL}, /* 64-bit MSB */
    {"88 01 03", 0, 0, RM_WS_EPROTOCOL},             /* close of 1 byte */
    {"88 02 00 00", 0, 0, RM_WS_EPROTOCOL},          /* close codes */
    {"88 02 03 e7", 0, 0, RM_WS_EPROTOCOL},          /* 999 */
    {"88 02 03 ec", 0, 0, RM_WS_EPROTOCOL},          /* 1004 */
    {"88 02 03 ed", 0, 0, RM_WS_EPROTOCOL},          /* 1005 */
    {"88 02 03 ee", 0, 0, RM_WS_EPROTOCOL},          /* 1006 */
    {"88 02 03 f7", 0, 0, RM_WS_EPROTOCOL},          /* 1015 */
    {"88 02 03 f8", 0, 0, RM_WS_EPROTOCOL},          /* 1016 */
    {"88 02 07 d0", 0, 0, RM_WS_EPROTOCOL},          /* 2000 */
    {"88 02 0b b7", 0, 0, RM_WS_EPROTOCOL},          /* 2999 */
    {"88 02 13 88", 0, 0, RM_WS_EPROTOCOL},          /* 5000 */
    {"88 02 ff ff", 0, 0, RM_WS_EPROTOCOL},
    {"88 04 03 e8 c0 af", 0, 0, RM_WS_EBADDATA},     /* reason not UTF-8 */
    {"88 03 03 e8 ce", 0, 0, RM_WS_EBADDATA},        /* reason cut inside a character */
    {"81 02 c0 af", 0, 0, RM_WS_EBADDATA},           /* text not UTF-8 */
    {"81 01 ce", 0, 0, RM_WS_EBADDATA},              /* text ends inside a character */
    {"01 01 ce 89 00 80 01 20", 0, 0, RM_WS_EBADDATA},/* ... across fragments */
    {"c1 02 ff ff", 0, 1, RM_WS_EBADDATA},           /* corrupt deflate data */
    {"88 00 81 00", 0, 0, RM_ECLOSED},               /* data after close */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint8_t in[64];
    size_t n = unhex(cases[i].hex, in);
    rm_ws_deflate_params p = {0};
    rm_ws_config cfg = {.is_server = cases[i].is_server, .deflate = cases[i].deflate ? &p : NULL};
    int want = cases[i].err;
    got g;
    for (size_t step = 0; step <= 1; step++) {
      int r = feed(&cfg, 0, in, n, step, &g);
      if (r != want)
        printf("  case %zu (%s) step %zu: %d (%s)\n", i, cases[i].hex, step, r,
               r ? "error" : "accepted");
      CHECK_EQ(r, want);
      got_free(&g);
    }
  }
  CHECK_EQ(rm_ws_close_code(RM_WS_EPROTOCOL), 1002);
  CHECK_EQ(rm_ws_close_code(RM_WS_EBADDATA), 1007);
  CHECK_EQ(rm_ws_close_code(RM_EFULL), 1009);
  CHECK_EQ(rm_ws_close_code(RM_ENOMEM), 1011);
}

static void test_valid_close_codes(void)
{
  static const int codes[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                              3000, 3999, 4000, 4999};
  rm_ws_config cfg = {0};
  got g;
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    uint8_t in[8] = {0x88, 0x02, (uint8_t)(codes[i] >> 8), (uint8_t)codes[i]};
    CHECK_EQ(feed(&cfg, 0, in, 4, 1, &g), RM_OK);
    CHECK_EQ(g.kinds[0], RM_WS_EV_CLOSE);
    CHECK_EQ(g.close_code, codes[i]);
    got_free(&g);
  }
  /* A reason in Greek is fine. */
  CHECK_EQ(feed(&cfg, 0, (const uint8_t *)"\x88\x04\x03\xe8\xce\xba", 6, 1, &g), RM_OK);
  CHECK_EQ(g.close_code, 1000);
  CHECK(g.len == 4 && memcmp(g.data + 2, "\xce\xba", 2) == 0);
  got_free(&g);
  /* No code at all reads as 1005. */
  CHECK_EQ(feed(&cfg, 0, (const uint8_t *)"\x88\x00", 2, 0, &g), RM_OK);
  CHECK_EQ(g.close_code, RM_WS_CLOSE_NO_STATUS);
  got_free(&g);
}

static void test_limits(void)
{
  uint8_t buf[600], payload[300] = {0};
  size_t n;
  got g;
  rm_ws_config cfg = {.is_server = 1, .max_frame = 100, .max_message = 250};
  /* A frame over max_frame is refused from its header alone. */
  n = frame(buf, RM_WS_OP_BINARY, RM_WS_FIN, payload, 101, 1);
  CHECK_EQ(feed(&cfg, 0, buf, n, 1, &g), RM_EFULL);
  CHECK_EQ(g.err_at, 6); /* with the header's last byte, before any payload */
  got_free(&g);
  n = frame(buf, RM_WS_OP_BINARY, RM_WS_FIN, payload, 100, 1);
  CHECK_EQ(feed(&cfg, 0, buf, n, 0, &g), RM_OK);
  got_free(&g);
  /* Fragments add up against max_message. */
  n = frame(buf, RM_WS_OP_BINARY, 0, payload, 100, 1);
  n += frame(buf + n, RM_WS_OP_CONT, 0, payload, 100, 1);
  n += frame(buf + n, RM_WS_OP_CONT, RM_WS_FIN, payload, 51, 1);
  CHECK_EQ(feed(&cfg, 0, buf, n, 0, &g), RM_EFULL);
  CHECK_EQ(rm_ws_close_code(g.err), 1009);
  got_free(&g);
  n = frame(buf, RM_WS_OP_BINARY, 0, payload, 100, 1);
  n += frame(buf + n, RM_WS_OP_CONT, 0, payload, 100, 1);
  n += frame(buf + n, RM_WS_OP_CONT, RM_WS_FIN, payload, 50, 1);
  CHECK_EQ(feed(&cfg, 0, buf, n, 0, &g), RM_OK);
  CHECK_EQ(g.len, 250);
  got_free(&g);
  /* Non-minimal lengths are legal: 5 bytes in a 16-bit and a 64-bit length. */
  {
    uint8_t in[32];
    rm_ws_config client = {0};
    n = unhex("81 7e 00 05 48 65 6c 6c 6f 81 7f 00 00 00 00 00 00 00 05 48 65 6c 6c 6f", in);
    CHECK_EQ(feed(&client, 0, in, n, 1, &g), RM_OK);
    CHECK_EQ(g.nkinds, 2);
    CHECK(g.len == 10 && memcmp(g.data, "HelloHello", 10) == 0);
    got_free(&g);
  }
}

static void test_control_between_fragments(void)
{
  uint8_t in[64];
  size_t n = unhex("01 03 48 65 6c 89 02 68 69 80 02 6c 6f", in);
  rm_ws_config whole = {0}, frag = {.fragment_mode = 1};
  got g;
  /* Whole mode: the ping comes out first, then the message. */
  CHECK_EQ(feed(&whole, 0, in, n, 0, &g), RM_OK);
  CHECK_EQ(g.nkinds, 2);
  CHECK_EQ(g.kinds[0], RM_WS_EV_PING);
  CHECK_EQ(g.kinds[1], RM_WS_EV_MESSAGE);
  CHECK(g.len == 7 && memcmp(g.data, "hiHello", 7) == 0);
  got_free(&g);
  /* Fragment mode: Barracuda's (bytesRead, frameLen) per piece. */
  CHECK_EQ(feed(&frag, 0, in, n, 0, &g), RM_OK);
  CHECK_EQ(g.nkinds, 3);
  CHECK_EQ(g.kinds[0], RM_WS_EV_DATA);
  CHECK_EQ(g.frame_pos[0], 3);
  CHECK_EQ(g.frame_len[0], 3);
  CHECK_EQ(g.last_flags[0], 0);
  CHECK_EQ(g.kinds[1], RM_WS_EV_PING);
  CHECK_EQ(g.kinds[2], RM_WS_EV_DATA);
  CHECK_EQ(g.frame_pos[2], 2);
  CHECK_EQ(g.last_flags[2], 1);
  CHECK(g.len == 7 && memcmp(g.data, "Helhilo", 7) == 0);
  got_free(&g);
  /* Empty messages still arrive, in both modes. */
  n = unhex("81 00 01 00 80 00", in);
  CHECK_EQ(feed(&whole, 0, in, n, 1, &g), RM_OK);
  CHECK_EQ(g.nkinds, 2);
  CHECK_EQ(g.kinds[1], RM_WS_EV_MESSAGE);
  got_free(&g);
  CHECK_EQ(feed(&frag, 0, in, n, 1, &g), RM_OK);
  CHECK_EQ(g.nkinds, 2);
  CHECK(g.last_flags[0] && g.last_flags[1]);
  got_free(&g);
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* The obvious decoder, to check the automaton against. Returns the number of
 * bytes of the first character if p[0..n) starts with a valid one, 0 if it
 * starts with an invalid sequence, -1 if it is a valid but incomplete prefix. */
static int ref_char(const uint8_t *p, size_t n)
{
  uint32_t cp, min;
  int len, i;
  if (p[0] < 0x80)
    return 1;
  if ((p[0] & 0xe0) == 0xc0)
    len = 2, cp = p[0] & 0x1f, min = 0x80;
  else if ((p[0] & 0xf0) == 0xe0)
    len = 3, cp = p[0] & 0x0f, min = 0x800;
  else if ((p[0] & 0xf8) == 0xf0)
    len = 4, cp = p[0] & 0x07, min = 0x10000;
  else
    return 0;
  for (i = 1; i < len; i++) {
    if ((size_t)i >= n) {
      /* Incomplete: valid only if some completion is valid. Try the
       * smallest and largest continuation of each remaining byte. */
      uint8_t t[4];
      memcpy(t, p, n);
      for (uint32_t c = 0x80; c <= 0xbf; c++) {
        for (int k = (int)n; k < len; k++)
          t[k] = (uint8_t)c;
        if (ref_char(t, (size_t)len) == len)
          return -1;
      }
      return 0;
    }
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/* A whole string by the reference: 1 valid, 0 invalid, -1 incomplete. */
static int ref_valid(const uint8_t *p, size_t n)
{
  size_t i = 0;
  while (i < n) {
    int k = ref_char(p + i, n - i);
    if (k <= 0)
      return k;
    i += (size_t)k;
  }
  return 1;
}

static int dfa(const uint8_t *p, size_t n)
{
  uint32_t s = RM_WS_UTF8_ACCEPT;
  if (rm_ws_utf8_validate(&s, p, n) < 0)
    return 0;
  return s == RM_WS_UTF8_ACCEPT ? 1 : -1;
}

static void test_utf8_exhaustive(void)
{
  uint8_t b[4];
  long bad = 0;
  for (uint32_t x = 0; x < 0x1000000; x++) {
    b[0] = (uint8_t)(x >> 16), b[1] = (uint8_t)(x >> 8), b[2] = (uint8_t)x;
    if (x < 0x100 && dfa(b + 2, 1) != ref_valid(b + 2, 1))
      bad++;
    if (x < 0x10000 && dfa(b + 1, 2) != ref_valid(b + 1, 2))
      bad++;
    if (dfa(b, 3) != ref_valid(b, 3))
      bad++;
  }
  /* Four bytes: every lead from F0, with every byte around the continuation range. */
  for (uint32_t l = 0xf0; l <= 0xff; l++)
    for (uint32_t c1 = 0x7f; c1 <= 0xc0; c1++)
      for (uint32_t c2 = 0x7f; c2 <= 0xc0; c2++)
        for (uint32_t c3 = 0x7f; c3 <= 0xc0; c3++) {
          b[0] = (uint8_t)l, b[1] = (uint8_t)c1, b[2] = (uint8_t)c2, b[3] = (uint8_t)c3;
          if (dfa(b, 4) != ref_valid(b, 4))
            bad++;
        }
  CHECK_EQ(bad, 0);
}

/* Autobahn section 6 (after Markus Kuhn's UTF-8 stress test). */
typedef struct utf8_case {
  const char *hex;
  int valid;
} utf8_case;

static const utf8_case autobahn[] = {
  {"", 1},
  {"48656c6c6f2dc2b540c39fc3b6c3a4c3bcc3a0c3a12d5554462d382121", 1}, /* 6.2 */
  {"cebae1bdb9cf83cebcceb5eda080656469746564", 0},                   /* 6.3 */
  {"cebae1bdb9cf83cebcceb5f4908080656469746564", 0},                 /* 6.4 */
  {"cebae1bdb9cf83cebcceb5", 1},                                     /* 6.5 */
  {"00", 1}, {"c280", 1}, {"e0a080", 1}, {"f0908080", 1},            /* 6.7 */
  {"f888808080", 0}, {"fc8480808080", 0},                            /* 6.8 */
  {"7f", 1}, {"dfbf", 1}, {"efbfbf", 1}, {"f48fbfbf", 1},            /* 6.9 */
  {"f7bfbfbf", 0}, {"fbbfbfbfbf", 0}, {"fdbfbfbfbfbf", 0},           /* 6.10 */
  {"ed9fbf", 1}, {"ee8080", 1}, {"efbfbd", 1}, {"f4908080", 0},      /* 6.11 */
  {"80", 0}, {"bf", 0}, {"80bf", 0}, {"80bf80", 0}, {"80bf80bf", 0}, /* 6.12 */
  {"80bf80bf80", 0}, {"80bf80bf80bf", 0},
  {"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
   "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", 0},
  {"c020c120c220c320c420c520c620c720c820c920ca20cb20cc20cd20ce20cf20", 0}, /* 6.13 */
  {"e020e120e220e320e420e520e620e720e820e920ea20eb20ec20ed20ee20ef20", 0},
  {"f020f120f220f320f420f520f620f720", 0},
  {"f820f920fa20fb20", 0}, {"fc20fd20", 0},
  {"c0", 0}, {"e080", 0}, {"f08080", 0}, {"f8808080", 0}, {"fc80808080", 0}, /* 6.14 */
  {"df", 0}, {"efbf", 0}, {"f7bfbf", 0}, {"fbbfbfbf", 0}, {"fdbfbfbfbf", 0},
  {"c0e080f08080f8808080fc80808080dfefbff7bfbffbbfbfbffdbfbfbfbf", 0}, /* 6.15 */
  {"fe", 0}, {"ff", 0}, {"fefeffff", 0},                             /* 6.16 */
  {"c0af", 0}, {"e080af", 0}, {"f08080af", 0}, {"f8808080af", 0},    /* 6.17 */
  {"fc80808080af", 0},
  {"c1bf", 0}, {"e09fbf", 0}, {"f08fbfbf", 0}, {"f887bfbfbf", 0},    /* 6.18 */
  {"fc83bfbfbfbf", 0},
  {"c080", 0}, {"e08080", 0}, {"f0808080", 0}, {"f880808080", 0},    /* 6.19 */
  {"fc8080808080", 0},
  {"eda080", 0}, {"edadbf", 0}, {"edae80", 0}, {"edafbf", 0},        /* 6.20 */
  {"edb080", 0}, {"edbe80", 0}, {"edbfbf", 0},
  {"eda080edb080", 0}, {"eda080edbfbf", 0}, {"edadbfedb080", 0},     /* 6.21 */
  {"edadbfedbfbf", 0}, {"edae80edb080", 0}, {"edae80edbfbf", 0},
  {"edafbfedb080", 0}, {"edafbfedbfbf", 0},
  {"efbfbe", 1}, {"efbfbf", 1}, {"f09fbfbe", 1}, {"f09fbfbf", 1},    /* 6.22 */
  {"f48fbfbe", 1}, {"f48fbfbf", 1}, {"efb790", 1}, {"efb7af", 1},
  {"efbfb9", 1}, {"efbfbd", 1},                                      /* 6.23 */
};

static void test_utf8_autobahn(void)
{
  for (size_t i = 0; i < sizeof autobahn / sizeof *autobahn; i++) {
    uint8_t s[128], frames[300];
    size_t n = unhex(autobahn[i].hex, s), at, fn;
    int bad = 0;
    /* Validator alone, split at every position. */
    for (at = 0; at <= n; at++) {
      uint32_t st = RM_WS_UTF8_ACCEPT;
      int r = rm_ws_utf8_validate(&st, s, at);
      if (r == RM_OK)
        r = rm_ws_utf8_validate(&st, s + at, n - at);
      if ((r == RM_OK && st == RM_WS_UTF8_ACCEPT) != autobahn[i].valid)
        bad++;
    }
    /* Through the reader: a text message of two fragments split at every
     * position, fed byte by byte. */
    for (at = 0; at <= n; at++) {
      rm_ws_config cfg = {.is_server = 1};
      got g;
      fn = frame(frames, RM_WS_OP_TEXT, 0, s, at, 1);
      fn += frame(frames + fn, RM_WS_OP_CONT, RM_WS_FIN, s + at, n - at, 1);
      feed(&cfg, 0, frames, fn, 1, &g);
      if ((g.err == RM_OK) != autobahn[i].valid || (g.err && g.err != RM_WS_EBADDATA))
        bad++;
      got_free(&g);
    }
    if (bad)
      printf("  case %s: %d wrong answers\n", autobahn[i].hex, bad);
    CHECK_EQ(bad, 0);
  }
}

static void test_utf8_fail_fast(void)
{
  /* 6.4.1: kosme, then F4 90 80 80 (above U+10FFFF): certain at the 0x90. */
  uint8_t s[64], frames[128];
  size_t n = unhex("cebae1bdb9cf83cebcceb5f4908080656469746564", s), i;
  uint32_t st = RM_WS_UTF8_ACCEPT;
  rm_ws_config cfg = {.is_server = 1, .fragment_mode = 1};
  got g;
  for (i = 0; i < n; i++)
    if (rm_ws_utf8_validate(&st, s + i, 1) < 0)
      break;
  CHECK_EQ(i, 12);
  /* The reader fails inside the first fragment, the message still unfinished. */
  size_t fn = frame(frames, RM_WS_OP_TEXT, 0, s, 14, 1);
  fn += frame(frames + fn, RM_WS_OP_CONT, RM_WS_FIN, s + 14, n - 14, 1);
  CHECK_EQ(feed(&cfg, 0, frames, fn, 1, &g), RM_WS_EBADDATA);
  CHECK_EQ(g.err_at, 2 + 4 + 13);
  got_free(&g);
}

/* ---- permessage-deflate ------------------------------------------------- */

static void test_deflate_rfc_examples(void)
{
  static const struct {
    const char *hex, *text;
  } cases[] = {
    {"c1 07 f2 48 cd c9 c9 07 00", "Hello"},                            /* 7.2.3.1 */
    {"41 03 f2 48 cd 80 04 c9 c9 07 00", "Hello"},                      /*  fragmented */
    {"c1 07 f2 48 cd c9 c9 07 00 c1 05 f2 00 11 00 00", "HelloHello"},  /* 7.2.3.2 */
    {"c1 0b 00 05 00 fa ff 48 65 6c 6c 6f 00", "Hello"},                /* 7.2.3.3 */
    {"c1 08 f3 48 cd c9 c9 07 00 00", "Hello"},                         /* 7.2.3.4 */
    {"c1 0d f2 48 05 00 00 00 ff ff ca c9 c9 07 00", "Hello"},          /* 7.2.3.5 */
    {"c1 01 00", ""},                                                   /* 7.2.3.6 */
    {"c1 08 f3 48 cd c9 c9 07 00 00 c1 07 f2 48 cd c9 c9 07 00", "HelloHello"},
  };
  rm_ws_deflate_params p = {0};
  rm_ws_config client = {.deflate = &p}, frag = {.deflate = &p, .fragment_mode = 1};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint8_t in[64];
    size_t n = unhex(cases[i].hex, in);
    got g;
    for (size_t step = 0; step <= 1; step++) {
      int r = feed(step ? &frag : &client, 0, in, n, step, &g);
      if (r != RM_OK || g.len != strlen(cases[i].text) || memcmp(g.data, cases[i].text, g.len) != 0)
        printf("  case %zu step %zu: %d, %zu bytes\n", i, step, r, g.len);
      CHECK_EQ(r, RM_OK);
      CHECK(g.len == strlen(cases[i].text) && memcmp(g.data, cases[i].text, g.len) == 0);
      CHECK(g.nkinds > 0 && (g.opcode == RM_WS_OP_TEXT));
      got_free(&g);
    }
  }
  /* zlib compresses "Hello" to the RFC's bytes, sharing the window the 2nd time. */
  {
    rm_ws_config server = {.is_server = 1, .deflate = &p};
    rm_ws_deflater *z = rm_ws_deflater_new(&server);
    const uint8_t *out;
    size_t len;
    CHECK(z != NULL);
    CHECK_EQ(rm_ws_deflate(z, "Hello", 5, 1, &out, &len), RM_OK);
    CHECK(len == 7 && memcmp(out, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7) == 0);
    CHECK_EQ(rm_ws_deflate(z, "Hello", 5, 1, &out, &len), RM_OK);
    CHECK(len == 5 && memcmp(out, "\xf2\x00\x11\x00\x00", 5) == 0);
    CHECK_EQ(rm_ws_deflate(z, "", 0, 1, &out, &len), RM_OK);
    CHECK(len == 1 && out[0] == 0);
    rm_ws_deflater_free(z);
  }
}

/* Client deflates, server inflates: random messages through real frames. */
static void round_trip(const rm_ws_deflate_params *p, int fragmented, uint32_t seed)
{
  rm_ws_config client = {.deflate = p}, server = {.is_server = 1, .deflate = p};
  rm_ws_deflater *z = rm_ws_deflater_new(&client);
  rm_ws_reader *r = rm_ws_reader_new(&server);
  size_t cap = 300000;
  uint8_t *msg = malloc(cap), *wire = malloc(cap * 2);
  int bad = 0;
  CHECK(z && r);
  for (int m = 0; m < 30 && z && r; m++) {
    size_t len = rnd(&seed) % (m % 5 == 4 ? 200000 : 2000), w = 0, used, off = 0;
    size_t cut = fragmented && len ? rnd(&seed) % len : len;
    const uint8_t *out;
    size_t olen;
    int k;
    rm_ws_event ev;
    for (size_t i = 0; i < len; i++) /* compressible text */
      msg[i] = (uint8_t)("abcdefgh \n"[rnd(&seed) % 10] + (i % 100 == 0));
    rm_ws_deflate(z, msg, cut, cut == len, &out, &olen);
    w += frame(wire, RM_WS_OP_TEXT, RM_WS_RSV1 | (cut == len ? RM_WS_FIN : 0), out, olen, 1);
    if (cut < len) {
      rm_ws_deflate(z, msg + cut, len - cut, 1, &out, &olen);
      w += frame(wire + w, RM_WS_OP_CONT, RM_WS_FIN, out, olen, 1);
    }
    k = RM_WS_NEED_MORE;
    while (off < w && k == RM_WS_NEED_MORE) {
      size_t step = 1 + rnd(&seed) % 5000;
      if (step > w - off)
        step = w - off;
      k = rm_ws_read(r, wire + off, step, &used, &ev);
      off += used;
    }
    if (k != RM_WS_EV_MESSAGE || ev.len != len || memcmp(ev.data, msg, len) != 0 || !ev.compressed) {
      printf("  message %d (%zu bytes): event %d, %zu bytes\n", m, len, k, k > 0 ? ev.len : 0);
      bad++;
    }
  }
  CHECK_EQ(bad, 0);
  rm_ws_deflater_free(z);
  rm_ws_reader_free(r);
  free(msg);
  free(wire);
}

static void test_deflate_round_trips(void)
{
  rm_ws_deflate_params p = {0};
  round_trip(&p, 0, 1);
  round_trip(&p, 1, 2);
  p.client_no_context_takeover = 1;
  p.server_no_context_takeover = 1;
  round_trip(&p, 1, 3);
  for (int bits = 8; bits <= 15; bits++) {
    p.client_max_window_bits = p.server_max_window_bits = bits;
    p.client_no_context_takeover = bits & 1;
    round_trip(&p, bits & 1, (uint32_t)bits * 77);
  }
}

/* Compressed text whose characters straddle inflate chunks and frames. */
static void test_deflate_text_chunks(void)
{
  static const size_t chunks[] = {1, 2, 3, 5, 7, 4096};
  size_t n = 0, w, half;
  uint8_t *text = malloc(20000), *wire = malloc(40000), *comp = malloc(40000);
  rm_ws_deflate_params p = {0};
  rm_ws_config client = {.deflate = &p};
  for (int i = 0; i < 1000; i++) {
    memcpy(text + n, i % 3 ? "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" : "\xf0\x9f\x98\x80 ", i % 3 ? 11 : 5);
    n += i % 3 ? 11 : 5;
  }
  for (int bad = 0; bad <= 1; bad++) {
    rm_ws_deflater *z = rm_ws_deflater_new(&client);
    const uint8_t *out;
    size_t olen;
    if (bad) /* a surrogate, well inside the message */
      memcpy(text + n / 4, "\xed\xa0\x80", 3);
    rm_ws_deflate(z, text, n, 1, &out, &olen);
    memcpy(comp, out, olen);
    rm_ws_deflater_free(z);
    half = olen / 2;
    w = frame(wire, RM_WS_OP_TEXT, RM_WS_RSV1, comp, half, 1);
    w += frame(wire + w, RM_WS_OP_CONT, RM_WS_FIN, comp + half, olen - half, 1);
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
      for (int fragment = 0; fragment <= 1; fragment++) {
        rm_ws_config server = {.is_server = 1, .deflate = &p, .inflate_chunk = chunks[c],
                               .fragment_mode = fragment};
        got g;
        int r = feed(&server, 0, wire, w, c < 3 ? 1 : 0, &g);
        if (!bad) {
          CHECK_EQ(r, RM_OK);
          CHECK(g.len == n && memcmp(g.data, text, n) == 0);
        } else {
          CHECK_EQ(r, RM_WS_EBADDATA);
          /* Failed fast: no more than the valid text before the surrogate
           * came out, and (fed byte by byte) the error came before the
           * message's last byte. */
          if (fragment)
            CHECK(g.len <= n / 4 && (c >= 3 || g.err_at < w));
        }
        got_free(&g);
      }
  }
  free(text);
  free(wire);
  free(comp);
}

static void test_context_takeover(void)
{
  /* With context takeover a repeated message shrinks; without, it does not. */
  static const char text[] = "the quick brown fox jumps over the lazy dog, again and again";
  for (int reset = 0; reset <= 1; reset++) {
    rm_ws_deflate_params p = {.server_no_context_takeover = reset};
    rm_ws_config server = {.is_server = 1, .deflate = &p};
    rm_ws_deflater *z = rm_ws_deflater_new(&server);
    const uint8_t *out;
    size_t first, second;
    rm_ws_deflate(z, text, sizeof text - 1, 1, &out, &first);
    rm_ws_deflate(z, text, sizeof text - 1, 1, &out, &second);
    if (reset)
      CHECK_EQ(second, first);
    else
      CHECK(second < first / 2);
    rm_ws_deflater_free(z);
  }
}

static void test_deflate_bomb(void)
{
  /* 100 MiB of zeros is about 100 KB compressed. */
  const size_t total = 100u << 20, piece = 1u << 20;
  rm_ws_deflate_params p = {0};
  rm_ws_config client = {.deflate = &p, .deflate_level = 9};
  counter c = {0, 0};
  rm_ws_config server = {.is_server = 1, .deflate = &p, .alloc = counting_alloc, .alloc_ud = &c};
  rm_ws_deflater *z = rm_ws_deflater_new(&client);
  uint8_t *zeros = calloc(1, piece), *comp = malloc(1u << 20), *wire = malloc((1u << 20) + 14);
  size_t clen = 0, w;
  got g;
  for (size_t done = 0; done < total; done += piece) {
    const uint8_t *out;
    size_t olen;
    rm_ws_deflate(z, zeros, piece, done + piece == total, &out, &olen);
    memcpy(comp + clen, out, olen);
    clen += olen;
  }
  rm_ws_deflater_free(z);
  CHECK(clen < 200000);
  w = frame(wire, RM_WS_OP_BINARY, RM_WS_FIN | RM_WS_RSV1, comp, clen, 1);
  CHECK_EQ(feed(&server, 0, wire, w, 0, &g), RM_EFULL);
  CHECK_EQ(rm_ws_close_code(g.err), 1009);
  got_free(&g);
  /* The default 16 MiB limit was hit holding about one message's worth: */
  CHECK(c.peak < (16u << 20) + (1u << 20));
  /* in fragment mode nothing is gathered, so memory stays tiny. */
  c.peak = 0;
  server.fragment_mode = 1;
  CHECK_EQ(feed(&server, 0, wire, w, 0, &g), RM_EFULL);
  CHECK(c.peak < 200000);
  got_free(&g);
  /* And with a small max_message, whole mode stays small too. */
  c.peak = 0;
  server.fragment_mode = 0;
  server.max_message = 1u << 16;
  CHECK_EQ(feed(&server, 0, wire, w, 0, &g), RM_EFULL);
  CHECK(c.peak < 300000);
  got_free(&g);
  CHECK_EQ(c.cur, 0);
  free(zeros);
  free(comp);
  free(wire);
}

/* ---- Encoder ------------------------------------------------------------ */

static void test_encoder(void)
{
  uint8_t h[RM_WS_MAX_HEADER], mask[4] = {1, 2, 3, 4};
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_TEXT, RM_WS_FIN, 5, NULL), 2);
  CHECK(h[0] == 0x81 && h[1] == 5);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_BINARY, RM_WS_FIN | RM_WS_RSV1, 125, mask), 6);
  CHECK(h[0] == 0xc2 && h[1] == (0x80 | 125) && memcmp(h + 2, mask, 4) == 0);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_BINARY, 0, 126, NULL), 4);
  CHECK(h[0] == 0x02 && h[1] == 126 && h[2] == 0 && h[3] == 126);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_CONT, RM_WS_FIN, 65535, NULL), 4);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_CONT, RM_WS_FIN, 65536, mask), 14);
  CHECK(h[1] == 0xff && h[7] == 1 && h[8] == 0 && h[9] == 0);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_PING, RM_WS_FIN, 125, NULL), 2);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_PING, RM_WS_FIN, 126, NULL), RM_EINVAL);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_PING, 0, 1, NULL), RM_EINVAL);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_CLOSE, RM_WS_FIN | RM_WS_RSV1, 2, NULL), RM_EINVAL);
  CHECK_EQ(rm_ws_encode_header(h, 3, RM_WS_FIN, 0, NULL), RM_EINVAL);
  CHECK_EQ(rm_ws_encode_header(h, 16, RM_WS_FIN, 0, NULL), RM_EINVAL);
  CHECK_EQ(rm_ws_encode_header(h, RM_WS_OP_BINARY, RM_WS_FIN, 1ull << 63, NULL), RM_EINVAL);
}

static void test_mask(void)
{
  uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d}, a[100], b[100], c[100];
  uint32_t seed = 9;
  int fresh = 0;
  for (int i = 0; i < 100; i++)
    a[i] = (uint8_t)rnd(&seed);
  /* Byte by byte, in pieces at odd offsets, in place or not: all agree. */
  for (int i = 0; i < 100; i++)
    b[i] = a[i] ^ key[i % 4];
  rm_ws_mask(c, a, 100, key, 0);
  CHECK(memcmp(b, c, 100) == 0);
  memcpy(c, a, 100);
  rm_ws_mask(c, c, 3, key, 0);
  rm_ws_mask(c + 3, c + 3, 30, key, 3);
  rm_ws_mask(c + 33, c + 33, 67, key, 33);
  CHECK(memcmp(b, c, 100) == 0);
  /* RFC 6455 5.7: "Hello" under 37 fa 21 3d. */
  rm_ws_mask(c, (const uint8_t *)"Hello", 5, key, 0);
  CHECK(memcmp(c, "\x7f\x9f\x4d\x51\x58", 5) == 0);
  for (int i = 0; i < 8; i++) {
    uint8_t m1[4], m2[4];
    rm_ws_new_mask(m1);
    rm_ws_new_mask(m2);
    fresh += memcmp(m1, m2, 4) != 0;
  }
  CHECK(fresh >= 7);
}

static void test_round_trip_random(void)
{
  static const size_t edges[] = {0, 1, 125, 126, 127, 65535, 65536, 65537};
  uint32_t seed = 12345;
  size_t cap = 70000 * 4;
  uint8_t *msg = malloc(cap), *wire = malloc(cap + 64), *want = malloc(cap + 1);
  int bad = 0;
  for (int round = 0; round < 200; round++) {
    rm_ws_config server = {.is_server = 1, .fragment_mode = round & 1};
    size_t len = round < 8 ? edges[round] : rnd(&seed) % (round % 10 == 0 ? 200000 : 3000);
    int opcode = round % 3 ? RM_WS_OP_BINARY : RM_WS_OP_TEXT;
    size_t w = 0, cut = len ? rnd(&seed) % len : 0, step = 1 + rnd(&seed) % 1000;
    got g;
    for (size_t i = 0; i < len; i++)
      msg[i] = opcode == RM_WS_OP_TEXT ? (uint8_t)(32 + rnd(&seed) % 90) : (uint8_t)rnd(&seed);
    if (round % 4 == 3) { /* two fragments with a ping between */
      w = frame(wire, opcode, 0, msg, cut, 1);
      w += frame(wire + w, RM_WS_OP_PING, RM_WS_FIN, "p", 1, 1);
      w += frame(wire + w, RM_WS_OP_CONT, RM_WS_FIN, msg + cut, len - cut, 1);
    } else {
      w = frame(wire, opcode, RM_WS_FIN, msg, len, 1);
    }
    /* The ping's payload shows up before the message (whole mode) or
     * between its pieces (fragment mode). */
    if (round % 4 != 3)
      cut = 0;
    else if (!server.fragment_mode)
      cut = 0;
    memcpy(want, msg, cut);
    want[cut] = 'p';
    memcpy(want + cut + 1, msg + cut, len - cut);
    feed(&server, 0, wire, w, round < 16 ? 1 : step, &g);
    if (g.err || g.opcode != opcode || g.len != len + (round % 4 == 3) ||
        memcmp(g.data, round % 4 == 3 ? want : msg, g.len) != 0)
      bad++;
    got_free(&g);
  }
  CHECK_EQ(bad, 0);
  free(msg);
  free(wire);
  free(want);
}

static void test_close_payload(void)
{
  uint8_t out[RM_WS_MAX_CONTROL];
  char long_reason[124];
  int code;
  const char *reason;
  size_t rlen;
  CHECK_EQ(rm_ws_close_payload(out, 1000, "bye", 3), 5);
  CHECK_EQ(rm_ws_close_parse(out, 5, &code, &reason, &rlen), RM_OK);
  CHECK(code == 1000 && rlen == 3 && memcmp(reason, "bye", 3) == 0);
  CHECK_EQ(rm_ws_close_payload(out, 0, NULL, 0), 0);
  CHECK_EQ(rm_ws_close_payload(out, 0, "x", 1), RM_EINVAL);
  CHECK_EQ(rm_ws_close_payload(out, 1005, NULL, 0), RM_EINVAL);
  CHECK_EQ(rm_ws_close_payload(out, 1006, NULL, 0), RM_EINVAL);
  CHECK_EQ(rm_ws_close_payload(out, 999, NULL, 0), RM_EINVAL);
  CHECK_EQ(rm_ws_close_payload(out, 4999, "\xce\xba", 2), 4);
  CHECK_EQ(rm_ws_close_payload(out, 1000, "\xc0\xaf", 2), RM_EINVAL);
  memset(long_reason, 'a', sizeof long_reason);
  CHECK_EQ(rm_ws_close_payload(out, 1000, long_reason, 123), 125);
  CHECK_EQ(rm_ws_close_payload(out, 1000, long_reason, 124), RM_EINVAL);
  CHECK_EQ(rm_ws_close_parse(out, 0, &code, &reason, &rlen), RM_OK);
  CHECK_EQ(code, RM_WS_CLOSE_NO_STATUS);
  CHECK_EQ(rm_ws_close_parse(out, 1, &code, &reason, &rlen), RM_WS_EPROTOCOL);
}

static void test_allocator(void)
{
  counter c = {0, 0};
  rm_ws_deflate_params p = {0};
  rm_ws_config cfg = {.is_server = 1, .deflate = &p, .alloc = counting_alloc, .alloc_ud = &c};
  rm_ws_reader *r = rm_ws_reader_new(&cfg);
  rm_ws_deflater *z = rm_ws_deflater_new(&cfg);
  const uint8_t *out;
  size_t len;
  CHECK(r && z);
  CHECK(c.cur > 0);
  CHECK_EQ(rm_ws_deflate(z, "Hello", 5, 1, &out, &len), RM_OK);
  rm_ws_reader_free(r);
  rm_ws_deflater_free(z);
  CHECK_EQ(c.cur, 0);
}

/* Reads all of buf[0..n) with r; returns the last event (NEED_MORE when the
 * bytes ended without one). */
static int read_all(rm_ws_reader *r, uint8_t *buf, size_t n, rm_ws_event *ev)
{
  size_t off = 0, used;
  int k;
  do {
    k = rm_ws_read(r, buf + off, n - off, &used, ev);
    off += used;
  } while (k == RM_WS_NEED_MORE && off < n);
  return k;
}

/* An idle reader (between messages, nothing to carry over) may be given to
 * another connection: lws.c keeps none on an idle WebSocket. */
static void test_reader_idle(void)
{
  counter c = {0, 0};
  rm_ws_config server = {.is_server = 1, .alloc = counting_alloc, .alloc_ud = &c};
  rm_ws_config client = {.alloc = counting_alloc, .alloc_ud = &c};
  rm_ws_reader *r = rm_ws_reader_new(&server);
  uint8_t wire[300000], *big = calloc(1, 200000);
  size_t w;
  rm_ws_event ev;
  CHECK(rm_ws_reader_idle(r));
  /* Inside a frame's header, then a fragmented message: not idle. */
  w = frame(wire, RM_WS_OP_TEXT, 0, "ab", 2, 1);
  w += frame(wire + w, RM_WS_OP_CONT, RM_WS_FIN, "cd", 2, 1);
  CHECK_EQ(read_all(r, wire, 1, &ev), RM_WS_NEED_MORE);
  CHECK(!rm_ws_reader_idle(r));
  CHECK_EQ(read_all(r, wire + 1, 7, &ev), RM_WS_NEED_MORE);
  CHECK(!rm_ws_reader_idle(r));
  CHECK_EQ(read_all(r, wire + 8, w - 8, &ev), RM_WS_EV_MESSAGE);
  CHECK(ev.len == 4 && memcmp(ev.data, "abcd", 4) == 0);
  CHECK_EQ(read_all(r, wire, 0, &ev), RM_WS_NEED_MORE);   /* the frame's end */
  CHECK(rm_ws_reader_idle(r));
  /* Reset for a client: unmasked frames are now the right ones. */
  rm_ws_reader_reset(r, &client);
  w = frame(wire, RM_WS_OP_BINARY, RM_WS_FIN, "xyz", 3, 0);
  CHECK_EQ(read_all(r, wire, w, &ev), RM_WS_EV_MESSAGE);
  CHECK(ev.len == 3 && memcmp(ev.data, "xyz", 3) == 0);
  /* A big message split in two grows the message buffer; a reset lets it go. */
  w = frame(wire, RM_WS_OP_BINARY, RM_WS_FIN, big, 200000, 0);
  CHECK_EQ(read_all(r, wire, 1000, &ev), RM_WS_NEED_MORE);
  size_t during = c.cur;
  CHECK_EQ(read_all(r, wire + 1000, w - 1000, &ev), RM_WS_EV_MESSAGE);
  CHECK_EQ(ev.len, 200000);
  CHECK_EQ(read_all(r, wire, 0, &ev), RM_WS_NEED_MORE);
  CHECK(rm_ws_reader_idle(r) && c.cur > during + 100000);
  rm_ws_reader_reset(r, &server);
  CHECK(c.cur < during);
  rm_ws_reader_free(r);
  CHECK_EQ(c.cur, 0);
  /* With the peer's compression context kept, the reader is never idle
   * again after a compressed message; without it, it is. */
  for (int takeover = 0; takeover <= 1; takeover++) {
    rm_ws_deflate_params p = {.client_no_context_takeover = !takeover};
    rm_ws_config cz = {.deflate = &p}, sz = {.is_server = 1, .deflate = &p};
    rm_ws_deflater *z = rm_ws_deflater_new(&cz);
    const uint8_t *out;
    size_t olen;
    r = rm_ws_reader_new(&sz);
    rm_ws_deflate(z, "hello hello", 11, 1, &out, &olen);
    w = frame(wire, RM_WS_OP_TEXT, RM_WS_FIN | RM_WS_RSV1, out, olen, 1);
    CHECK_EQ(read_all(r, wire, w, &ev), RM_WS_EV_MESSAGE);
    CHECK(ev.len == 11 && memcmp(ev.data, "hello hello", 11) == 0);
    CHECK_EQ(read_all(r, wire, 0, &ev), RM_WS_NEED_MORE);
    CHECK_EQ(rm_ws_reader_idle(r), !takeover);
    rm_ws_reader_free(r);
    rm_ws_deflater_free(z);
  }
  free(big);
}

int main(void)
{
  RUN(test_accept_key);
  RUN(test_select_protocol);
  RUN(test_deflate_negotiation_server);
  RUN(test_deflate_negotiation_client);
  RUN(test_rfc_examples);
  RUN(test_protocol_errors);
  RUN(test_valid_close_codes);
  RUN(test_limits);
  RUN(test_control_between_fragments);
  RUN(test_utf8_exhaustive);
  RUN(test_utf8_autobahn);
  RUN(test_utf8_fail_fast);
  RUN(test_deflate_rfc_examples);
  RUN(test_deflate_round_trips);
  RUN(test_deflate_text_chunks);
  RUN(test_context_takeover);
  RUN(test_deflate_bomb);
  RUN(test_encoder);
  RUN(test_mask);
  RUN(test_round_trip_random);
  RUN(test_close_payload);
  RUN(test_allocator);
  RUN(test_reader_idle);
  return CHECK_DONE();
}
