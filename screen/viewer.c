/* screen/viewer.c: what one viewer has, and the update that brings it current.
 *
 * A viewer keeps the tile versions it has and, for COPY detection, a hash of
 * each tile-wide pixel row as it last saw it. A frame is planned in two steps:
 *
 *   1. Scrolling. Per tile column, rows that changed vote: a row whose new
 *      hash the viewer already has elsewhere in the same column says "I moved
 *      by dy". The winning dy turns runs of rows that match the viewer's own
 *      rows dy away into COPY rectangles: a terminal scrolling one line costs
 *      a few bytes plus the new line.
 *   2. Everything else. In each dirty tile, the rows that still differ from
 *      what the viewer has form one span; the span is classified (one colour,
 *      few colours, many colours) and merged with like neighbours, first along
 *      the tile row, then down.
 *
 * All COPY rectangles come first in the message and read the viewer's canvas
 * as it was before the message; the rest paint over it.
 */
#include <string.h>
#include "screen/internal.h"

#define T RM_SCREEN_TILE
#define MAX_VOTES 8
#define MAX_SHIFTS 3
#define MIN_COPY_ROWS 8

typedef struct rect {
  int x, y, w, h, enc;
  uint32_t colour; /* SOLID */
  int sy;          /* COPY: source row (the source column is x) */
  int last;        /* COPY, while planned: one past its last row with news */
  int ncol;        /* SOLID, PNG: colours counted (more than 256 for JPEG) */
} rect;

struct rm_screen_viewer {
  rm_alloc_fn alloc;
  void *ud;
  uint32_t gen;      /* the screen size generation the arrays fit */
  int w, h, ntx, nty;
  int full;          /* the viewer has nothing yet */
  int timestamps;    /* every frame carries the server time */
  uint32_t seq_sent; /* the last framebuffer number a frame carried (with_seq) */
  int max_colours;
  uint32_t *have;    /* ntx*nty: tile versions the viewer has (0: none) */
  uint64_t *vhash;   /* h*ntx: row hashes as the viewer has them (0: unknown) */
  uint8_t *done;     /* h*ntx: rows a COPY already brings current */
  uint64_t *tkey;    /* tsize-slot table, hash -> row, for the vote */
  int32_t *trow;     /* -1: empty, -2: hash seen on several rows */
  int tsize;
  int *active;       /* 2*ntx: rects that end at a tile row's bottom; while
                        COPYs are planned, the open ones */
  rect *rects;
  size_t nrects, caprects;
  rm__encoder *enc;
  rm__buf msg;
  rm__buf pay;       /* one rectangle's payload, before its length is known */
};

static void *mem(rm_screen_viewer *v, void *p, size_t osize, size_t nsize)
{
  if (!p && !nsize) return NULL;
  return v->alloc(v->ud, p, osize, nsize);
}

static void free_arrays(rm_screen_viewer *v)
{
  size_t tiles = (size_t)v->ntx * v->nty, rows = (size_t)v->h * v->ntx;
  mem(v, v->have, tiles * 4, 0);
  mem(v, v->vhash, rows * 8, 0);
  mem(v, v->done, rows, 0);
  mem(v, v->tkey, (size_t)v->tsize * 8, 0);
  mem(v, v->trow, (size_t)v->tsize * 4, 0);
  mem(v, v->active, (size_t)v->ntx * 2 * sizeof(int), 0);
  v->have = NULL;
  v->vhash = NULL;
  v->done = NULL;
  v->tkey = NULL;
  v->trow = NULL;
  v->active = NULL;
  v->w = v->h = v->ntx = v->nty = v->tsize = 0;
}

void rm_screen_viewer_reset(rm_screen_viewer *v)
{
  if (v->have) memset(v->have, 0, (size_t)v->ntx * v->nty * 4);
  if (v->vhash) memset(v->vhash, 0, (size_t)v->h * v->ntx * 8);
  v->full = 1;
}

