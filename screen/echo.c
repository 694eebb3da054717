/* screen/echo.c: the echo lane.
 *
 * A typed character's echo is a few pixels, but on the main lane it waits
 * for the frame being grabbed and encoded when it is drawn: with a terminal
 * scrolling the whole screen, 20-50 ms, and the browser then paints it after
 * that frame. The echo lane is a second connection to the same display with
 * a Damage object of its own, so it sees every drawing while the main lane is
 * busy. Small damage inside the focused window soon after a key or button
 * is grabbed at once (XGetImage of a few hundred pixels, on a connection the
 * X server schedules apart from the main lane's big grab) and becomes an
 * OVERLAY message: lossless rectangles the viewer paints over its canvas at
 * once, outside the queue of frames, and takes off again when a frame at
 * least as new arrives (docs/screen-protocol.md).
 *
 * The lane touches neither the framebuffer nor the viewers: the main lane
 * sends the same pixels in its own time. What the two share are atomics in
 * rm_screen: the time of the last input, and the counter that orders
 * overlays against frames.
 */
#include <stdio.h>
#include <string.h>
#include <X11/Xutil.h>
#include <X11/extensions/Xdamage.h>
#include "screen/internal.h"

struct rm_screen_echo {
  rm_screen *s;
  Display *dpy;
  Window root;
  int damage_event;
  unsigned long damage;
  int box[RM__ECHO_BOXES][4]; /* x0 y0 x1 y1 of echo damage not yet grabbed */
  /* The focused window's box, kept until an event says it may have changed:
   * three round trips to a busy X server cost more than the echo's grab. */
  Window focus;               /* the window whose events we asked for; None: none */
  int fbox[4], fbox_ok;
  int nbox;
  rm__encoder *enc;
  rm__buf pay, rects, msg; /* one rectangle's payload, the rectangles, the message */
  uint32_t *px;               /* one box's pixels, top byte cleared */
  size_t pxcap;
  /* The focused window's pixels as the lane last saw them: damage is
   * reported for drawing under other windows too, and only what really
   * changed is worth an overlay. */
  uint32_t *shadow;
  int sbox[4];                /* the box it covers (x0 y0 x1 y1); empty: none */
  int dead;                   /* the connection was lost */
};

/* Called once the connection is lost; returning keeps the process alive. */
static void on_io_exit(Display *dpy, void *ud)
{
  ((rm_screen_echo *)ud)->dead = 1;
}

static void *mem(rm_screen_echo *e, void *p, size_t osize, size_t nsize)
{
  return rm__screen_alloc(e->s, p, osize, nsize);
}

int rm_screen_echo_open(rm_screen *s, rm_screen_echo **out, char *err, size_t errlen)
{
  rm_screen_echo *e = rm__screen_alloc(s, NULL, 0, sizeof *e);
  int ev, er;
  *out = NULL;
  if (!e) return RM_ENOMEM;
  memset(e, 0, sizeof *e);
  e->s = s;
  e->pay.alloc = e->rects.alloc = e->msg.alloc = s->alloc;
  e->pay.ud = e->rects.ud = e->msg.ud = s->alloc_ud;
  e->dpy = XOpenDisplay(DisplayString(s->dpy));
  if (!e->dpy || !XDamageQueryExtension(e->dpy, &ev, &er)) {
    if (err && errlen) snprintf(err, errlen, "%s", e->dpy ? "no XDamage" : "cannot open the X display");
    rm_screen_echo_close(e);
    return RM_ECONNECT;
  }
  XSetIOErrorExitHandler(e->dpy, on_io_exit, e);
  e->root = DefaultRootWindow(e->dpy);
  /* The root hears of focus going to or from PointerRoot, and of resizes. */
  XSelectInput(e->dpy, e->root, FocusChangeMask | StructureNotifyMask);
  e->damage = XDamageCreate(e->dpy, e->root, XDamageReportRawRectangles);
  e->damage_event = ev + XDamageNotify;
  e->enc = rm__encoder_new(s->alloc, s->alloc_ud, 75, 6);
  if (!e->enc) {
    rm_screen_echo_close(e);
    return RM_ENOMEM;
  }
  XFlush(e->dpy);
  *out = e;
  return RM_OK;
}

