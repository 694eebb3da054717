/* screen/screen.h: the screen-share engine.
 *
 * A screen (rm_screen) is one X display: it keeps the latest framebuffer, cut
 * into 64x64 tiles, each with a version that grows when its pixels change.
 * rm_screen_poll() learns what was drawn from XDamage, grabs only those tiles
 * (XShm, else XGetImage) and bumps the version of the tiles whose pixels
 * really differ.
 *
 * A viewer (rm_screen_viewer) is one browser. It remembers which version of
 * each tile it has, so rm_screen_frame() encodes only what that viewer lacks;
 * a viewer asked less often simply skips intermediate versions. The message
 * format and the Lua API are in docs/screen-protocol.md.
 *
 * The echo lane (rm_screen_echo) is a second X connection that sends the
 * small damage right after a key or button as an OVERLAY, while the main
 * lane may be busy grabbing and encoding a big frame.
 *
 * One thread at a time touches a screen and its viewers, with two
 * exceptions: rm_screen_grab and rm_screen_frame may run on a worker while
 * the owning thread calls rm_screen_input (see rm_screen_grab), and an echo
 * lane runs on a thread of its own.
 */
#ifndef REMORA_SCREEN_H
#define REMORA_SCREEN_H

#include <stddef.h>
#include <stdint.h>
#include "remora/loop.h"

#define RM_SCREEN_TILE 64

/* Message types: server to client... */
enum { RM_SCREEN_MSG_FRAME = 1, RM_SCREEN_MSG_PONG = 2, RM_SCREEN_MSG_OVERLAY = 3 };
/* ...and client to server. */
enum {
  RM_SCREEN_IN_MOVE = 1,
  RM_SCREEN_IN_BUTTON = 2,
  RM_SCREEN_IN_KEY = 3,
  RM_SCREEN_IN_CLIPBOARD = 4,
  RM_SCREEN_IN_PING = 5
};
/* Rectangle encodings. */
enum {
  RM_SCREEN_SOLID = 0,
  RM_SCREEN_PNG = 1,
  RM_SCREEN_JPEG = 2,
  RM_SCREEN_COPY = 3,
  RM_SCREEN_INDEXED = 4,
  RM_SCREEN_INDEXED_Z = 5
};
/* Frame flags: what follows the first two bytes. */
enum { RM_SCREEN_FULL = 1, RM_SCREEN_TIME = 2, RM_SCREEN_SEQ = 4 };

#define RM_SCREEN_REPLY_MAX 12 /* the largest reply rm_screen_input() writes */

typedef struct rm_screen rm_screen;
typedef struct rm_screen_viewer rm_screen_viewer;

typedef struct rm_screen_config {
  const char *display;   /* NULL: $DISPLAY */
  int no_shm;            /* 1: always XGetImage (for tests and remote displays) */
  size_t max_clipboard;  /* bytes of clipboard text accepted; 0: 256 KiB */
  rm_alloc_fn alloc;     /* NULL: realloc/free */
  void *alloc_ud;
} rm_screen_config;

/* Opens the display and captures a first full frame. On failure returns a
 * negative RM_* code and writes a reason into err. */
int rm_screen_open(const rm_screen_config *cfg, rm_screen **out, char *err, size_t errlen);
void rm_screen_close(rm_screen *s);

void rm_screen_size(const rm_screen *s, int *w, int *h);
int rm_screen_fd(const rm_screen *s);
/* Drains X events (damage, resize, selection requests) and grabs what was
 * damaged. Returns 1 if some tile changed or the size changed, 0 if not,
 * RM_EIO once the X connection is lost. */
int rm_screen_poll(rm_screen *s);
/* Drains X events without grabbing: damage accumulates until the next poll,
 * so a caller whose viewers are all busy grabs once when one is ready, not
 * at every tick. Returns 1 if something was drawn (or the size changed)
 * since the last poll, 0 if not, RM_EIO once the X connection is lost. */
int rm_screen_drain(rm_screen *s);
/* The other half of poll: grabs what drain saw drawn (a key's echo does not
 * wait for it: see the echo lane below). Returns as poll. It
 * touches the framebuffer and the X connection but no input state, so it may
 * run on another thread while rm_screen_input runs (Xlib is initialised for
 * threads), provided nothing else touches the screen meanwhile. */
int rm_screen_grab(rm_screen *s);
/* The framebuffer: w*h pixels 0x00RRGGBB, row stride w. Valid until the next
 * poll. */
const uint32_t *rm_screen_pixels(const rm_screen *s);
uint32_t rm_screen_tile_version(const rm_screen *s, int tx, int ty);
int rm_screen_has_shm(const rm_screen *s);

/* Applies one client message (see docs/screen-protocol.md). Returns RM_OK,
 * RM_EINVAL for a malformed message, RM_EFULL for an oversized one, RM_EIO if
 * the X connection is gone. A ping writes its answer into reply (at least
 * RM_SCREEN_REPLY_MAX bytes) and sets *reply_len; other messages set it to 0.
 * why (may be NULL) receives a static reason on failure. */
int rm_screen_input(rm_screen *s, const uint8_t *msg, size_t len,
                    uint8_t *reply, size_t *reply_len, const char **why);

typedef struct rm_screen_viewer_config {
  int quality;        /* JPEG quality 1..100; 0: 75 */
  int png_level;      /* zlib level 1..9; 0: 6 */
  int max_colours;    /* a rectangle with more colours goes JPEG; 0: 256 */
  int timestamps;     /* 1: every frame carries the server time (for tracing latency) */
} rm_screen_viewer_config;

/* cfg may be NULL. The viewer does not keep a pointer to the screen; it may
 * outlive it, and is only ever used with the screen it was made for. */
int rm_screen_viewer_new(rm_screen *s, const rm_screen_viewer_config *cfg, rm_screen_viewer **out);
void rm_screen_viewer_free(rm_screen_viewer *v);
/* Forget what the viewer has: its next frame is the whole screen. */
void rm_screen_viewer_reset(rm_screen_viewer *v);
/* Builds one update with everything the viewer lacks. Returns 1 and points
 * *msg at it (valid until the next call on this viewer), 0 if the viewer is
 * up to date, or a negative RM_* code. */
int rm_screen_frame(rm_screen *s, rm_screen_viewer *v, const uint8_t **msg, size_t *len);

/* The echo lane of screen s (screen/echo.c): its own connection to the
 * display and its own Damage, so it may run on its own thread whatever the
 * screen's thread does; it reads only atomics of s. */
typedef struct rm_screen_echo rm_screen_echo;
int rm_screen_echo_open(rm_screen *s, rm_screen_echo **out, char *err, size_t errlen);
void rm_screen_echo_close(rm_screen_echo *e);
int rm_screen_echo_fd(const rm_screen_echo *e); /* readable: call rm_screen_echo_step */
/* Reads the lane's events. With want, small damage in the focused window
 * within 250 ms of a key or button is grabbed and made into an OVERLAY:
 * returns 1 with *msg (valid until the next step) and its number *seq.
 * Without want (the main lane is idle and will be as quick) events are
 * only read. Returns 0 when there is nothing to send, RM_EIO once the
 * connection is lost. Xlib may have read events into its queue during a
 * step: after a 1, step again before waiting on the fd. */
int rm_screen_echo_step(rm_screen_echo *e, int want, const uint8_t **msg, size_t *len, uint32_t *seq);

/* The Lua module "screen" (screen/lscreen.c). */
struct lua_State;
int luaopen_screen(struct lua_State *L);

#endif
