/* screen/encode.c: rectangle payloads — PNG (zlib), INDEXED and JPEG
 * (libjpeg-turbo).
 *
 * PNG is built by hand: screen text has few colours, so an indexed PNG with
 * the smallest bit depth that holds the palette deflates far better than
 * RGB. A rectangle with more than 256 colours (a merge of tiles can get
 * there) falls back to RGB with the Sub filter.
 *
 * A small rectangle (a typed character, a cursor) would be mostly PNG
 * chunks: INDEXED is the palette and the packed indices alone, raw or
 * deflated, and may reuse the palette it sent last.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <jpeglib.h>
#include "screen/internal.h"

#define SLOTS 1024 /* colour hash slots: 4x the largest palette */
#define INDEXED_MAX_PIXELS 4096 /* larger rectangles go PNG, decoded off the browser's main thread */

typedef struct palette {
  uint32_t key[SLOTS]; /* 0xffffffff: empty (pixels are 24-bit) */
  uint8_t idx[SLOTS];
  uint32_t colour[256];
  int n;
} palette;

typedef struct jpeg_failure {
  struct jpeg_error_mgr mgr;
  jmp_buf jb;
} jpeg_failure;

typedef struct jpeg_sink {
  struct jpeg_destination_mgr mgr;
  rm__buf *out;
} jpeg_sink;

struct rm__encoder {
  rm_alloc_fn alloc;
  void *ud;
  int quality, png_level;
  z_stream z;
  int z_ready;
  rm__buf raw; /* filtered scanlines before deflate */
  palette pal;
  palette last;  /* the palette of the last INDEXED rectangle sent (n = 0: none yet) */
  z_stream zr;   /* raw deflate for INDEXED */
  int zr_ready;
  rm__buf zout;  /* its output */
  struct jpeg_compress_struct jc;
  jpeg_failure jerr;
  jpeg_sink sink;
};

static void pal_clear(palette *p)
{
  memset(p->key, 0xff, sizeof p->key);
  p->n = 0;
}

/* The palette index of c, adding it if there is room; -1 if there is not. */
static int pal_index(palette *p, uint32_t c, int limit)
{
  unsigned i = (c * 0x9e3779b1u) >> 22;
  while (p->key[i] != 0xffffffffu) {
    if (p->key[i] == c) return p->idx[i];
    i = (i + 1) & (SLOTS - 1);
  }
  if (p->n >= limit) return -1;
  p->key[i] = c;
  p->idx[i] = (uint8_t)p->n;
  p->colour[p->n] = c;
  return p->n++;
}

/* The two colours looked up last: text alternates between two colours, so
 * most pixels are found here without hashing. */
typedef struct recent {
  uint32_t c[2];
  int i[2];
} recent;

static const recent RECENT_NONE = {{0xffffffffu, 0xffffffffu}, {-1, -1}}; /* pixels are 24-bit */

/* The newest colour first: on a change the other one is the likelier. */
static inline int recent_index(palette *p, recent *r, uint32_t c, int limit)
{
  if (c != r->c[0]) {
    recent was = *r;
    r->c[0] = c, r->i[0] = c == was.c[1] ? was.i[1] : pal_index(p, c, limit);
    r->c[1] = was.c[0], r->i[1] = was.i[0];
  }
  return r->i[0];
}

/* Fills the palette from a rectangle; returns 0 if it holds more than limit. */
static int pal_fill(palette *p, const uint32_t *px, int stride, int w, int h, int limit)
{
  recent r = RECENT_NONE;
  pal_clear(p);
  for (int y = 0; y < h; y++) {
    const uint32_t *row = px + (size_t)y * stride;
    for (int x = 0; x < w; x++)
      if (recent_index(p, &r, row[x], limit) < 0) return 0;
  }
  return 1;
}

int rm__count_colours(const uint32_t *px, int stride, int w, int h, int limit, uint32_t *first)
{
  palette p;
  int fits = pal_fill(&p, px, stride, w, h, limit);
  *first = px[0];
  return fits ? p.n : limit + 1;
}

