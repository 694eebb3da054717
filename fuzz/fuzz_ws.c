/* fuzz/fuzz_ws.c: a libFuzzer harness for the WebSocket codec (ws/).
 *
 * Build and run from the repository root:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -Iinclude -I. \
 *     fuzz/fuzz_ws.c ws/deflate.c ws/frame.c ws/handshake.c ws/message.c \
 *     ws/negotiate.c ws/utf8.c -lmbedcrypto -lz -o build/fuzz_ws
 *   build/fuzz_ws fuzz/corpus/ws
 *
 * Input: byte 0 picks the configuration (role, permessage-deflate and its
 * parameters, fragment mode), byte 1 the slice size the stream is fed in, and
 * the rest is the stream itself. The same bytes also go, as a string, through
 * the handshake and negotiation parsers, and through a deflate/inflate round
 * trip. Beyond "no crash, no leak", the harness traps when a result breaks a
 * promise: a text message that is not UTF-8, a close code that may not be
 * received, a round trip that changes the data.
 */
#include <stdlib.h>
#include <string.h>
#include "remora/ws.h"

static void must(int cond)
{
  if (!cond)
    __builtin_trap();
}

static void check_event(int kind, const rm_ws_event *ev)
{
  uint32_t st = RM_WS_UTF8_ACCEPT;
  must(ev->len == 0 || ev->data != NULL);
  if (kind == RM_WS_EV_MESSAGE && ev->opcode == RM_WS_OP_TEXT)
    must(rm_ws_utf8_validate(&st, ev->data, ev->len) == RM_OK && st == RM_WS_UTF8_ACCEPT);
  if (kind == RM_WS_EV_CLOSE)
    must(ev->close_code == RM_WS_CLOSE_NO_STATUS || (ev->close_code >= 1000 && ev->close_code < 5000));
  if (kind == RM_WS_EV_PING || kind == RM_WS_EV_PONG || kind == RM_WS_EV_CLOSE)
    must(ev->len <= RM_WS_MAX_CONTROL);
}

static void read_stream(const rm_ws_config *cfg, uint8_t *buf, size_t n, size_t step)
{
  rm_ws_reader *r = rm_ws_reader_new(cfg);
  size_t off = 0;
  int k = RM_WS_NEED_MORE;
  if (!r)
    return;
  while (k >= 0 && off < n) {
    size_t end = off + step < n ? off + step : n, used;
    rm_ws_event ev;
    while ((k = rm_ws_read(r, buf + off, end - off, &used, &ev)) > 0) {
      off += used;
      check_event(k, &ev);
    }
    off += used;
    must(k < 0 || off == end);
  }
  if (k < 0)
    must(rm_ws_close_code(k) >= 1002 && rm_ws_close_code(k) <= 1011);
  rm_ws_reader_free(r);
}

static void round_trip(const rm_ws_config *cfg, const uint8_t *in, size_t n)
{
  rm_ws_config peer = *cfg;
  rm_ws_deflater *z = rm_ws_deflater_new(cfg);
  rm_ws_inflater *i;
  const uint8_t *out;
  size_t len, got = 0;
  int drained = 0;
  peer.is_server = !cfg->is_server;
  i = rm_ws_inflater_new(&peer);
  if (z && i) {
    for (int m = 0; m < 2; m++) { /* twice: the second may use the first's context */
      must(rm_ws_deflate(z, in, n, 1, &out, &len) == RM_OK);
      rm_ws_inflate_input(i, out, len, 1);
      got = 0;
      do {
        const uint8_t *chunk;
        long k = rm_ws_inflate_next(i, &chunk, &drained);
        must(k >= 0 && got + (size_t)k <= n && memcmp(chunk, in + got, (size_t)k) == 0);
        got += (size_t)k;
      } while (!drained);
      must(got == n);
    }
  }
  rm_ws_deflater_free(z);
  rm_ws_inflater_free(i);
}

static void parse_strings(const uint8_t *data, size_t size)
{
  char *s = malloc(size + 1), out[RM_WS_EXTENSION_MAX], accept[RM_WS_ACCEPT_LEN + 1];
  rm_ws_deflate_params a, want = {0};
  const char *name;
  size_t len;
  int code;
  const char *reason;
  memcpy(s, data, size);
  s[size] = '\0';
  if (rm_ws_deflate_accept(s, NULL, &a, out, sizeof out) == 1)
    must(rm_ws_deflate_confirm(out, NULL, &want) == 1); /* our answer satisfies a default offer */
  rm_ws_deflate_confirm(s, NULL, &a);
  if (rm_ws_select_protocol(s, "chat, superchat", &name, &len))
    must(len > 0);
  rm_ws_accept_key(s, accept);
  rm_ws_check_accept(s, s);
  rm_ws_close_parse(data, size, &code, &reason, &len);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  uint8_t flags, *buf;
  rm_ws_deflate_params p;
  rm_ws_config cfg;
  if (size < 2)
    return 0;
  flags = data[0];
  p.server_no_context_takeover = flags >> 3 & 1;
  p.client_no_context_takeover = flags >> 4 & 1;
  p.server_max_window_bits = 8 + (flags >> 5);
  p.client_max_window_bits = 15 - (flags >> 5);
  memset(&cfg, 0, sizeof cfg);
  cfg.is_server = flags & 1;
  cfg.deflate = flags & 2 ? &p : NULL;
  cfg.fragment_mode = flags >> 2 & 1;
  cfg.max_frame = 1u << 16;
  cfg.max_message = 1u << 18;
  cfg.inflate_chunk = 1 + data[1] * 64u;
  buf = malloc(size);
  memcpy(buf, data + 2, size - 2);
  read_stream(&cfg, buf, size - 2, data[1] ? data[1] : size);
  free(buf);
  cfg.deflate = &p;
  round_trip(&cfg, data + 2, size - 2);
  parse_strings(data + 2, size - 2);
  return 0;
}
