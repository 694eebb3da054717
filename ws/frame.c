/* ws/frame.c: the framing layer (RFC 6455 section 5): the incremental
 * decoder, the header encoder, masking, and close payloads.
 *
 * The decoder is a small state machine fed arbitrary slices of the byte
 * stream. A frame header (2 to 14 bytes) is collected in a little array and
 * checked as soon as each part is known; data payload is then unmasked in
 * place and handed out piece by piece, so a frame of any size streams through
 * without being buffered. Control payloads (at most 125 bytes) are collected
 * whole, because a close frame must be checked as a unit.
 */
#include <stddef.h>
#include <string.h>
#include "ws/internal.h"

int rm_ws_close_code(int err)
{
  switch (err) {
  case RM_WS_EPROTOCOL: return RM_WS_CLOSE_PROTOCOL;
  case RM_WS_EBADDATA: return RM_WS_CLOSE_BAD_DATA;
  case RM_EFULL: return RM_WS_CLOSE_TOO_BIG;
  default: return RM_WS_CLOSE_INTERNAL;
  }
}

int rm__ws_close_code_valid(int code)
{
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

void rm__ws_decoder_init(rm_ws_decoder *d, const rm_ws_config *cfg)
{
  memset(d, 0, sizeof *d);
  d->is_server = cfg->is_server != 0;
  d->deflate = cfg->deflate != NULL;
  d->max_frame = rm__ws_limit(cfg->max_frame);
  d->max_message = rm__ws_limit(cfg->max_message);
  d->head_need = 2;
}

int rm__ws_decoder_idle(const rm_ws_decoder *d)
{
  return d->state == RM__WS_ST_HEAD && d->head_len == 0 && !d->in_message && !d->error;
}

/* A decoder on its own keeps the allocator in front of it, to be freed. */
typedef struct alone {
  rm_ws_config cfg;
  rm_ws_decoder d;
} alone;

rm_ws_decoder *rm_ws_decoder_new(const rm_ws_config *cfg)
{
  alone *a = rm__ws_realloc(cfg, NULL, 0, sizeof *a);
  if (!a)
    return NULL;
  a->cfg = *cfg;
  a->cfg.deflate = NULL;
  rm__ws_decoder_init(&a->d, cfg);
  return &a->d;
}

void rm_ws_decoder_free(rm_ws_decoder *d)
{
  alone *a;
  if (!d)
    return;
  a = (alone *)((char *)d - offsetof(alone, d));
  rm__ws_realloc(&a->cfg, a, sizeof *a, 0);
}

const char *rm_ws_decoder_why(const rm_ws_decoder *d)
{
  return d->why;
}

static int fail(rm_ws_decoder *d, int err, const char *why)
{
  d->error = err;
  d->why = why;
  return err;
}

static int is_control(int opcode)
{
  return opcode & 0x8;
}

/* The first two bytes: flags, opcode, mask bit, 7-bit length. */
static int check_start(rm_ws_decoder *d)
{
  uint8_t b0 = d->head[0], b1 = d->head[1];
  unsigned len7 = b1 & 0x7f;
  d->fin = b0 >> 7;
  d->rsv1 = (b0 >> 6) & 1;
  d->opcode = b0 & 0x0f;
  d->masked = b1 >> 7;
  if (b0 & 0x30)
    return fail(d, RM_WS_EPROTOCOL, "RSV2 or RSV3 set");
  if (d->opcode > RM_WS_OP_BINARY && d->opcode < RM_WS_OP_CLOSE)
    return fail(d, RM_WS_EPROTOCOL, "reserved data opcode");
  if (d->opcode > RM_WS_OP_PONG)
    return fail(d, RM_WS_EPROTOCOL, "reserved control opcode");
  if (d->masked != d->is_server)
    return fail(d, RM_WS_EPROTOCOL, d->is_server ? "client frame not masked" : "server frame masked");
  if (is_control(d->opcode)) {
    if (!d->fin)
      return fail(d, RM_WS_EPROTOCOL, "fragmented control frame");
    if (len7 > RM_WS_MAX_CONTROL)
      return fail(d, RM_WS_EPROTOCOL, "control frame longer than 125 bytes");
    if (d->rsv1)
      return fail(d, RM_WS_EPROTOCOL, "RSV1 on a control frame");
  } else if (d->opcode == RM_WS_OP_CONT) {
    if (!d->in_message)
      return fail(d, RM_WS_EPROTOCOL, "continuation frame without a message");
    if (d->rsv1)
      return fail(d, RM_WS_EPROTOCOL, "RSV1 on a continuation frame");
  } else {
    if (d->in_message)
      return fail(d, RM_WS_EPROTOCOL, "new message inside a fragmented one");
    if (d->rsv1 && !d->deflate)
      return fail(d, RM_WS_EPROTOCOL, "RSV1 without permessage-deflate");
  }
  d->head_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (d->masked ? 4 : 0);
  return RM_OK;
}

/* The whole header is in: length, mask, size limits. */
static int check_length(rm_ws_decoder *d)
{
  const uint8_t *p = d->head + 2;
  unsigned len7 = d->head[1] & 0x7f, i, n = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  uint64_t len = n ? 0 : len7;
  for (i = 0; i < n; i++)
    len = len << 8 | p[i];
  if (n == 8 && (p[0] & 0x80))
    return fail(d, RM_WS_EPROTOCOL, "64-bit length with the high bit set");
  if (d->masked)
    memcpy(d->mask, p + n, 4);
  d->frame_len = len;
  d->frame_pos = 0;
  if (is_control(d->opcode))
    return RM_OK;
  if (len > d->max_frame)
    return fail(d, RM_EFULL, "frame larger than max_frame");
  if (d->opcode != RM_WS_OP_CONT) {
    d->msg_opcode = d->opcode;
    d->msg_rsv1 = d->rsv1;
    d->msg_len = 0;
  }
  if (len > d->max_message - d->msg_len)
    return fail(d, RM_EFULL, "message larger than max_message");
  d->msg_len += len;
  d->in_message = !d->fin;
  return RM_OK;
}

/* Collects header bytes from buf[*pos..n), checking each part as it is
 * complete, so an error comes with the byte that causes it. */
static int take_head(rm_ws_decoder *d, const uint8_t *buf, size_t n, size_t *pos)
{
  int err;
  while (*pos < n && d->head_len < d->head_need) {
    /* head_need is 2 until the first two bytes are checked, then the rest */
    size_t k = d->head_need - d->head_len;
    if (k > n - *pos)
      k = n - *pos;
    memcpy(d->head + d->head_len, buf + *pos, k);
    d->head_len += (uint8_t)k;
    *pos += k;
    if (d->head_len == 2 && (err = check_start(d)) < 0)
      return err;
  }
  return d->head_len == d->head_need ? check_length(d) : RM_OK;
}

static void fill_frame(const rm_ws_decoder *d, rm_ws_event *ev)
{
  memset(ev, 0, sizeof *ev);
  ev->opcode = is_control(d->opcode) ? d->opcode : d->msg_opcode;
  ev->fin = d->fin;
  ev->compressed = !is_control(d->opcode) && d->msg_rsv1;
  ev->frame_len = d->frame_len;
  ev->frame_pos = d->frame_pos;
}

static int finish_control(rm_ws_decoder *d, rm_ws_event *ev)
{
  int err;
  size_t n = (size_t)d->frame_len;
  fill_frame(d, ev);
  ev->data = d->control;
  ev->len = n;
  switch (d->opcode) {
  case RM_WS_OP_PING: return RM_WS_EV_PING;
  case RM_WS_OP_PONG: return RM_WS_EV_PONG;
  default:
    err = rm_ws_close_parse(d->control, n, &ev->close_code, &ev->reason, &ev->reason_len);
    if (err < 0)
      return fail(d, err, err == RM_WS_EBADDATA ? "close reason not UTF-8" : "invalid close payload");
    d->state = RM__WS_ST_CLOSED;
    return RM_WS_EV_CLOSE;
  }
}

/* One step of the state machine: consumes *pos.. and may report an event. */
static int step(rm_ws_decoder *d, uint8_t *buf, size_t n, size_t *pos, rm_ws_event *ev)
{
  size_t k;
  int err;
  switch (d->state) {
  case RM__WS_ST_HEAD:
    if ((err = take_head(d, buf, n, pos)) < 0)
      return err;
    if (d->head_len < d->head_need)
      return RM_WS_NEED_MORE;
    d->head_len = 0;
    d->head_need = 2;
    if (!is_control(d->opcode)) {
      d->state = RM__WS_ST_DATA;
      fill_frame(d, ev);
      return RM_WS_EV_HEADER;
    }
    if (d->frame_len > 0) {
      d->state = RM__WS_ST_CONTROL;
      return RM_WS_NEED_MORE;
    }
    return finish_control(d, ev);
  case RM__WS_ST_DATA:
    if (d->frame_pos == d->frame_len) {
      d->state = RM__WS_ST_HEAD;
      fill_frame(d, ev);
      return RM_WS_EV_FRAME_END;
    }
    k = n - *pos;
    if (k == 0)
      return RM_WS_NEED_MORE;
    if (k > d->frame_len - d->frame_pos)
      k = (size_t)(d->frame_len - d->frame_pos);
    if (d->masked)
      rm_ws_mask(buf + *pos, buf + *pos, k, d->mask, d->frame_pos);
    d->frame_pos += k;
    fill_frame(d, ev);
    ev->data = buf + *pos;
    ev->len = k;
    *pos += k;
    return RM_WS_EV_DATA;
  case RM__WS_ST_CONTROL:
    k = n - *pos;
    if (k == 0)
      return RM_WS_NEED_MORE;
    if (k > d->frame_len - d->frame_pos)
      k = (size_t)(d->frame_len - d->frame_pos);
    memcpy(d->control + d->frame_pos, buf + *pos, k);
    if (d->masked)
      rm_ws_mask(d->control + d->frame_pos, d->control + d->frame_pos, k, d->mask, d->frame_pos);
    d->frame_pos += k;
    *pos += k;
    if (d->frame_pos < d->frame_len)
      return RM_WS_NEED_MORE;
    d->state = RM__WS_ST_HEAD;
    return finish_control(d, ev);
  default: /* RM__WS_ST_CLOSED */
    return *pos < n ? fail(d, RM_ECLOSED, "data after a close frame") : RM_WS_NEED_MORE;
  }
}

int rm_ws_decode(rm_ws_decoder *d, uint8_t *buf, size_t n, size_t *used, rm_ws_event *ev)
{
  int r;
  size_t pos = 0;
  if (d->error)
    return *used = 0, d->error;
  do
    r = step(d, buf, n, &pos, ev);
  while (r == RM_WS_NEED_MORE && pos < n);
  *used = pos;
  return r;
}

/* ---- Encoder ------------------------------------------------------------ */

int rm_ws_encode_header(uint8_t out[RM_WS_MAX_HEADER], int opcode, int flags,
                        uint64_t len, const uint8_t mask[4])
{
  int n = 2, i;
  if (opcode < 0 || opcode > RM_WS_OP_PONG || (opcode > RM_WS_OP_BINARY && opcode < RM_WS_OP_CLOSE) ||
      len >> 63)
    return RM_EINVAL;
  if (is_control(opcode) && (!(flags & RM_WS_FIN) || (flags & RM_WS_RSV1) || len > RM_WS_MAX_CONTROL))
    return RM_EINVAL;
  out[0] = (uint8_t)((flags & RM_WS_FIN ? 0x80 : 0) | (flags & RM_WS_RSV1 ? 0x40 : 0) | opcode);
  if (len < 126) {
    out[1] = (uint8_t)len;
  } else if (len <= 0xffff) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = 127;
    for (i = 0; i < 8; i++)
      out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    n = 10;
  }
  if (mask) {
    out[1] |= 0x80;
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

int rm_ws_new_mask(uint8_t mask[4])
{
  return rm__ws_random(mask, 4);
}

void rm_ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t pos)
{
  uint8_t k[8];
  uint64_t k8, w;
  size_t i;
  /* The key rotated to pos, twice over: XOR eight bytes at a time. Byte
   * order does not matter since both sides go through memcpy. */
  for (i = 0; i < 8; i++)
    k[i] = key[(pos + i) & 3];
  memcpy(&k8, k, 8);
  /* 32 bytes a step: the compiler makes vector operations of it. */
  for (i = 0; i + 32 <= n; i += 32) {
    uint64_t w4[4];
    memcpy(w4, src + i, 32);
    w4[0] ^= k8;
    w4[1] ^= k8;
    w4[2] ^= k8;
    w4[3] ^= k8;
    memcpy(dst + i, w4, 32);
  }
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, src + i, 8);
    w ^= k8;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++)
    dst[i] = src[i] ^ k[i & 3];
}

