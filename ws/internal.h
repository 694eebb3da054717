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

/* Fills buf with n bytes from the kernel's random source. */
int rm__ws_random(void *buf, size_t n);

/* Is code one a peer may put in a close frame (RFC 6455 section 7.4)? */
int rm__ws_close_code_valid(int code);

#endif
