/* screen/internal.h: what the files of the screen layer share. */
#ifndef REMORA_SCREEN_INTERNAL_H
#define REMORA_SCREEN_INTERNAL_H

#include <stdatomic.h>
#include <X11/Xlib.h>
#include <X11/extensions/XShm.h>
#include "screen/screen.h"

#define RM__PRESSED_MAX 16  /* keys held down at once that we remember */
#define RM__KEY_FIELD_MAX 32 /* longest KeyboardEvent .code or .key accepted, in bytes */
#define RM__ECHO_AREA 4096  /* damage this small (pixels) soon after input is its echo (echo.c) */
#define RM__ECHO_MS 250     /* ...within this long of a key or button */
#define RM__ECHO_BOXES 4    /* separate echo boxes per overlay; more are joined */
#define RM__ECHO_MAX (4 * RM__ECHO_AREA) /* a box grown past this is not an echo */

/* A growable byte buffer through the layer's allocator. */
typedef struct rm__buf {
  uint8_t *p;
  size_t len, cap;
  rm_alloc_fn alloc;
  void *ud;
} rm__buf;

int rm__buf_reserve(rm__buf *b, size_t more);
int rm__buf_put(rm__buf *b, const void *p, size_t n);
void rm__buf_free(rm__buf *b);
int rm__buf_varint(rm__buf *b, uint32_t v); /* LEB128: 7 bits a byte, low first */
size_t rm__varint_len(size_t v);
void rm__put16(uint8_t *p, unsigned v); /* little-endian */
void rm__put32(uint8_t *p, uint32_t v);
void rm__put_f64(uint8_t *p, double v);
double rm__now_ms(void); /* wall clock, ms since the Unix epoch */

/* A key we pressed, so its release goes to the same keycode. */
typedef struct rm__pressed {
  char code[RM__KEY_FIELD_MAX + 1];
  int keycode;
} rm__pressed;

/* What a tile's latest version changed: columns [x0, x1] (tile-relative)
 * of the version `base`. A viewer that has `base` needs only those. */
typedef struct rm__change {
  uint32_t base;
  uint8_t x0, x1;
} rm__change;

struct rm_screen {
  Display *dpy;
  Window root;
  int w, h;           /* screen size */
  int ntx, nty;       /* tiles across and down */
  uint32_t gen;       /* bumped on every size change */
  uint32_t version;   /* the last tile version handed out */
  uint32_t *fb;       /* w*h pixels 0x00RRGGBB */
  uint32_t *tile_ver; /* ntx*nty */
  uint64_t *row_hash; /* h*ntx: hash of each tile-wide pixel row */
  uint8_t *damaged;   /* ntx*nty: damage seen since the last grab */
  rm__change *chg;    /* ntx*nty: the columns each tile's last version changed */
  int any_damage;
  /* Ordering the framebuffer against the echo lane's overlays: one counter
   * for both. A drain takes a number before it reads events; the grab that
   * follows makes the framebuffer at least as new as that moment
   * (fb_seq). An overlay takes one after its pixels arrived (echo_seq: the
   * newest). A frame whose fb_seq is above an overlay's number shows that
   * overlay's pixels or newer ones. */
  atomic_uint seq;
  uint32_t drain_seq, fb_seq;
  atomic_uint echo_seq;
  _Atomic double input_ms; /* when the last key or button was injected (read by the echo lane) */
  int resized;        /* the size changed since the last poll */
  int dead;           /* the X connection failed */

  int damage_event;   /* -1: no XDamage, grab everything every poll */
  unsigned long damage;
  int shm;            /* XShm usable */
  XShmSegmentInfo shminfo;
  XImage *shm_img;    /* w x h, reused for every grab */

  /* input */
  int xtest;
  int spare_keycode;  /* a keycode with no keysyms, for characters not on the map */
  unsigned long spare_keysym;
  int shift_down;
  rm__pressed pressed[RM__PRESSED_MAX];
  Window owner;       /* our window that owns CLIPBOARD and PRIMARY */
  char *clip;
  size_t clip_len, max_clipboard;
  Atom a_clipboard, a_utf8, a_targets, a_text;

  rm_alloc_fn alloc;
  void *alloc_ud;
};

void *rm__screen_alloc(rm_screen *s, void *p, size_t osize, size_t nsize);
void rm__screen_selection_request(rm_screen *s, XEvent *ev);
void rm__screen_input_init(rm_screen *s);
void rm__screen_input_close(rm_screen *s);
uint64_t rm__row_hash(const uint32_t *px, int n);

/* Encoders (encode.c). Each appends one payload to out. */
typedef struct rm__encoder rm__encoder;
rm__encoder *rm__encoder_new(rm_alloc_fn alloc, void *ud, int quality, int png_level);
void rm__encoder_free(rm__encoder *e);
/* Distinct colours in a rectangle, counting stops above limit. */
int rm__count_colours(const uint32_t *px, int stride, int w, int h, int limit, uint32_t *first);
int rm__depth(int n); /* the bit depth that holds n palette indices: 1, 2, 4 or 8 */
int rm__encode_png(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out);
/* PNG, or INDEXED when smaller; returns the encoding used (or < 0). */
void rm__encoder_forget(rm__encoder *e); /* the next INDEXED sends its palette (a full update) */
int rm__encode_lossless(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out);
int rm__encode_jpeg(rm__encoder *e, const uint32_t *px, int stride, int w, int h, rm__buf *out);
/* One rectangle of a message: u8 encoding, varint x, y, w, h, [varint
 * payload length for PNG, JPEG and INDEXED_Z], the n bytes of payload. */
int rm__put_rect(rm__buf *b, int enc, int x, int y, int w, int h, const uint8_t *pay, size_t n);

#endif