void rm_screen_echo_close(rm_screen_echo *e)
{
  if (!e) return;
  if (e->dpy) XCloseDisplay(e->dpy); /* the server frees the Damage with the connection */
  rm__encoder_free(e->enc);
  rm__buf_free(&e->pay);
  rm__buf_free(&e->rects);
  rm__buf_free(&e->msg);
  if (e->px) mem(e, e->px, e->pxcap * 4, 0);
  if (e->shadow) mem(e, e->shadow, (size_t)(e->sbox[2] - e->sbox[0]) * (e->sbox[3] - e->sbox[1]) * 4, 0);
  mem(e, e, sizeof *e, 0);
}

int rm_screen_echo_fd(const rm_screen_echo *e)
{
  return ConnectionNumber(e->dpy);
}

/* Joins damage to a box it touches (within a tile), else starts a box while
 * there is room; past that it joins the last one. */
static void add_box(rm_screen_echo *e, int x0, int y0, int x1, int y1)
{
  int i = 0, *b;
  for (; i < e->nbox; i++) {
    b = e->box[i];
    if (x0 <= b[2] + RM_SCREEN_TILE && x1 >= b[0] - RM_SCREEN_TILE && y0 <= b[3] + RM_SCREEN_TILE &&
        y1 >= b[1] - RM_SCREEN_TILE)
      break;
  }
  if (i == RM__ECHO_BOXES) i = RM__ECHO_BOXES - 1;
  b = e->box[i];
  if (i == e->nbox) {
    e->nbox++;
    b[0] = x0, b[1] = y0, b[2] = x1, b[3] = y1;
    return;
  }
  if (x0 < b[0]) b[0] = x0;
  if (y0 < b[1]) b[1] = y0;
  if (x1 > b[2]) b[2] = x1;
  if (y1 > b[3]) b[3] = y1;
}

/* Reads every event; small damage soon after input becomes an echo box when
 * the caller wants overlays. */
static void read_events(rm_screen_echo *e, int want)
{
  int fresh = want && rm__now_ms() - atomic_load(&e->s->input_ms) < RM__ECHO_MS, any = 0;
  while (!e->dead && XPending(e->dpy)) {
    XEvent ev;
    XNextEvent(e->dpy, &ev);
    if (ev.type != e->damage_event) {
      e->fbox_ok = 0; /* focus, geometry or stacking news of the focus or the root */
      continue;
    }
    XDamageNotifyEvent *de = (XDamageNotifyEvent *)&ev;
    any = 1;
    if (fresh && (long)de->area.width * de->area.height <= RM__ECHO_AREA)
      add_box(e, de->area.x, de->area.y, de->area.x + de->area.width, de->area.y + de->area.height);
  }
  if (any) XDamageSubtract(e->dpy, e->damage, None, None); /* raw reports: the region only grows */
}

/* The focused window's box on the screen, where a key's echo is drawn; the
 * whole screen when the focus follows the pointer or the window is gone.
 * Small things drawn elsewhere (another terminal's cursor) are not the echo.
 * The focused window then tells us when it loses the focus, moves or goes. */