/* Sizes the arrays for the screen's current size (a resize starts over). */
static int fit(rm_screen_viewer *v, const rm_screen *s)
{
  size_t tiles = (size_t)s->ntx * s->nty, rows = (size_t)s->h * s->ntx;
  int tsize = 64;
  while (tsize < 2 * s->h) tsize *= 2;
  free_arrays(v);
  v->have = mem(v, NULL, 0, tiles * 4);
  v->vhash = mem(v, NULL, 0, rows * 8);
  v->done = mem(v, NULL, 0, rows);
  v->tkey = mem(v, NULL, 0, (size_t)tsize * 8);
  v->trow = mem(v, NULL, 0, (size_t)tsize * 4);
  v->active = mem(v, NULL, 0, (size_t)s->ntx * 2 * sizeof(int));
  v->w = s->w;
  v->h = s->h;
  v->ntx = s->ntx;
  v->nty = s->nty;
  v->tsize = tsize;
  if (!v->have || !v->vhash || !v->done || !v->tkey || !v->trow || !v->active) {
    free_arrays(v);
    return RM_ENOMEM;
  }
  v->gen = s->gen;
  rm_screen_viewer_reset(v);
  return RM_OK;
}

int rm_screen_viewer_new(rm_screen *s, const rm_screen_viewer_config *cfg, rm_screen_viewer **out)
{
  rm_screen_viewer *v = s->alloc(s->alloc_ud, NULL, 0, sizeof *v);
  int quality = cfg && cfg->quality ? cfg->quality : 75;
  int level = cfg && cfg->png_level ? cfg->png_level : 6;
  int colours = cfg && cfg->max_colours ? cfg->max_colours : 256;
  *out = NULL;
  if (quality < 1 || quality > 100 || level < 1 || level > 9 || colours < 1 || colours > 256) {
    if (v) s->alloc(s->alloc_ud, v, sizeof *v, 0);
    return RM_EINVAL;
  }
  if (!v) return RM_ENOMEM;
  memset(v, 0, sizeof *v);
  v->alloc = s->alloc;
  v->ud = s->alloc_ud;
  v->max_colours = colours;
  v->timestamps = cfg && cfg->timestamps;
  v->msg.alloc = v->pay.alloc = s->alloc;
  v->msg.ud = v->pay.ud = s->alloc_ud;
  v->enc = rm__encoder_new(s->alloc, s->alloc_ud, quality, level);
  if (!v->enc || fit(v, s) < 0) {
    rm_screen_viewer_free(v);
    return RM_ENOMEM;
  }
  *out = v;
  return RM_OK;
}

void rm_screen_viewer_free(rm_screen_viewer *v)
{
  if (!v) return;
  free_arrays(v);
  mem(v, v->rects, v->caprects * sizeof(rect), 0);
  rm__encoder_free(v->enc);
  rm__buf_free(&v->msg);
  rm__buf_free(&v->pay);
  v->alloc(v->ud, v, sizeof *v, 0);
}

static rect *add_rect(rm_screen_viewer *v)
{
  if (v->nrects == v->caprects) {
    size_t cap = v->caprects ? v->caprects * 2 : 256;
    rect *r = mem(v, v->rects, v->caprects * sizeof(rect), cap * sizeof(rect));
    if (!r) return NULL;
    v->rects = r;
    v->caprects = cap;
  }
  return &v->rects[v->nrects++];
}

static int tile_dirty(const rm_screen *s, const rm_screen_viewer *v, int tx, int ty)
{
  int t = ty * s->ntx + tx;
  return v->have[t] != s->tile_ver[t];
}

static int tile_w(const rm_screen *s, int tx)
{
  return s->w - tx * T < T ? s->w - tx * T : T;
}

/* --- step 1: scrolling ---------------------------------------------------- */

static unsigned slot(const rm_screen_viewer *v, uint64_t key)
{
  return (unsigned)((key * 0x9e3779b97f4a7c15ull) >> 32) & (unsigned)(v->tsize - 1);
}

/* Indexes the viewer's rows of column tx by hash; a hash on several rows
 * (blank lines) cannot say where a row came from, so it is marked. */
static void index_column(rm_screen_viewer *v, int tx)
{
  memset(v->trow, 0xff, (size_t)v->tsize * 4);
  for (int y = 0; y < v->h; y++) {
    uint64_t k = v->vhash[(size_t)y * v->ntx + tx];
    unsigned i;
    if (!k) continue;
    for (i = slot(v, k); v->trow[i] != -1 && v->tkey[i] != k; i = (i + 1) & (v->tsize - 1)) {}
    if (v->trow[i] == -1) v->tkey[i] = k, v->trow[i] = y;
    else v->trow[i] = -2;
  }
}