/* ---- Close payloads ----------------------------------------------------- */

int rm_ws_close_payload(uint8_t out[RM_WS_MAX_CONTROL], int code, const char *reason, size_t reason_len)
{
  uint32_t utf8 = RM_WS_UTF8_ACCEPT;
  if (code == 0)
    return reason_len == 0 ? 0 : RM_EINVAL;
  if (!rm__ws_close_code_valid(code) || reason_len > RM_WS_MAX_CONTROL - 2)
    return RM_EINVAL;
  if (rm_ws_utf8_validate(&utf8, (const uint8_t *)reason, reason_len) < 0 || utf8 != RM_WS_UTF8_ACCEPT)
    return RM_EINVAL;
  out[0] = (uint8_t)(code >> 8);
  out[1] = (uint8_t)code;
  if (reason_len)
    memcpy(out + 2, reason, reason_len);
  return (int)reason_len + 2;
}

int rm_ws_close_parse(const uint8_t *p, size_t n, int *code, const char **reason, size_t *reason_len)
{
  uint32_t utf8 = RM_WS_UTF8_ACCEPT;
  *code = RM_WS_CLOSE_NO_STATUS;
  *reason = "";
  *reason_len = 0;
  if (n == 0)
    return RM_OK;
  if (n == 1)
    return RM_WS_EPROTOCOL;
  *code = p[0] << 8 | p[1];
  if (!rm__ws_close_code_valid(*code))
    return RM_WS_EPROTOCOL;
  if (rm_ws_utf8_validate(&utf8, p + 2, n - 2) < 0 || utf8 != RM_WS_UTF8_ACCEPT)
    return RM_WS_EBADDATA;
  *reason = (const char *)p + 2;
  *reason_len = n - 2;
  return RM_OK;
}
