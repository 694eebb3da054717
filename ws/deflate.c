/* ws/deflate.c: permessage-deflate's compressors (RFC 7692 section 7.2).
 *
 * A message is raw DEFLATE data flushed with Z_SYNC_FLUSH, minus the
 * 00 00 ff ff that the flush always ends with; the receiver puts it back.
 * Without context takeover each message starts from an empty window, which
 * for zlib means a reset after every message.
 *
 * Inflating is the dangerous direction: a few kilobytes can expand to
 * gigabytes. Output therefore comes out one fixed-size chunk at a time, and
 * zlib is never given room for more than max_message + 1 bytes per message,
 * so a bomb is refused after one chunk, whatever it would expand to.
 */
#include <limits.h>
#include <string.h>
#include <zlib.h>
#include "ws/internal.h"

#define DEFAULT_CHUNK (16u << 10)

static const uint8_t flush_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* zlib frees without saying the size, which rm_alloc_fn needs: keep it in
 * front of each block. */
typedef union zhead {
  size_t size;
  max_align_t align;
} zhead;

static voidpf zalloc(voidpf opaque, uInt items, uInt size)
{
  zhead *h;
  size_t n;
  if (size && items > (SIZE_MAX - sizeof *h) / size)
    return Z_NULL;
  n = (size_t)items * size + sizeof *h;
  h = rm__ws_realloc(opaque, NULL, 0, n);
  if (!h)
    return Z_NULL;
  h->size = n;
  return h + 1;
}

static void zfree(voidpf opaque, voidpf p)
{
  zhead *h = (zhead *)p - 1;
  rm__ws_realloc(opaque, h, h->size, 0);
}

static int window_bits(int b)
{
  return b >= 8 && b <= 15 ? b : 15;
}

/* ---- Deflater ----------------------------------------------------------- */

struct rm_ws_deflater {
  rm_ws_config cfg;
  z_stream zs;
  int no_context;
  uint8_t *out;
  size_t cap;
};

