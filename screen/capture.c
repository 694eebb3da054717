/* screen/capture.c: the X connection, damage tracking and the framebuffer.
 *
 * XDamage reports every drawing operation as a raw rectangle (raw, because the
 * region form needs XFixes to read back). Those rectangles mark tiles as
 * damaged; a poll grabs the box around all damaged tiles with one request,
 * then compares every damaged tile row by row with the framebuffer: only a
 * tile whose pixels really differ gets a new version, so a redraw with the
 * same pixels costs viewers nothing.
 *
 * One request, not one per tile row: the X server runs requests one at a
 * time, so one grab is one consistent picture. Grabbed band by band, a
 * terminal that scrolls meanwhile would be caught at several scroll positions
 * at once, and the viewers' scroll detection would miss.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <X11/Xutil.h>
#include <X11/extensions/Xdamage.h>
#include "screen/internal.h"

#define T RM_SCREEN_TILE

static void *default_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

void *rm__screen_alloc(rm_screen *s, void *p, size_t osize, size_t nsize)
{
  return s->alloc(s->alloc_ud, p, osize, nsize);
}

/* Xlib's default handler exits the process on any protocol error, and a
 * requestor window that vanishes mid-paste is enough to cause one. Errors
 * that matter are seen through return values instead. */
static int ignore_x_error(Display *dpy, XErrorEvent *e)
{
  return 0;
}

/* Called once the connection is lost; returning keeps the process alive. */
static void on_io_exit(Display *dpy, void *ud)
{
  ((rm_screen *)ud)->dead = 1;
}

/* Two independent multiply chains over pairs of pixels: the CPU runs them
 * side by side, twice as fast as one chain per pixel (this hashes every
 * changed pixel row of every grab). */
uint64_t rm__row_hash(const uint32_t *px, int n)
{
  uint64_t a = 0x9e3779b97f4a7c15ull ^ (uint64_t)n, b = 0xc2b2ae3d27d4eb4full;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    a ^= (uint64_t)px[i] << 32 | px[i + 1];
    b ^= (uint64_t)px[i + 2] << 32 | px[i + 3];
    a *= 0xff51afd7ed558ccdull;
    b *= 0xc4ceb9fe1a85ec53ull;
    a ^= a >> 32;
    b ^= b >> 29;
  }
  for (; i < n; i++) {
    a ^= px[i];
    a *= 0xff51afd7ed558ccdull;
    a ^= a >> 32;
  }
  a ^= b * 0x9e3779b97f4a7c15ull;
  return a | 1; /* 0 means "unknown" to a viewer */
}

static void shm_destroy(rm_screen *s)
{
  if (!s->shm_img) return;
  if (!s->dead) {
    XShmDetach(s->dpy, &s->shminfo);
    XSync(s->dpy, False);
  }
  XDestroyImage(s->shm_img); /* frees the XImage only, not the segment */
  shmdt(s->shminfo.shmaddr);
  s->shm_img = NULL;
}

/* One shared segment of the whole screen, reused for every grab. */
static int shm_create(rm_screen *s)
{
  Display *d = s->dpy;
  int scr = DefaultScreen(d);
  XImage *img = XShmCreateImage(d, DefaultVisual(d, scr), DefaultDepth(d, scr), ZPixmap,
                                NULL, &s->shminfo, s->w, s->h);
  if (!img) return -1;
  s->shminfo.shmid = shmget(IPC_PRIVATE, (size_t)img->bytes_per_line * s->h, IPC_CREAT | 0600);
  if (s->shminfo.shmid < 0) goto fail;
  s->shminfo.shmaddr = img->data = shmat(s->shminfo.shmid, NULL, 0);
  shmctl(s->shminfo.shmid, IPC_RMID, NULL); /* freed once both sides detach */
  if (s->shminfo.shmaddr == (char *)-1) goto fail;
  s->shminfo.readOnly = False;
  if (!XShmAttach(d, &s->shminfo)) {
    shmdt(s->shminfo.shmaddr);
    goto fail;
  }
  XSync(d, False);
  s->shm_img = img;
  return 0;
fail:
  XDestroyImage(img);
  return -1;
}