/* zlib through the layer's allocator: zfree is not told the size, so each
 * block carries it in front. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
  rm__encoder *e = opaque;
  size_t n = (size_t)items * size + sizeof(size_t);
  size_t *p = e->alloc(e->ud, NULL, 0, n);
  if (!p) return Z_NULL;
  *p = n;
  return p + 1;
}

static void z_free(voidpf opaque, voidpf address)
{
  rm__encoder *e = opaque;
  size_t *p = (size_t *)address - 1;
  e->alloc(e->ud, p, *p, 0);
}

static void put_be32(uint8_t *p, uint32_t v)
{
  p[0] = v >> 24;
  p[1] = (v >> 16) & 0xff;
  p[2] = (v >> 8) & 0xff;
  p[3] = v & 0xff;
}

/* Appends one PNG chunk whose data is already in out at offset start + 8. */
static void chunk_close(rm__buf *out, size_t start, const char *type)
{
  size_t n = out->len - start - 8;
  put_be32(out->p + start, (uint32_t)n);
  memcpy(out->p + start + 4, type, 4);
  put_be32(out->p + out->len, (uint32_t)crc32(0, out->p + start + 4, (uInt)n + 4));
  out->len += 4;
}

static int chunk(rm__buf *out, const char *type, const uint8_t *data, size_t n)
{
  size_t start = out->len;
  if (rm__buf_reserve(out, n + 12) < 0) return RM_ENOMEM;
  if (n) memcpy(out->p + start + 8, data, n);
  out->len += 8 + n;
  chunk_close(out, start, type);
  return RM_OK;
}

/* The bit depth that holds n palette indices (PNG's choice of 1, 2, 4, 8). */
int rm__depth(int n)
{
  return n <= 2 ? 1 : n <= 4 ? 2 : n <= 16 ? 4 : 8;
}

/* Scanlines of palette indices, packed at the given bit depth, filter None
 * (the PNG book's advice for indexed images). */
static int raw_indexed(rm__encoder *e, const uint32_t *px, int stride, int w, int h, int depth)
{
  size_t rowbytes = ((size_t)w * depth + 7) / 8;
  uint8_t *o;
  e->raw.len = 0;
  if (rm__buf_reserve(&e->raw, (rowbytes + 1) * h) < 0) return RM_ENOMEM;
  o = e->raw.p;
  recent r = RECENT_NONE;
  for (int y = 0; y < h; y++) {
    const uint32_t *row = px + (size_t)y * stride;
    int acc = 0, bits = 0;
    *o++ = 0;
    for (int x = 0; x < w; x++) {
      acc = (acc << depth) | recent_index(&e->pal, &r, row[x], 256);
      bits += depth;
      if (bits == 8) *o++ = (uint8_t)acc, acc = 0, bits = 0;
    }
    if (bits) *o++ = (uint8_t)(acc << (8 - bits));
  }
  e->raw.len = (size_t)(o - e->raw.p);
  return RM_OK;
}

/* RGB scanlines with the Sub filter: flat runs become zeros. */
static int raw_rgb(rm__encoder *e, const uint32_t *px, int stride, int w, int h)
{
  uint8_t *o;
  e->raw.len = 0;
  if (rm__buf_reserve(&e->raw, ((size_t)w * 3 + 1) * h) < 0) return RM_ENOMEM;
  o = e->raw.p;
  for (int y = 0; y < h; y++) {
    const uint32_t *row = px + (size_t)y * stride;
    uint32_t prev = 0;
    *o++ = 1;
    for (int x = 0; x < w; x++) {
      uint32_t c = row[x];
      *o++ = (uint8_t)((c >> 16) - (prev >> 16));
      *o++ = (uint8_t)((c >> 8) - (prev >> 8));
      *o++ = (uint8_t)(c - prev);
      prev = c;
    }
  }
  e->raw.len = (size_t)(o - e->raw.p);
  return RM_OK;
}

