/* ws/internal.h: helpers shared by the files of the WebSocket layer. */
#ifndef REMORA_WS_INTERNAL_H
#define REMORA_WS_INTERNAL_H

#include <stdlib.h>
#include "remora/ws.h"

/* Buffers grown past this for one big message are let go afterwards, so an
 * idle connection does not keep a large message's worth of memory. */
#define RM__WS_KEEP_BUFFER (64u << 10)

/* Memory through the caller's rm_alloc_fn, or the C library's. */
static inline void *rm__ws_realloc(const rm_ws_config *cfg, void *p, size_t osize, size_t nsize)
{
  if (cfg->alloc)
    return cfg->alloc(cfg->alloc_ud, p, osize, nsize);
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

static inline uint64_t rm__ws_limit(uint64_t v)
{
  return v ? v : RM_WS_DEFAULT_LIMIT;
}

/* The decoder's state, here so that the reader can hold one inside itself
 * (one allocation per connection instead of two). */
enum { RM__WS_ST_HEAD, RM__WS_ST_DATA, RM__WS_ST_CONTROL, RM__WS_ST_CLOSED };

struct rm_ws_decoder {
  uint64_t max_frame, max_message;
  uint64_t frame_len, frame_pos;
  uint64_t msg_len;
  uint8_t is_server;    /* received frames must be masked */
  uint8_t deflate;      /* RSV1 is allowed */
  uint8_t state;
  uint8_t head_len, head_need;
  uint8_t opcode, fin, rsv1, masked;
  uint8_t in_message;   /* a fragmented message waits for continuation frames */
  uint8_t msg_opcode, msg_rsv1;
  uint8_t head[RM_WS_MAX_HEADER];
  uint8_t mask[4];
  uint8_t control[RM_WS_MAX_CONTROL];
  int error;
  const char *why;
};

/* Sets up a decoder held inside another object (rm_ws_decoder_new makes one
 * on its own); it owns no memory, so it needs no free. */
void rm__ws_decoder_init(rm_ws_decoder *d, const rm_ws_config *cfg);
/* Between two messages, with no byte of the next frame taken yet. */
int rm__ws_decoder_idle(const rm_ws_decoder *d);

/* Fills buf with n bytes from the kernel's random source. */
int rm__ws_random(void *buf, size_t n);

/* Is code one a peer may put in a close frame (RFC 6455 section 7.4)? */
int rm__ws_close_code_valid(int code);

#endif