static int lookup_row(const rm_screen_viewer *v, uint64_t k)
{
  for (unsigned i = slot(v, k); v->trow[i] != -1; i = (i + 1) & (v->tsize - 1))
    if (v->tkey[i] == k) return v->trow[i];
  return -1;
}

/* The shift most changed rows agree on, over every column; 0 if none. Rows a
 * COPY already brings current no longer vote. */
static int vote(const rm_screen *s, rm_screen_viewer *v)
{
  int dys[MAX_VOTES], counts[MAX_VOTES], n = 0, best = 0;
  for (int tx = 0; tx < s->ntx; tx++) {
    index_column(v, tx);
    for (int y = 0; y < s->h; y++) {
      size_t i = (size_t)y * s->ntx + tx;
      int from, k;
      if (v->done[i] || !tile_dirty(s, v, tx, y / T) || s->row_hash[i] == v->vhash[i]) continue;
      if ((from = lookup_row(v, s->row_hash[i])) < 0) continue;
      for (k = 0; k < n && dys[k] != from - y; k++) {}
      if (k == n) {
        if (n == MAX_VOTES) continue;
        dys[n] = from - y, counts[n++] = 0;
      }
      counts[k]++;
    }
  }
  for (int k = 1; k < n; k++)
    if (counts[k] > counts[best]) best = k;
  return n ? dys[best] : 0;
}

/* What row y of column tx can do under shift dy: MUST, it is new and the
 * viewer has it dy rows away; MAY, the viewer has it both here and dy rows
 * away (a harmless copy that keeps a COPY in one piece, say over the blank
 * ends of lines); or NO. */
enum { NO, MAY, MUST };

static int copy_kind(const rm_screen *s, const rm_screen_viewer *v, int tx, int y, int dy)
{
  size_t i = (size_t)y * s->ntx + tx;
  if (y + dy < 0 || y + dy >= s->h || v->done[i] || s->row_hash[i] != v->vhash[(size_t)(y + dy) * s->ntx + tx])
    return NO;
  return s->row_hash[i] != v->vhash[i] ? MUST : MAY;
}

static int first_col(const rect *r) { return r->x / T; }
static int end_col(const rect *r) { return (r->x + r->w + T - 1) / T; }

/* Extends the COPY r (open at row y) by row y if every column of it can copy.
 * If not, the COPY ends, without the trailing rows that only MAY copy. */
static void extend(const rm_screen *s, const rm_screen_viewer *v, rect *r, int y, int dy)
{
  int must = 0;
  for (int tx = first_col(r); tx < end_col(r); tx++) {
    int k = copy_kind(s, v, tx, y, dy);
    if (k == NO) {
      r->h = r->last - r->y;
      return;
    }
    must |= k == MUST;
  }
  r->h++;
  if (must) r->last = y + 1;
}

/* Column tx is in one of the COPYs open[0, n) (those that reach this row). */
static int covered(const rm_screen_viewer *v, const int *open, int n, int tx)
{
  for (int k = 0; k < n; k++) {
    const rect *r = &v->rects[open[k]];
    if (tx >= first_col(r) && tx < end_col(r)) return 1;
  }
  return 0;
}

/* New COPYs in row y: runs of columns that can copy and no open COPY
 * covers, without the MAY columns at their ends, if a MUST column is left.
 * They join open[0, *nopen). */
static int start_runs(const rm_screen *s, rm_screen_viewer *v, int *open, int *nopen, int y, int dy)
{
  int reach = *nopen; /* the COPYs that reach this row; new ones never overlap */
  for (int tx = 0; tx < s->ntx; tx++) {
    int a = -1, b = -1, end = tx, k;
    while (end < s->ntx && !covered(v, open, reach, end) && (k = copy_kind(s, v, end, y, dy)) != NO) {
      if (k == MUST) {
        if (a < 0) a = end;
        b = end + 1;
      }
      end++;
    }
    if (a >= 0) {
      int x = a * T, w = (b < s->ntx ? b * T : s->w) - x;
      rect *r = add_rect(v);
      if (!r) return RM_ENOMEM;
      *r = (rect){x, y, w, 1, RM_SCREEN_COPY, 0, y + dy, y + 1, 0};
      open[(*nopen)++] = (int)(r - v->rects);
    }
    tx = end;
  }
  return RM_OK;
}

