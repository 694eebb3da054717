/* ws/message.c: the reader, which turns the decoder's frames into messages.
 *
 * Data frames of a message pass through the inflater when the message is
 * compressed, then through the UTF-8 check when it is text, and end up either
 * handed out piece by piece (fragment mode) or gathered into one buffer.
 * Control frames go straight out as the decoder reports them, so a ping
 * between two fragments is answered without waiting for the message.
 *
 * A message that arrives in one piece is never copied: the event points into
 * the caller's buffer (or the inflater's chunk).
 */
#include <string.h>
#include "ws/internal.h"

struct rm_ws_reader {
  rm_ws_config cfg;      /* cfg.deflate points to agreed, or is NULL */
  rm_ws_deflate_params agreed;
  rm_ws_decoder dec;
  /* Made by the first compressed message, since zlib's state is tens of
   * kilobytes. When the peer compresses every message afresh (its
   * no_context_takeover) the state is worth nothing between messages: it
   * goes at the first call after the message ended (its output is the
   * event's data until then), so an idle connection holds none. */
  rm_ws_inflater *inf;
  int inf_per_message;
  int inf_done;          /* the message that used it ended */
  int in_message;
  int opcode, compressed; /* of the message being read */
  uint32_t utf8;
  uint64_t frame_len, frame_pos;
  int inflating;         /* the inflater holds input not yet drained */
  int inflating_last;    /* ... and it is the end of the message */
  uint8_t *buf;          /* whole mode: the message so far */
  size_t len, cap;
  int error;
  const char *why;
};

static void init(rm_ws_reader *r, const rm_ws_config *cfg)
{
  memset(r, 0, sizeof *r);
  r->cfg = *cfg;
  if (cfg->deflate) {
    r->agreed = *cfg->deflate;
    r->cfg.deflate = &r->agreed;
    r->inf_per_message = cfg->is_server ? r->agreed.client_no_context_takeover
                                        : r->agreed.server_no_context_takeover;
  }
  rm__ws_decoder_init(&r->dec, cfg);
}

rm_ws_reader *rm_ws_reader_new(const rm_ws_config *cfg)
{
  rm_ws_reader *r = rm__ws_realloc(cfg, NULL, 0, sizeof *r);
  if (r)
    init(r, cfg);
  return r;
}

int rm_ws_reader_idle(const rm_ws_reader *r)
{
  return !r->in_message && !r->inf && !r->error && rm__ws_decoder_idle(&r->dec);
}

void rm_ws_reader_reset(rm_ws_reader *r, const rm_ws_config *cfg)
{
  uint8_t *buf = r->buf;
  size_t cap = r->cap;
  if (cap > RM__WS_KEEP_BUFFER) {
    rm__ws_realloc(&r->cfg, buf, cap, 0);
    buf = NULL;
    cap = 0;
  }
  init(r, cfg);
  r->buf = buf;
  r->cap = cap;
}

void rm_ws_reader_free(rm_ws_reader *r)
{
  if (!r)
    return;
  rm_ws_inflater_free(r->inf);
  rm__ws_realloc(&r->cfg, r->buf, r->cap, 0);
  rm__ws_realloc(&r->cfg, r, sizeof *r, 0);
}

const char *rm_ws_reader_why(const rm_ws_reader *r)
{
  return r->why ? r->why : rm_ws_decoder_why(&r->dec);
}

int rm_ws_reader_busy(const rm_ws_reader *r)
{
  return r->inflating;
}

const rm_ws_config *rm_ws_reader_config(const rm_ws_reader *r)
{
  return &r->cfg;
}

static int fail(rm_ws_reader *r, int err, const char *why)
{
  r->error = err;
  r->why = why;
  return err;
}

static int begin_message(rm_ws_reader *r, const rm_ws_event *de)
{
  if (de->compressed && !r->inf && !(r->inf = rm_ws_inflater_new(&r->cfg)))
    return fail(r, RM_ENOMEM, "out of memory for an inflater");
  r->in_message = 1;
  r->opcode = de->opcode;
  r->compressed = de->compressed;
  r->utf8 = RM_WS_UTF8_ACCEPT;
  r->len = 0;
  if (r->cap > RM__WS_KEEP_BUFFER) {
    rm__ws_realloc(&r->cfg, r->buf, r->cap, 0);
    r->buf = NULL;
    r->cap = 0;
  }
  return RM_OK;
}