static int idat(rm__encoder *e, rm__buf *out)
{
  size_t start = out->len, bound;
  if (!e->z_ready) {
    e->z.zalloc = z_alloc;
    e->z.zfree = z_free;
    e->z.opaque = e;
    if (deflateInit(&e->z, e->png_level) != Z_OK) return RM_ENOMEM;
    e->z_ready = 1;
  } else {
    deflateReset(&e->z);
  }
  bound = deflateBound(&e->z, (uLong)e->raw.len);
  if (rm__buf_reserve(out, bound + 12) < 0) return RM_ENOMEM;
  e->z.next_in = e->raw.p;
  e->z.avail_in = (uInt)e->raw.len;
  e->z.next_out = out->p + start + 8;
  e->z.avail_out = (uInt)bound;
  if (deflate(&e->z, Z_FINISH) != Z_STREAM_END) return RM_EIO;
  out->len = start + 8 + e->z.total_out;
  chunk_close(out, start, "IDAT");
  return RM_OK;
}

int rm__encode_png(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out)
{
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  uint8_t ihdr[13], plte[768];
  int indexed = pal_fill(&e->pal, px, stride, w, h, 256), depth = 8, rc;
  if (indexed) {
    int n = e->pal.n;
    depth = rm__depth(n);
    for (int i = 0; i < n; i++) {
      plte[i * 3] = (uint8_t)(e->pal.colour[i] >> 16);
      plte[i * 3 + 1] = (uint8_t)(e->pal.colour[i] >> 8);
      plte[i * 3 + 2] = (uint8_t)e->pal.colour[i];
    }
  }
  put_be32(ihdr, (uint32_t)w);
  put_be32(ihdr + 4, (uint32_t)h);
  ihdr[8] = (uint8_t)depth;
  ihdr[9] = indexed ? 3 : 2;
  ihdr[10] = ihdr[11] = ihdr[12] = 0;
  rc = indexed ? raw_indexed(e, px, stride, w, h, depth) : raw_rgb(e, px, stride, w, h);
  if (rc < 0) return rc;
  if (rm__buf_put(out, sig, 8) < 0 || chunk(out, "IHDR", ihdr, 13) < 0) return RM_ENOMEM;
  if (indexed && chunk(out, "PLTE", plte, (size_t)e->pal.n * 3) < 0) return RM_ENOMEM;
  if ((rc = idat(e, out)) < 0) return rc;
  return chunk(out, "IEND", NULL, 0);
}

/* Every colour of a is in b. */
static int pal_within(palette *a, palette *b)
{
  for (int i = 0; i < a->n; i++)
    if (pal_index(b, a->colour[i], b->n) < 0) return 0;
  return 1;
}

/* The indices of every pixel against pal, packed at depth bits, rows not
 * padded to a byte (a glyph's 6-pixel rows would waste a quarter). */
static int raw_packed(rm__encoder *e, palette *pal, const uint32_t *px, int stride, int w, int h, int depth)
{
  size_t n = ((size_t)w * h * depth + 7) / 8;
  int acc = 0, bits = 0;
  recent r = RECENT_NONE;
  uint8_t *o;
  e->raw.len = 0;
  if (rm__buf_reserve(&e->raw, n) < 0) return RM_ENOMEM;
  o = e->raw.p;
  for (int y = 0; y < h; y++) {
    const uint32_t *row = px + (size_t)y * stride;
    for (int x = 0; x < w; x++) {
      acc = (acc << depth) | recent_index(pal, &r, row[x], pal->n);
      bits += depth;
      if (bits == 8) *o++ = (uint8_t)acc, acc = 0, bits = 0;
    }
  }
  if (bits) *o++ = (uint8_t)(acc << (8 - bits));
  e->raw.len = n;
  return RM_OK;
}