static void free_mem(rm_screen *s, void *p, size_t n)
{
  if (p) rm__screen_alloc(s, p, n, 0);
}

static void free_arrays(rm_screen *s)
{
  size_t px = (size_t)s->w * s->h, tiles = (size_t)s->ntx * s->nty;
  free_mem(s, s->fb, px * 4);
  free_mem(s, s->tile_ver, tiles * 4);
  free_mem(s, s->row_hash, (size_t)s->h * s->ntx * 8);
  free_mem(s, s->damaged, tiles);
  free_mem(s, s->chg, tiles * sizeof *s->chg);
  s->fb = NULL;
  s->chg = NULL;
  s->tile_ver = NULL;
  s->row_hash = NULL;
  s->damaged = NULL;
}

/* (Re)builds everything that depends on the screen size; all tiles start
 * damaged so the next grab fills the framebuffer. */
static int set_size(rm_screen *s, int w, int h)
{
  size_t tiles;
  shm_destroy(s);
  free_arrays(s);
  s->w = w;
  s->h = h;
  s->ntx = (w + T - 1) / T;
  s->nty = (h + T - 1) / T;
  s->gen++;
  tiles = (size_t)s->ntx * s->nty;
  s->fb = rm__screen_alloc(s, NULL, 0, (size_t)w * h * 4);
  s->tile_ver = rm__screen_alloc(s, NULL, 0, tiles * 4);
  s->row_hash = rm__screen_alloc(s, NULL, 0, (size_t)h * s->ntx * 8);
  s->damaged = rm__screen_alloc(s, NULL, 0, tiles);
  s->chg = rm__screen_alloc(s, NULL, 0, tiles * sizeof *s->chg);
  if (!s->fb || !s->tile_ver || !s->row_hash || !s->damaged || !s->chg) {
    free_arrays(s);
    s->w = s->h = s->ntx = s->nty = 0;
    return RM_ENOMEM;
  }
  /* Every tile of the new size is news to every viewer, even if its pixels
   * happen to stay black. */
  s->version++;
  for (size_t i = 0; i < tiles; i++) {
    s->tile_ver[i] = s->version;
    s->chg[i] = (rm__change){s->version, 0, T - 1}; /* no viewer has the version before */
  }
  memset(s->fb, 0, (size_t)w * h * 4);
  for (int tx = 0; tx < s->ntx; tx++) {
    uint64_t zero = rm__row_hash(s->fb, w - tx * T < T ? w - tx * T : T);
    for (int y = 0; y < h; y++) s->row_hash[(size_t)y * s->ntx + tx] = zero;
  }
  memset(s->damaged, 1, tiles);
  s->any_damage = 1;
  if (s->shm && shm_create(s) < 0) s->shm = 0;
  return RM_OK;
}

/* Fetches the pixels of one box. With XShm they land in the shared segment;
 * otherwise XGetImage allocates an image the caller destroys (*tmp). */
static const uint32_t *fetch(rm_screen *s, int x, int y, int w, int h, int *stride, XImage **tmp)
{
  XImage *img;
  *tmp = NULL;
  if (s->shm) {
    img = s->shm_img;
    /* XShmGetImage asks for image->width x image->height; the segment has
     * room for any box, packed at stride w. */
    img->width = w;
    img->height = h;
    img->bytes_per_line = w * 4;
    if (XShmGetImage(s->dpy, s->root, img, x, y, AllPlanes)) {
      *stride = w;
      return (const uint32_t *)img->data;
    }
    shm_destroy(s); /* the server cannot reach our segment: stop trying */
    s->shm = 0;
  }
  img = XGetImage(s->dpy, s->root, x, y, (unsigned)w, (unsigned)h, AllPlanes, ZPixmap);
  if (!img) return NULL;
  *tmp = img;
  *stride = img->bytes_per_line / 4;
  return (const uint32_t *)img->data;
}