rm_ws_deflater *rm_ws_deflater_new(const rm_ws_config *cfg)
{
  const rm_ws_deflate_params *p = cfg->deflate;
  rm_ws_deflater *z;
  int bits, level = cfg->deflate_level ? cfg->deflate_level : Z_DEFAULT_COMPRESSION;
  if (!p || !(z = rm__ws_realloc(cfg, NULL, 0, sizeof *z)))
    return NULL;
  memset(z, 0, sizeof *z);
  z->cfg = *cfg;
  z->cfg.deflate = NULL;
  bits = window_bits(cfg->is_server ? p->server_max_window_bits : p->client_max_window_bits);
  z->no_context = cfg->is_server ? p->server_no_context_takeover : p->client_no_context_takeover;
  /* zlib cannot deflate within a 256-byte window. Stored blocks refer to no
   * window at all, so level 0 keeps the promise. */
  if (bits == 8) {
    bits = 9;
    level = 0;
  }
  z->zs.zalloc = zalloc;
  z->zs.zfree = zfree;
  z->zs.opaque = &z->cfg;
  if (deflateInit2(&z->zs, level, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    rm__ws_realloc(cfg, z, sizeof *z, 0);
    return NULL;
  }
  return z;
}

void rm_ws_deflater_free(rm_ws_deflater *z)
{
  if (!z)
    return;
  deflateEnd(&z->zs);
  rm__ws_realloc(&z->cfg, z->out, z->cap, 0);
  rm__ws_realloc(&z->cfg, z, sizeof *z, 0);
}

static int reserve(rm_ws_deflater *z, size_t need)
{
  uint8_t *p;
  if (need <= z->cap)
    return RM_OK;
  if (!(p = rm__ws_realloc(&z->cfg, z->out, z->cap, need)))
    return RM_ENOMEM;
  z->out = p;
  z->cap = need;
  return RM_OK;
}

int rm_ws_deflate(rm_ws_deflater *z, const void *in, size_t n, int fin,
                  const uint8_t **out, size_t *out_len)
{
  const uint8_t *src = in;
  size_t len = 0, room, need = deflateBound(&z->zs, n) + 16;
  int rc;
  if (z->cap > RM__WS_KEEP_BUFFER && need < z->cap / 4) {
    rm__ws_realloc(&z->cfg, z->out, z->cap, 0);
    z->out = NULL;
    z->cap = 0;
  }
  if (reserve(z, need) < 0)
    return RM_ENOMEM;
  for (;;) {
    if (z->zs.avail_in == 0 && n > 0) {
      z->zs.next_in = (Bytef *)src;
      z->zs.avail_in = n > UINT_MAX ? UINT_MAX : (uInt)n;
      src += z->zs.avail_in;
      n -= z->zs.avail_in;
    }
    if (len == z->cap && reserve(z, z->cap * 2) < 0)
      return RM_ENOMEM;
    room = z->cap - len > UINT_MAX ? UINT_MAX : z->cap - len;
    z->zs.next_out = z->out + len;
    z->zs.avail_out = (uInt)room;
    /* Flushing every piece lets the peer act on each frame as it arrives. */
    rc = deflate(&z->zs, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR)
      return RM_EINVAL;
    len += room - z->zs.avail_out;
    if (z->zs.avail_in == 0 && n == 0 && z->zs.avail_out != 0)
      break;
  }
  if (fin) {
    if (len >= 4 && memcmp(z->out + len - 4, flush_tail, 4) == 0)
      len -= 4;
    /* zlib writes nothing for a flush with nothing new to flush. RFC 7692
     * section 7.2.3.6 wants one 00 byte (an empty stored block, once the
     * receiver appends the tail). */
    if (len == 0)
      z->out[len++] = 0x00;
    if (z->no_context)
      deflateReset(&z->zs);
  }
  *out = z->out;
  *out_len = len;
  return RM_OK;
}

/* ---- Inflater ----------------------------------------------------------- */

struct rm_ws_inflater {
  rm_ws_config cfg;
  z_stream zs;
  int no_context;
  const uint8_t *in; /* input not yet handed to zlib (avail_in is 32-bit) */
  size_t in_len;
  int fin;           /* the input is the message's last */
  int tail_fed;      /* the 00 00 ff ff went in after it */
  int ended;         /* the peer sent a final block: ignore the rest */
  uint64_t total;    /* output of this message so far */
  int error;         /* sticky: the stream cannot be trusted after one */
  uint8_t *chunk;
};

rm_ws_inflater *rm_ws_inflater_new(const rm_ws_config *cfg)
{
  const rm_ws_deflate_params *p = cfg->deflate;
  rm_ws_inflater *z;
  int bits;
  if (!p || !(z = rm__ws_realloc(cfg, NULL, 0, sizeof *z)))
    return NULL;
  memset(z, 0, sizeof *z);
  z->cfg = *cfg;
  z->cfg.deflate = NULL;
  z->cfg.max_message = rm__ws_limit(cfg->max_message);
  if (!z->cfg.inflate_chunk)
    z->cfg.inflate_chunk = DEFAULT_CHUNK;
  if (z->cfg.inflate_chunk > UINT_MAX)
    z->cfg.inflate_chunk = UINT_MAX;
  bits = window_bits(cfg->is_server ? p->client_max_window_bits : p->server_max_window_bits);
  z->no_context = cfg->is_server ? p->client_no_context_takeover : p->server_no_context_takeover;
  z->zs.zalloc = zalloc;
  z->zs.zfree = zfree;
  z->zs.opaque = &z->cfg;
  /* A peer whose zlib was asked for 8 bits silently uses 9: allow for it. */
  if (!(z->chunk = rm__ws_realloc(cfg, NULL, 0, z->cfg.inflate_chunk)) ||
      inflateInit2(&z->zs, bits < 9 ? -9 : -bits) != Z_OK) {
    rm__ws_realloc(cfg, z->chunk, z->cfg.inflate_chunk, 0);
    rm__ws_realloc(cfg, z, sizeof *z, 0);
    return NULL;
  }
  return z;
}

void rm_ws_inflater_free(rm_ws_inflater *z)
{
  if (!z)
    return;
  inflateEnd(&z->zs);
  rm__ws_realloc(&z->cfg, z->chunk, z->cfg.inflate_chunk, 0);
  rm__ws_realloc(&z->cfg, z, sizeof *z, 0);
}

void rm_ws_inflate_input(rm_ws_inflater *z, const uint8_t *in, size_t n, int fin)
{
  z->in = in;
  z->in_len = n;
  z->fin = fin;
}

/* Gives zlib the next slice of input, then the tail after the last one. */
static void refill(rm_ws_inflater *z)
{
  if (z->zs.avail_in > 0)
    return;
  if (z->in_len > 0) {
    z->zs.next_in = (Bytef *)z->in;
    z->zs.avail_in = z->in_len > UINT_MAX ? UINT_MAX : (uInt)z->in_len;
    z->in += z->zs.avail_in;
    z->in_len -= z->zs.avail_in;
  } else if (z->fin && !z->tail_fed) {
    z->zs.next_in = (Bytef *)flush_tail;
    z->zs.avail_in = sizeof flush_tail;
    z->tail_fed = 1;
  }
}

static void end_message(rm_ws_inflater *z)
{
  if (z->no_context || z->ended)
    inflateReset(&z->zs);
  z->fin = z->tail_fed = z->ended = 0;
  z->total = 0;
}

static long inflate_fail(rm_ws_inflater *z, int err)
{
  z->error = err;
  return err;
}

long rm_ws_inflate_next(rm_ws_inflater *z, const uint8_t **out, int *drained)
{
  if (z->error)
    return z->error;
  for (;;) {
    uint64_t left = z->cfg.max_message - z->total;
    size_t room = z->cfg.inflate_chunk, made;
    int rc = Z_STREAM_END;
    if (left < room)
      room = (size_t)left + 1; /* one byte over the limit tells a bomb */
    refill(z);
    z->zs.next_out = z->chunk;
    z->zs.avail_out = (uInt)room;
    if (!z->ended)
      rc = inflate(&z->zs, Z_SYNC_FLUSH);
    if (rc == Z_STREAM_END) {
      z->ended = 1;
      z->tail_fed = 1;
      z->zs.avail_in = 0;
      z->in_len = 0;
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return inflate_fail(z, RM_WS_EBADDATA);
    }
    made = room - z->zs.avail_out;
    z->total += made;
    if (z->total > z->cfg.max_message)
      return inflate_fail(z, RM_EFULL);
    *drained = z->zs.avail_in == 0 && z->in_len == 0 && (!z->fin || z->tail_fed) &&
               z->zs.avail_out > 0;
    if (*drained && z->fin)
      end_message(z);
    if (made > 0 || *drained) {
      *out = z->chunk;
      return (long)made;
    }
  }
}