/* e->raw, raw-deflated (no zlib header), into e->zout. */
static int deflate_raw(rm__encoder *e)
{
  size_t bound;
  if (!e->zr_ready) {
    e->zr.zalloc = z_alloc;
    e->zr.zfree = z_free;
    e->zr.opaque = e;
    if (deflateInit2(&e->zr, e->png_level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return RM_ENOMEM;
    e->zr_ready = 1;
  } else {
    deflateReset(&e->zr);
  }
  bound = deflateBound(&e->zr, (uLong)e->raw.len);
  e->zout.len = 0;
  if (rm__buf_reserve(&e->zout, bound) < 0) return RM_ENOMEM;
  e->zr.next_in = e->raw.p;
  e->zr.avail_in = (uInt)e->raw.len;
  e->zr.next_out = e->zout.p;
  e->zr.avail_out = (uInt)bound;
  if (deflate(&e->zr, Z_FINISH) != Z_STREAM_END) return RM_EIO;
  e->zout.len = e->zr.total_out;
  return RM_OK;
}

/* Replaces the PNG at out[start..] with INDEXED if that is smaller (counting
 * the length field PNG and INDEXED_Z carry): u8 colours (0: the palette
 * sent last, else that many RGB triples), then the packed indices, raw or
 * deflated. e->pal still holds the PNG's palette. Returns the encoding left
 * in out. */
static int indexed(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out, size_t start)
{
  size_t png, head, raw, z;
  int reuse, rc;
  palette *pal;
  if (e->pal.n > 255 || (size_t)w * h > INDEXED_MAX_PIXELS) return RM_SCREEN_PNG;
  /* The palette before, if it holds these colours at no more bits a pixel. */
  reuse = e->last.n && rm__depth(e->last.n) <= rm__depth(e->pal.n) && pal_within(&e->pal, &e->last);
  pal = reuse ? &e->last : &e->pal;
  if ((rc = raw_packed(e, pal, px, stride, w, h, rm__depth(pal->n))) < 0 || (rc = deflate_raw(e)) < 0) return rc;
  png = out->len - start;
  png += rm__varint_len(png);
  head = 1 + (reuse ? 0 : (size_t)pal->n * 3);
  raw = head + e->raw.len;
  z = head + e->zout.len;
  z += rm__varint_len(z);
  if (raw >= png && z >= png) return RM_SCREEN_PNG;
  out->len = start;
  if (rm__buf_reserve(out, head) < 0) return RM_ENOMEM;
  out->p[out->len++] = (uint8_t)(reuse ? 0 : pal->n);
  for (int i = 0; !reuse && i < pal->n; i++) {
    out->p[out->len++] = (uint8_t)(pal->colour[i] >> 16);
    out->p[out->len++] = (uint8_t)(pal->colour[i] >> 8);
    out->p[out->len++] = (uint8_t)pal->colour[i];
  }
  if (!reuse) e->last = e->pal;
  if (raw <= z) return rm__buf_put(out, e->raw.p, e->raw.len) < 0 ? RM_ENOMEM : RM_SCREEN_INDEXED;
  return rm__buf_put(out, e->zout.p, e->zout.len) < 0 ? RM_ENOMEM : RM_SCREEN_INDEXED_Z;
}

/* Encodings whose payload length is not implied by the rectangle. */
static int sized(int enc)
{
  return enc == RM_SCREEN_PNG || enc == RM_SCREEN_JPEG || enc == RM_SCREEN_INDEXED_Z;
}

int rm__put_rect(rm__buf *b, int enc, int x, int y, int w, int h, const uint8_t *pay, size_t n)
{
  uint8_t e = (uint8_t)enc;
  if (rm__buf_put(b, &e, 1) < 0 || rm__buf_varint(b, (uint32_t)x) < 0 || rm__buf_varint(b, (uint32_t)y) < 0 ||
      rm__buf_varint(b, (uint32_t)w) < 0 || rm__buf_varint(b, (uint32_t)h) < 0 ||
      (sized(enc) && rm__buf_varint(b, (uint32_t)n) < 0))
    return RM_ENOMEM;
  return rm__buf_put(b, pay, n);
}

void rm__encoder_forget(rm__encoder *e)
{
  e->last.n = 0;
}

int rm__encode_lossless(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out)
{
  size_t start = out->len;
  int rc = rm__encode_png(e, px, stride, w, h, out);
  return rc < 0 ? rc : indexed(e, px, stride, w, h, out, start);
}

/* libjpeg's default error handler exits the process; ours unwinds instead. */
static void jpeg_fail(j_common_ptr c)
{
  longjmp(((jpeg_failure *)c->err)->jb, 1);
}

static void sink_init(j_compress_ptr c)
{
  jpeg_sink *k = (jpeg_sink *)c->dest;
  if (rm__buf_reserve(k->out, 16384) < 0) jpeg_fail((j_common_ptr)c);
  k->mgr.next_output_byte = k->out->p + k->out->len;
  k->mgr.free_in_buffer = k->out->cap - k->out->len;
}

/* libjpeg filled all the room we gave it: the whole buffer is now output. */
static boolean sink_grow(j_compress_ptr c)
{
  jpeg_sink *k = (jpeg_sink *)c->dest;
  k->out->len = k->out->cap;
  sink_init(c);
  return TRUE;
}

static void sink_term(j_compress_ptr c)
{
  jpeg_sink *k = (jpeg_sink *)c->dest;
  k->out->len = k->out->cap - k->mgr.free_in_buffer;
}

int rm__encode_jpeg(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out)
{
  struct jpeg_compress_struct *c = &e->jc;
  size_t start = out->len;
  if (setjmp(e->jerr.jb)) {
    jpeg_abort_compress(c);
    out->len = start;
    return RM_ENOMEM; /* our sink is the only thing that can fail here */
  }
  e->sink.out = out;
  c->image_width = (JDIMENSION)w;
  c->image_height = (JDIMENSION)h;
  c->input_components = 4;
  c->in_color_space = JCS_EXT_BGRX; /* 0x00RRGGBB in little-endian memory */
  jpeg_set_defaults(c);
  jpeg_set_quality(c, e->quality, TRUE);
  c->dct_method = JDCT_IFAST;
  jpeg_start_compress(c, TRUE);
  while (c->next_scanline < c->image_height) {
    JSAMPROW rows[16];
    int n = 0;
    while (n < 16 && c->next_scanline + n < c->image_height)
      rows[n] = (JSAMPROW)(px + (size_t)(c->next_scanline + n) * stride), n++;
    jpeg_write_scanlines(c, rows, (JDIMENSION)n);
  }
  jpeg_finish_compress(c);
  return RM_OK;
}

rm__encoder *rm__encoder_new(rm_alloc_fn alloc, void *ud, int quality, int png_level)
{
  rm__encoder *e = alloc(ud, NULL, 0, sizeof *e);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->alloc = alloc;
  e->ud = ud;
  e->quality = quality;
  e->png_level = png_level;
  e->raw.alloc = alloc;
  e->raw.ud = ud;
  e->zout.alloc = alloc;
  e->zout.ud = ud;
  e->jc.err = jpeg_std_error(&e->jerr.mgr);
  e->jerr.mgr.error_exit = jpeg_fail;
  if (setjmp(e->jerr.jb)) { /* jpeg_create_compress ran out of memory */
    alloc(ud, e, sizeof *e, 0);
    return NULL;
  }
  jpeg_create_compress(&e->jc);
  e->sink.mgr.init_destination = sink_init;
  e->sink.mgr.empty_output_buffer = sink_grow;
  e->sink.mgr.term_destination = sink_term;
  e->jc.dest = &e->sink.mgr;
  return e;
}

void rm__encoder_free(rm__encoder *e)
{
  if (!e) return;
  jpeg_destroy_compress(&e->jc);
  if (e->z_ready) deflateEnd(&e->z);
  if (e->zr_ready) deflateEnd(&e->zr);
  rm__buf_free(&e->raw);
  rm__buf_free(&e->zout);
  e->alloc(e->ud, e, sizeof *e, 0);
}