static void focus_box(rm_screen_echo *e, int *box)
{
  Window w, root, child;
  int revert, x, y;
  unsigned ww, wh, border, depth;
  if (e->fbox_ok) {
    memcpy(box, e->fbox, sizeof e->fbox);
    return;
  }
  box[0] = box[1] = 0;
  box[2] = DisplayWidth(e->dpy, DefaultScreen(e->dpy));
  box[3] = DisplayHeight(e->dpy, DefaultScreen(e->dpy));
  XGetInputFocus(e->dpy, &w, &revert);
  if (w == PointerRoot || w == e->root) w = None;
  if (w != e->focus) {
    if (e->focus != None) XSelectInput(e->dpy, e->focus, NoEventMask);
    if (w != None) XSelectInput(e->dpy, w, FocusChangeMask | StructureNotifyMask);
    e->focus = w;
  }
  if (w != None && XGetGeometry(e->dpy, w, &root, &x, &y, &ww, &wh, &border, &depth) &&
      XTranslateCoordinates(e->dpy, w, e->root, 0, 0, &x, &y, &child)) {
    if (x > box[0]) box[0] = x;
    if (y > box[1]) box[1] = y;
    if (x + (int)ww < box[2]) box[2] = x + (int)ww;
    if (y + (int)wh < box[3]) box[3] = y + (int)wh;
  }
  memcpy(e->fbox, box, sizeof e->fbox);
  e->fbox_ok = 1;
}

/* One box's pixels into e->px, top byte cleared; 0 if the box cannot be
 * grabbed (the screen shrank meanwhile). */
static int fetch(rm_screen_echo *e, int x, int y, int w, int h)
{
  XImage *img;
  size_t n = (size_t)w * h;
  if (n > e->pxcap) {
    uint32_t *p = mem(e, e->px, e->pxcap * 4, n * 4);
    if (!p) return RM_ENOMEM;
    e->px = p;
    e->pxcap = n;
  }
  if (!(img = XGetImage(e->dpy, e->root, x, y, (unsigned)w, (unsigned)h, AllPlanes, ZPixmap))) return 0;
  for (int r = 0; r < h; r++) {
    const uint32_t *in = (const uint32_t *)(img->data + (size_t)r * img->bytes_per_line);
    for (int c = 0; c < w; c++) e->px[(size_t)r * w + c] = in[c] & 0xffffff;
  }
  XDestroyImage(img);
  return 1;
}

static size_t box_area(const int *b)
{
  return (size_t)(b[2] - b[0]) * (b[3] - b[1]);
}

/* Follows the focus: a new focused box gets a new shadow, its pixels as
 * they are now. Returns 1 if the shadow is new (it cannot tell what
 * changed), 0 if not, or RM_ENOMEM. */
static int follow_focus(rm_screen_echo *e, const int *f)
{
  int w = f[2] - f[0], h = f[3] - f[1], rc;
  if (!memcmp(f, e->sbox, sizeof e->sbox)) return 0;
  if (e->shadow) mem(e, e->shadow, box_area(e->sbox) * 4, 0);
  e->shadow = NULL;
  memset(e->sbox, 0, sizeof e->sbox);
  if ((rc = fetch(e, f[0], f[1], w, h)) <= 0) return rc < 0 ? rc : 1;
  if (!(e->shadow = mem(e, NULL, 0, box_area(f) * 4))) return RM_ENOMEM;
  memcpy(e->shadow, e->px, box_area(f) * 4);
  memcpy(e->sbox, f, sizeof e->sbox);
  return 1;
}

/* Compares the box just fetched (x, y, w, h) with the shadow and brings the
 * shadow up to date; *r becomes the part that changed. Returns 0 if none. */
static int changed(rm_screen_echo *e, int x, int y, int w, int h, int *r)
{
  int sw = e->sbox[2] - e->sbox[0], x0 = w, x1 = 0, y0 = h, y1 = 0;
  for (int row = 0; row < h; row++) {
    uint32_t *old = e->shadow + (size_t)(y - e->sbox[1] + row) * sw + (x - e->sbox[0]);
    const uint32_t *in = e->px + (size_t)row * w;
    int a = 0, b = w;
    while (a < w && old[a] == in[a]) a++;
    if (a == w) continue;
    while (old[b - 1] == in[b - 1]) b--;
    memcpy(old + a, in + a, (size_t)(b - a) * 4);
    if (a < x0) x0 = a;
    if (b > x1) x1 = b;
    if (row < y0) y0 = row;
    y1 = row + 1;
  }
  r[0] = x0, r[1] = y0, r[2] = x1 - x0, r[3] = y1 - y0;
  return x1 > 0;
}