/* The pixels of a grabbed row that differ from the framebuffer's, [*a, *b),
 * compared without their undefined top byte; 0 if none does. */
static int changed_span(const uint32_t *fb, const uint32_t *in, int n, int *a, int *b)
{
  int i = 0, j = n;
  while (i < n && ((in[i] ^ fb[i]) & 0xffffff) == 0) i++;
  if (i == n) return 0;
  while (((in[j - 1] ^ fb[j - 1]) & 0xffffff) == 0) j--;
  *a = i;
  *b = j;
  return 1;
}

/* Copies the part [x0, x1) x [y0, y1) of tile (tx, ty) from src (that part's
 * first pixel, row stride `stride`); returns 1 if any pixel differed. The
 * tile remembers which columns this version changed, so a viewer that has
 * the version before gets only those (a typed character is a few columns
 * of a 64-pixel tile). */
static int update_tile(rm_screen *s, int tx, int ty, const int *box, const uint32_t *src, int stride,
                       uint32_t version)
{
  int t = ty * s->ntx + tx, tw = s->w - tx * T < T ? s->w - tx * T : T;
  int x0 = box[0], y0 = box[1], w = box[2] - box[0], lo = w, hi = 0, a, b;
  for (int y = y0; y < box[3]; y++) {
    const uint32_t *in = src + (size_t)(y - y0) * stride;
    uint32_t *out = s->fb + (size_t)y * s->w + x0;
    if (!changed_span(out, in, w, &a, &b)) continue;
    for (int i = a; i < b; i++) out[i] = in[i] & 0xffffff;
    s->row_hash[(size_t)y * s->ntx + tx] = rm__row_hash(s->fb + (size_t)y * s->w + tx * T, tw);
    if (a < lo) lo = a;
    if (b > hi) hi = b;
  }
  if (hi == 0) return 0;
  lo += x0 - tx * T;
  hi += x0 - tx * T;
  s->chg[t] = (rm__change){s->tile_ver[t], (uint8_t)lo, (uint8_t)(hi - 1)};
  s->tile_ver[t] = version;
  return 1;
}

/* Grabs the pixel box [x0, x1) x [y0, y1) with one request and updates
 * the damaged tiles in it. Returns 1 if some tile changed. */
static int grab_box(rm_screen *s, int x0, int y0, int x1, int y1)
{
  uint32_t version = s->version + 1;
  int changed = 0, stride;
  XImage *tmp;
  const uint32_t *px = fetch(s, x0, y0, x1 - x0, y1 - y0, &stride, &tmp);
  if (!px) return 0; /* e.g. the screen shrank under us; ConfigureNotify follows */
  for (int ty = y0 / T; ty * T < y1; ty++)
    for (int tx = x0 / T; tx * T < x1; tx++) {
      int part[4] = {tx * T > x0 ? tx * T : x0, ty * T > y0 ? ty * T : y0,
                     (tx + 1) * T < x1 ? (tx + 1) * T : x1, (ty + 1) * T < y1 ? (ty + 1) * T : y1};
      if (!s->damaged[ty * s->ntx + tx]) continue;
      changed |= update_tile(s, tx, ty, part, px + (size_t)(part[1] - y0) * stride + (part[0] - x0), stride,
                             version);
    }
  if (tmp) XDestroyImage(tmp);
  if (changed) s->version = version;
  return changed;
}

/* The box around the damaged tiles, in tiles: [*tx0, *tx1] x [*ty0, *ty1].
 * Returns 0 if nothing is damaged. */
static int damaged_box(const rm_screen *s, int *tx0, int *ty0, int *tx1, int *ty1)
{
  *tx0 = s->ntx, *ty0 = s->nty, *tx1 = *ty1 = -1;
  for (int ty = 0; ty < s->nty; ty++)
    for (int tx = 0; tx < s->ntx; tx++) {
      if (!s->damaged[ty * s->ntx + tx]) continue;
      if (tx < *tx0) *tx0 = tx;
      if (tx > *tx1) *tx1 = tx;
      if (ty < *ty0) *ty0 = ty;
      *ty1 = ty;
    }
  return *tx1 >= 0;
}