/* The decoder and the inflater bound the message by max_message already. */
static int append(rm_ws_reader *r, const uint8_t *p, size_t n)
{
  if (n == 0)
    return RM_OK;
  if (n > r->cap - r->len) {
    size_t cap = r->cap ? r->cap : 256;
    uint8_t *b;
    while (cap - r->len < n)
      cap *= 2;
    if (!(b = rm__ws_realloc(&r->cfg, r->buf, r->cap, cap)))
      return fail(r, RM_ENOMEM, "out of memory for a message");
    r->buf = b;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, p, n);
  r->len += n;
  return RM_OK;
}

/* A piece of message content, inflated already: check it, then hand it out
 * (fragment mode) or keep it until the last piece. */
static int deliver(rm_ws_reader *r, const uint8_t *p, size_t n, int last, rm_ws_event *ev)
{
  if (r->opcode == RM_WS_OP_TEXT &&
      (rm_ws_utf8_validate(&r->utf8, p, n) < 0 || (last && r->utf8 != RM_WS_UTF8_ACCEPT)))
    return fail(r, RM_WS_EBADDATA, "text message is not UTF-8");
  if (!r->cfg.fragment_mode && !last)
    return append(r, p, n);
  if (!last && n == 0)
    return RM_OK;
  if (!r->cfg.fragment_mode && r->len > 0) {
    int err = append(r, p, n);
    if (err < 0)
      return err;
    p = r->buf;
    n = r->len;
  }
  memset(ev, 0, sizeof *ev);
  ev->opcode = r->opcode;
  ev->fin = last;
  ev->last = last;
  ev->compressed = r->compressed;
  ev->frame_len = r->frame_len;
  ev->frame_pos = r->frame_pos;
  ev->data = p ? p : (const uint8_t *)"";
  ev->len = n;
  r->in_message = !last;
  r->inf_done = last && r->compressed && r->inf_per_message;
  return r->cfg.fragment_mode ? RM_WS_EV_DATA : RM_WS_EV_MESSAGE;
}

/* Hands out what the inflater has: an event, RM_OK to go on, or an error. */
static int drain(rm_ws_reader *r, rm_ws_event *ev)
{
  const uint8_t *out;
  int drained, last;
  long n = rm_ws_inflate_next(r->inf, &out, &drained);
  if (n < 0)
    return fail(r, (int)n, n == RM_EFULL ? "inflated message larger than max_message"
                                         : "corrupt compressed data");
  last = drained && r->inflating_last;
  if (drained)
    r->inflating = 0;
  return n > 0 || last ? deliver(r, out, (size_t)n, last, ev) : RM_OK;
}

static void feed_inflater(rm_ws_reader *r, const uint8_t *p, size_t n, int last)
{
  rm_ws_inflate_input(r->inf, p, n, last);
  r->inflating = 1;
  r->inflating_last = last;
}

/* A decoder event about a data frame: an event for the caller, RM_OK to go
 * on, or an error. */
static int on_frame(rm_ws_reader *r, int kind, const rm_ws_event *de, rm_ws_event *ev)
{
  r->frame_len = de->frame_len;
  r->frame_pos = de->frame_pos;
  if (kind == RM_WS_EV_HEADER)
    return r->in_message ? RM_OK : begin_message(r, de);
  if (kind == RM_WS_EV_DATA) {
    if (!r->compressed)
      return deliver(r, de->data, de->len, de->fin && de->frame_pos == de->frame_len, ev);
    feed_inflater(r, de->data, de->len, 0);
    return RM_OK;
  }
  /* FRAME_END: only the end of a message matters here, and only if no DATA
   * event has ended it already. */
  if (!de->fin)
    return RM_OK;
  if (r->compressed)
    feed_inflater(r, NULL, 0, 1);
  else if (de->frame_len == 0)
    return deliver(r, NULL, 0, 1, ev);
  return RM_OK;
}

int rm_ws_read(rm_ws_reader *r, uint8_t *buf, size_t n, size_t *used, rm_ws_event *ev)
{
  rm_ws_event de;
  size_t u;
  int k;
  *used = 0;
  if (r->inf_done) {
    rm_ws_inflater_free(r->inf);
    r->inf = NULL;
    r->inf_done = 0;
  }
  for (;;) {
    if (r->error)
      return r->error;
    while (r->inflating)
      if ((k = drain(r, ev)) != RM_OK)
        return k;
    k = rm_ws_decode(&r->dec, buf + *used, n - *used, &u, &de);
    *used += u;
    if (k != RM_WS_EV_HEADER && k != RM_WS_EV_DATA && k != RM_WS_EV_FRAME_END) {
      if (k > 0)
        *ev = de;
      return k;
    }
    if ((k = on_frame(r, k, &de, ev)) != RM_OK)
      return k;
  }
}