/* A COPY made only of rows the viewer already has right moves nothing, and
 * one of a few rows is mostly a coincidence (a blank or repeated pixel row
 * inside new text) that would only cut the text's PNG into pieces. */
static int copy_useful(const rm_screen *s, const rm_screen_viewer *v, const rect *r)
{
  if (r->h < MIN_COPY_ROWS) return 0;
  for (int y = r->y; y < r->y + r->h; y++)
    for (int tx = r->x / T; tx * T < r->x + r->w; tx++)
      if (s->row_hash[(size_t)y * s->ntx + tx] != v->vhash[(size_t)y * s->ntx + tx]) return 1;
  return 0;
}

/* COPY rectangles for one shift: runs of columns that copy, row by row,
 * joined downwards while the same columns keep copying. A terminal
 * scrolling across the whole screen becomes one COPY, whatever its line
 * height. Only the open COPYs (at most one per column) are looked at row
 * by row: the closed ones pile up, and scanning them made this step a
 * fifth of the engine's time on a scrolling terminal (callgrind). */
static int copies_for(const rm_screen *s, rm_screen_viewer *v, int dy)
{
  size_t first = v->nrects, out = first;
  int *open = v->active, *next = v->active + s->ntx, nopen = 0;
  for (int y = 0; y < s->h; y++) {
    int n = 0;
    for (int k = 0; k < nopen; k++) {
      rect *r = &v->rects[open[k]];
      extend(s, v, r, y, dy);
      if (r->y + r->h == y + 1) next[n++] = open[k];
    }
    memcpy(open, next, (size_t)n * sizeof(int));
    nopen = n;
    if (start_runs(s, v, open, &nopen, y, dy) < 0) return RM_ENOMEM;
  }
  for (size_t i = first; i < v->nrects; i++) {
    rect *r = &v->rects[i];
    r->h = r->last - r->y;
    if (!copy_useful(s, v, r)) continue;
    for (int y = r->y; y < r->y + r->h; y++)
      memset(v->done + (size_t)y * s->ntx + first_col(r), 1, (size_t)(end_col(r) - first_col(r)));
    v->rects[out++] = *r;
  }
  v->nrects = out;
  return RM_OK;
}

/* A grab can catch a terminal between two scroll steps, or two windows
 * scrolling by different amounts: up to MAX_SHIFTS shifts per frame, the
 * most voted first. */
static int plan_copies(const rm_screen *s, rm_screen_viewer *v)
{
  memset(v->done, 0, (size_t)s->h * s->ntx);
  if (v->full) return RM_OK; /* nothing to copy from */
  for (int k = 0; k < MAX_SHIFTS; k++) {
    int dy = vote(s, v);
    if (!dy) break;
    if (copies_for(s, v, dy) < 0) return RM_ENOMEM;
  }
  return RM_OK;
}

/* --- step 2: everything else ---------------------------------------------- */

/* The part of tile (tx, ty) that still needs pixels: the rows that differ
 * from the viewer's, and when the viewer has the version before the
 * tile's last change, only the columns that change touched. */
static int residual(const rm_screen *s, const rm_screen_viewer *v, int tx, int ty, rect *part)
{
  int top = ty * T, bottom = s->h - top < T ? s->h : top + T, t = ty * s->ntx + tx, y0 = -1, y1 = 0;
  for (int y = top; y < bottom; y++) {
    size_t i = (size_t)y * s->ntx + tx;
    if (v->done[i] || s->row_hash[i] == v->vhash[i]) continue;
    if (y0 < 0) y0 = y;
    y1 = y + 1;
  }
  if (y0 < 0) return 0;
  part->y = y0;
  part->h = y1 - y0;
  if (v->have[t] == s->chg[t].base) {
    part->x += s->chg[t].x0;
    part->w = s->chg[t].x1 + 1 - s->chg[t].x0;
  }
  return 1;
}

/* Sets r's encoding (and colour count) from its pixels. */
static void classify(const rm_screen *s, const rm_screen_viewer *v, rect *r)
{
  r->ncol = rm__count_colours(s->fb + (size_t)r->y * s->w + r->x, s->w, r->w, r->h, v->max_colours, &r->colour);
  r->enc = r->ncol == 1 ? RM_SCREEN_SOLID : r->ncol <= v->max_colours ? RM_SCREEN_PNG : RM_SCREEN_JPEG;
}