static int grab(rm_screen *s)
{
  int changed, tx0, ty0, tx1, ty1;
  s->any_damage = 0;
  if (!damaged_box(s, &tx0, &ty0, &tx1, &ty1)) return 0;
  changed = grab_box(s, tx0 * T, ty0 * T, (tx1 + 1) * T < s->w ? (tx1 + 1) * T : s->w,
                     (ty1 + 1) * T < s->h ? (ty1 + 1) * T : s->h);
  memset(s->damaged, 0, (size_t)s->ntx * s->nty);
  return changed;
}

static void mark_damage(rm_screen *s, int x, int y, int w, int h)
{
  int tx0, ty0, tx1, ty1;
  if (x < 0) w += x, x = 0;
  if (y < 0) h += y, y = 0;
  if (w <= 0 || h <= 0 || x >= s->w || y >= s->h) return;
  tx0 = x / T;
  ty0 = y / T;
  tx1 = (x + w - 1 < s->w ? x + w - 1 : s->w - 1) / T;
  ty1 = (y + h - 1 < s->h ? y + h - 1 : s->h - 1) / T;
  for (int ty = ty0; ty <= ty1; ty++)
    memset(s->damaged + ty * s->ntx + tx0, 1, (size_t)(tx1 - tx0 + 1));
  s->any_damage = 1;
}

/* Handles one event; returns the new root size through *nw, *nh on a resize. */
static void handle_event(rm_screen *s, XEvent *ev, int *nw, int *nh)
{
  if (s->damage_event >= 0 && ev->type == s->damage_event) {
    XDamageNotifyEvent *de = (XDamageNotifyEvent *)ev;
    mark_damage(s, de->area.x, de->area.y, de->area.width, de->area.height);
  } else if (ev->type == ConfigureNotify && ev->xconfigure.window == s->root) {
    *nw = ev->xconfigure.width;
    *nh = ev->xconfigure.height;
  } else if (ev->type == SelectionRequest) {
    rm__screen_selection_request(s, ev);
  } else if (ev->type == MappingNotify) {
    XRefreshKeyboardMapping(&ev->xmapping);
  }
}

int rm_screen_drain(rm_screen *s)
{
  int nw = s->w, nh = s->h, rc;
  if (s->dead) return RM_EIO;
  s->drain_seq = atomic_fetch_add(&s->seq, 1) + 1; /* before the events: see rm_screen */
  while (!s->dead && XPending(s->dpy)) {
    XEvent ev;
    XNextEvent(s->dpy, &ev);
    handle_event(s, &ev, &nw, &nh);
  }
  if (s->dead) return RM_EIO;
  if (nw != s->w || nh != s->h) {
    if ((rc = set_size(s, nw, nh)) < 0) return rc;
    s->resized = 1;
  }
  if (s->damage_event < 0) mark_damage(s, 0, 0, s->w, s->h);
  return s->any_damage || s->resized;
}

int rm_screen_grab(rm_screen *s)
{
  int resized = s->resized;
  if (s->dead) return RM_EIO;
  s->resized = 0;
  s->fb_seq = s->drain_seq;
  if (!s->any_damage) return resized;
  /* Raw reports never need the server's region: drop it so it cannot grow. */
  if (s->damage_event >= 0) XDamageSubtract(s->dpy, s->damage, None, None);
  return grab(s) || resized;
}

int rm_screen_poll(rm_screen *s)
{
  int rc = rm_screen_drain(s);
  return rc <= 0 ? rc : rm_screen_grab(s);
}

static int open_fail(rm_screen *s, int rc, char *err, size_t errlen, const char *why)
{
  if (err && errlen) snprintf(err, errlen, "%s", why);
  rm_screen_close(s);
  return rc;
}