/* Grabs one box of the focused window and appends as a lossless rectangle
 * what changed in it (all of it when the shadow is new): 1 if added. */
static int add_rect(rm_screen_echo *e, int x, int y, int w, int h, int whole)
{
  uint32_t colour;
  int enc, p[4] = {0, 0, w, h}, rc = fetch(e, x, y, w, h);
  const uint32_t *px;
  if (rc <= 0) return rc;
  if (!whole && !changed(e, x, y, w, h, p)) return 0;
  px = e->px + (size_t)p[1] * w + p[0]; /* the part, at the box's stride w */
  e->pay.len = 0;
  if (rm__count_colours(px, w, p[2], p[3], 1, &colour) == 1) {
    uint8_t rgb[3] = {(uint8_t)(colour >> 16), (uint8_t)(colour >> 8), (uint8_t)colour};
    enc = RM_SCREEN_SOLID;
    rc = rm__buf_put(&e->pay, rgb, 3);
  } else {
    /* Every overlay goes to every viewer: never "the palette before". */
    rm__encoder_forget(e->enc);
    rc = enc = rm__encode_lossless(e->enc, px, w, p[2], p[3], &e->pay);
  }
  if (rc < 0) return rc;
  rc = rm__put_rect(&e->rects, enc, x + p[0], y + p[1], p[2], p[3], e->pay.p, e->pay.len);
  return rc < 0 ? rc : 1;
}

/* u8 type, varint seq, rectangles: what changed in the boxes, cut to the
 * focused window. */
static int build(rm_screen_echo *e, uint32_t *seq)
{
  int f[4], n = 0, whole, rc;
  uint8_t head = RM_SCREEN_MSG_OVERLAY;
  focus_box(e, f);
  if ((whole = follow_focus(e, f)) < 0) return whole;
  e->rects.len = 0;
  for (int i = 0; i < e->nbox; i++) {
    int *b = e->box[i];
    int x0 = b[0] > f[0] ? b[0] : f[0], y0 = b[1] > f[1] ? b[1] : f[1];
    int x1 = b[2] < f[2] ? b[2] : f[2], y1 = b[3] < f[3] ? b[3] : f[3];
    if (x0 >= x1 || y0 >= y1 || (long)(x1 - x0) * (y1 - y0) > RM__ECHO_MAX) continue;
    if ((rc = add_rect(e, x0, y0, x1 - x0, y1 - y0, whole || !e->shadow)) < 0) return rc;
    n += rc;
  }
  e->nbox = 0;
  if (!n) return 0;
  /* After the pixels arrived: a frame drained later than this shows them. */
  *seq = atomic_fetch_add(&e->s->seq, 1) + 1;
  e->msg.len = 0;
  if (rm__buf_put(&e->msg, &head, 1) < 0 || rm__buf_varint(&e->msg, *seq) < 0 ||
      rm__buf_put(&e->msg, e->rects.p, e->rects.len) < 0)
    return RM_ENOMEM;
  atomic_store(&e->s->echo_seq, *seq);
  return 1;
}

int rm_screen_echo_step(rm_screen_echo *e, int want, const uint8_t **msg, size_t *len, uint32_t *seq)
{
  int rc = 0;
  /* Until Xlib's queue is empty: the grab's round trips may queue events. */
  while (rc == 0) {
    if (e->dead) return RM_EIO;
    read_events(e, want);
    if (e->dead) return RM_EIO;
    if (!e->nbox) return 0;
    rc = build(e, seq);
  }
  if (rc < 0) return rc;
  *msg = e->msg.p;
  *len = e->msg.len;
  return 1;
}
