/* screen/buf.c: the byte buffer and the little-endian writers every message uses. */
#include <string.h>
#include <time.h>
#include "screen/internal.h"

int rm__buf_reserve(rm__buf *b, size_t more)
{
  size_t cap = b->cap ? b->cap : 4096;
  uint8_t *p;
  if (more > SIZE_MAX / 2 - b->len) return RM_ENOMEM;
  if (b->len + more <= b->cap) return RM_OK;
  while (cap < b->len + more) cap *= 2;
  p = b->alloc(b->ud, b->p, b->cap, cap);
  if (!p) return RM_ENOMEM;
  b->p = p;
  b->cap = cap;
  return RM_OK;
}

int rm__buf_put(rm__buf *b, const void *p, size_t n)
{
  if (rm__buf_reserve(b, n) < 0) return RM_ENOMEM;
  memcpy(b->p + b->len, p, n);
  b->len += n;
  return RM_OK;
}

void rm__buf_free(rm__buf *b)
{
  if (b->p) b->alloc(b->ud, b->p, b->cap, 0);
  b->p = NULL;
  b->len = b->cap = 0;
}

int rm__buf_varint(rm__buf *b, uint32_t v)
{
  if (rm__buf_reserve(b, 5) < 0) return RM_ENOMEM;
  for (; v >= 0x80; v >>= 7) b->p[b->len++] = (uint8_t)(v | 0x80);
  b->p[b->len++] = (uint8_t)v;
  return RM_OK;
}

size_t rm__varint_len(size_t v)
{
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) n++;
  return n;
}

void rm__put16(uint8_t *p, unsigned v)
{
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
}

void rm__put32(uint8_t *p, uint32_t v)
{
  rm__put16(p, v & 0xffff);
  rm__put16(p + 2, v >> 16);
}

/* IEEE 754 double, little-endian: what JavaScript's DataView reads. */
void rm__put_f64(uint8_t *p, double v)
{
  uint64_t u;
  memcpy(&u, &v, 8);
  rm__put32(p, (uint32_t)u);
  rm__put32(p + 4, (uint32_t)(u >> 32));
}

double rm__now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}