/* The framebuffer format is 0x00RRGGBB in host order; anything else would
 * need a per-pixel conversion no real desktop asks for today. */
static int visual_ok(Display *d)
{
  int scr = DefaultScreen(d);
  Visual *v = DefaultVisual(d, scr);
  uint16_t one = 1;
  int host_lsb = *(uint8_t *)&one == 1;
  return (DefaultDepth(d, scr) == 24 || DefaultDepth(d, scr) == 32) && v->class == TrueColor &&
         v->red_mask == 0xff0000 && v->green_mask == 0xff00 && v->blue_mask == 0xff &&
         (ImageByteOrder(d) == LSBFirst) == host_lsb;
}

int rm_screen_open(const rm_screen_config *cfg, rm_screen **out, char *err, size_t errlen)
{
  rm_alloc_fn alloc = cfg && cfg->alloc ? cfg->alloc : default_alloc;
  void *ud = cfg ? cfg->alloc_ud : NULL;
  rm_screen *s = alloc(ud, NULL, 0, sizeof *s);
  int ev, er, rc;
  *out = NULL;
  if (!s) return open_fail(NULL, RM_ENOMEM, err, errlen, "out of memory");
  memset(s, 0, sizeof *s);
  s->alloc = alloc;
  s->alloc_ud = ud;
  s->max_clipboard = cfg && cfg->max_clipboard ? cfg->max_clipboard : 256 * 1024;
  s->damage_event = -1;
  XInitThreads(); /* grabs may run on another thread than input (lscreen.c) */
  s->dpy = XOpenDisplay(cfg ? cfg->display : NULL);
  if (!s->dpy) return open_fail(s, RM_ECONNECT, err, errlen, "cannot open the X display");
  XSetErrorHandler(ignore_x_error);
  XSetIOErrorExitHandler(s->dpy, on_io_exit, s);
  if (!visual_ok(s->dpy))
    return open_fail(s, RM_EINVAL, err, errlen, "unsupported visual (need 24-bit TrueColor)");
  s->root = DefaultRootWindow(s->dpy);
  XSelectInput(s->dpy, s->root, StructureNotifyMask);
  if (XDamageQueryExtension(s->dpy, &ev, &er)) {
    s->damage = XDamageCreate(s->dpy, s->root, XDamageReportRawRectangles);
    s->damage_event = ev + XDamageNotify;
  }
  s->shm = !(cfg && cfg->no_shm) && XShmQueryExtension(s->dpy);
  rm__screen_input_init(s);
  rc = set_size(s, DisplayWidth(s->dpy, DefaultScreen(s->dpy)),
                DisplayHeight(s->dpy, DefaultScreen(s->dpy)));
  if (rc < 0) return open_fail(s, rc, err, errlen, "out of memory");
  grab(s);
  *out = s;
  return RM_OK;
}

void rm_screen_close(rm_screen *s)
{
  if (!s) return;
  if (s->dpy) {
    rm__screen_input_close(s);
    shm_destroy(s);
    if (!s->dead && s->damage_event >= 0) XDamageDestroy(s->dpy, s->damage);
    XCloseDisplay(s->dpy);
  }
  free_arrays(s);
  s->alloc(s->alloc_ud, s, sizeof *s, 0);
}

void rm_screen_size(const rm_screen *s, int *w, int *h)
{
  *w = s->w;
  *h = s->h;
}

int rm_screen_fd(const rm_screen *s)
{
  return ConnectionNumber(s->dpy);
}

const uint32_t *rm_screen_pixels(const rm_screen *s)
{
  return s->fb;
}

uint32_t rm_screen_tile_version(const rm_screen *s, int tx, int ty)
{
  if (tx < 0 || ty < 0 || tx >= s->ntx || ty >= s->nty) return 0;
  return s->tile_ver[ty * s->ntx + tx];
}

int rm_screen_has_shm(const rm_screen *s)
{
  return s->shm;
}