static int alike(const rect *a, const rect *b)
{
  return a->enc == b->enc && (a->enc != RM_SCREEN_SOLID || a->colour == b->colour);
}

static int lossless(int enc)
{
  return enc == RM_SCREEN_SOLID || enc == RM_SCREEN_PNG;
}

/* Adds tile span part to the open rect of its tile row, if they go together:
 * equal SOLIDs with the same rows, or both lossless with as few colours as
 * each other (joining two-colour text to a many-coloured dialog would write
 * the text with 8 bits a pixel, not 1), or both JPEG. The result covers the
 * rows of both (a few unchanged rows sent again cost less than another image
 * to decode); lossless ones become one PNG. A part that does not start
 * where open ends (columns cropped to a change) takes the gap along. */
static int join(rect *open, const rect *part)
{
  int y0 = open->y < part->y ? open->y : part->y;
  int y1 = open->y + open->h > part->y + part->h ? open->y + open->h : part->y + part->h;
  int touch = open->x + open->w == part->x;
  if (touch && open->y == part->y && open->h == part->h && alike(open, part)) {
    open->w += part->w;
    return 1;
  }
  if (lossless(open->enc) != lossless(part->enc)) return 0;
  if (lossless(open->enc)) {
    if (rm__depth(open->ncol) != rm__depth(part->ncol)) return 0;
    open->enc = RM_SCREEN_PNG;
    open->ncol = open->ncol > part->ncol ? open->ncol : part->ncol;
  }
  open->w = part->x + part->w - open->x;
  open->y = y0;
  open->h = y1 - y0;
  return 1;
}

/* Rects of one tile row, merged left to right. */
static int plan_row(const rm_screen *s, rm_screen_viewer *v, int ty)
{
  rect *open = NULL;
  for (int tx = 0; tx < s->ntx; tx++) {
    rect part = {tx * T, 0, tile_w(s, tx), 0, 0, 0, 0, 0, 0};
    if (!tile_dirty(s, v, tx, ty) || !residual(s, v, tx, ty, &part)) {
      open = NULL;
      continue;
    }
    classify(s, v, &part);
    if (open && join(open, &part)) continue;
    if (!(open = add_rect(v))) return RM_ENOMEM;
    *open = part;
  }
  return RM_OK;
}

/* Joins the rects of tile row ty [first, nrects) to the ones above that end
 * where they start, then compacts. active[0, *nactive) holds the rects that
 * touch the bottom of the previous row; the new list is gathered in the
 * second half and moved down. */
static void merge_down(const rm_screen *s, rm_screen_viewer *v, size_t first, int *nactive, int ty)
{
  int bottom = (ty + 1) * T < s->h ? (ty + 1) * T : s->h, n = 0;
  int *next = v->active + s->ntx;
  size_t out = first;
  for (size_t i = first; i < v->nrects; i++) {
    rect *r = &v->rects[i], *a = NULL;
    for (int k = 0; k < *nactive && !a; k++) {
      a = &v->rects[v->active[k]];
      if (a->x != r->x || a->w != r->w || a->y + a->h != r->y || !alike(a, r)) a = NULL;
    }
    if (a) {
      a->h += r->h;
      if (a->y + a->h == bottom) next[n++] = (int)(a - v->rects);
      continue;
    }
    v->rects[out] = *r;
    if (r->y + r->h == bottom) next[n++] = (int)out;
    out++;
  }
  v->nrects = out;
  memcpy(v->active, next, (size_t)n * sizeof(int));
  *nactive = n;
}

static int plan_tiles(const rm_screen *s, rm_screen_viewer *v)
{
  int nactive = 0;
  for (int ty = 0; ty < s->nty; ty++) {
    size_t first = v->nrects;
    if (plan_row(s, v, ty) < 0) return RM_ENOMEM;
    merge_down(s, v, first, &nactive, ty);
  }
  return RM_OK;
}

/* --- the message ---------------------------------------------------------- */

/* One rectangle: its payload, then the rectangle into the message. */
static int encode_rect(const rm_screen *s, rm_screen_viewer *v, const rect *r)
{
  rm__buf *pay = &v->pay;
  const uint32_t *px = s->fb + (size_t)r->y * s->w + r->x;
  int enc = r->enc, rc = RM_OK;
  pay->len = 0;
  switch (r->enc) {
  case RM_SCREEN_COPY:
    if (rm__buf_varint(pay, (uint32_t)r->x) < 0 || rm__buf_varint(pay, (uint32_t)r->sy) < 0) return RM_ENOMEM;
    break;
  case RM_SCREEN_SOLID: {
    uint8_t rgb[3] = {(uint8_t)(r->colour >> 16), (uint8_t)(r->colour >> 8), (uint8_t)r->colour};
    rc = rm__buf_put(pay, rgb, 3);
    break;
  }
  case RM_SCREEN_PNG:
    rc = enc = rm__encode_lossless(v->enc, px, s->w, r->w, r->h, pay);
    break;
  default:
    rc = rm__encode_jpeg(v->enc, px, s->w, r->w, r->h, pay);
    break;
  }
  if (rc < 0) return rc;
  return rm__put_rect(&v->msg, enc, r->x, r->y, r->w, r->h, pay->p, pay->len);
}

/* Whether this frame says how new it is: while the echo lane may have sent
 * an overlay this viewer has not yet seen a newer frame for (the viewer
 * keeps an overlay until such a frame, so the number must come at least
 * once after each overlay). */
static int with_seq(const rm_screen *s, rm_screen_viewer *v)
{
  uint32_t echo = atomic_load(&s->echo_seq);
  if (!echo || v->seq_sent > echo) return 0;
  v->seq_sent = s->fb_seq;
  return 1;
}

/* u8 type, u8 flags, [u16 w, u16 h when full], [f64 time], [varint seq],
 * rectangles to the end: an idle update is a few bytes of header around one
 * small rect. */
static int build(const rm_screen *s, rm_screen_viewer *v)
{
  uint8_t head[2 + 4 + 8];
  size_t n = 2;
  int seq = with_seq(s, v);
  head[0] = RM_SCREEN_MSG_FRAME;
  head[1] = (uint8_t)((v->full ? RM_SCREEN_FULL : 0) | (v->timestamps ? RM_SCREEN_TIME : 0) |
                      (seq ? RM_SCREEN_SEQ : 0));
  if (v->full) {
    rm__put16(head + n, (unsigned)s->w);
    rm__put16(head + n + 2, (unsigned)s->h);
    n += 4;
  }
  if (v->timestamps) {
    rm__put_f64(head + n, rm__now_ms());
    n += 8;
  }
  v->msg.len = 0;
  if (v->full) rm__encoder_forget(v->enc); /* a full update may go to a client that starts afresh */
  if (rm__buf_put(&v->msg, head, n) < 0 || (seq && rm__buf_varint(&v->msg, s->fb_seq) < 0)) return RM_ENOMEM;
  for (size_t i = 0; i < v->nrects; i++) {
    int rc = encode_rect(s, v, &v->rects[i]);
    if (rc < 0) return rc;
  }
  return RM_OK;
}

/* The viewer now has every tile as the screen has it. */
static void commit(const rm_screen *s, rm_screen_viewer *v)
{
  for (int ty = 0; ty < s->nty; ty++)
    for (int tx = 0; tx < s->ntx; tx++) {
      int t = ty * s->ntx + tx, bottom = (ty + 1) * T < s->h ? (ty + 1) * T : s->h;
      if (v->have[t] == s->tile_ver[t]) continue;
      v->have[t] = s->tile_ver[t];
      for (int y = ty * T; y < bottom; y++)
        v->vhash[(size_t)y * s->ntx + tx] = s->row_hash[(size_t)y * s->ntx + tx];
    }
  v->full = 0;
}

int rm_screen_frame(rm_screen *s, rm_screen_viewer *v, const uint8_t **msg, size_t *len)
{
  int dirty = 0, rc;
  if (v->gen != s->gen && (rc = fit(v, s)) < 0) return rc;
  for (int t = 0; t < s->ntx * s->nty && !dirty; t++) dirty = v->have[t] != s->tile_ver[t];
  if (!dirty) return 0;
  v->nrects = 0;
  if ((rc = plan_copies(s, v)) < 0 || (rc = plan_tiles(s, v)) < 0) return rc;
  if (v->nrects && (rc = build(s, v)) < 0) return rc;
  commit(s, v);
  if (!v->nrects) return 0; /* tiles changed and changed back */
  *msg = v->msg.p;
  *len = v->msg.len;
  return 1;
}
