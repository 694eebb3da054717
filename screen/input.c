/* screen/input.c: client input messages, injected with XTest, and the clipboard.
 *
 * Every message is checked in full before anything is injected: exact length,
 * zero reserved bytes, known values, valid UTF-8. Coordinates are clamped to
 * the screen rather than refused, since a viewer may still be drawing the
 * size from before a resize.
 *
 * Keys: the browser's KeyboardEvent.key says what the user meant, .code which
 * physical key it was. Modifiers go by code (left or right), named keys by
 * key, characters by their keysym. A character the keyboard map lacks is put
 * on a spare keycode for as long as it is needed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <X11/XKBlib.h>
#include <X11/Xatom.h>
#include <X11/keysym.h>
#include <X11/extensions/XTest.h>
#include "screen/internal.h"


typedef struct key_name {
  const char *name;
  unsigned long sym;
} key_name;

static const key_name by_code[] = {
  {"ShiftLeft", XK_Shift_L},     {"ShiftRight", XK_Shift_R}, {"ControlLeft", XK_Control_L},
  {"ControlRight", XK_Control_R}, {"AltLeft", XK_Alt_L},      {"AltRight", XK_Alt_R},
  {"MetaLeft", XK_Super_L},      {"MetaRight", XK_Super_R},  {"OSLeft", XK_Super_L},
  {"OSRight", XK_Super_R},       {NULL, 0}};

static const key_name by_key[] = {
  {"Enter", XK_Return},      {"Backspace", XK_BackSpace}, {"Tab", XK_Tab},
  {"Escape", XK_Escape},     {"Delete", XK_Delete},       {"Home", XK_Home},
  {"End", XK_End},           {"PageUp", XK_Page_Up},      {"PageDown", XK_Page_Down},
  {"Insert", XK_Insert},     {"ArrowLeft", XK_Left},      {"ArrowRight", XK_Right},
  {"ArrowUp", XK_Up},        {"ArrowDown", XK_Down},      {"CapsLock", XK_Caps_Lock},
  {"ContextMenu", XK_Menu},  {"AltGraph", XK_ISO_Level3_Shift}, {NULL, 0}};

static unsigned long find_name(const key_name *t, const char *name)
{
  for (; t->name; t++)
    if (strcmp(t->name, name) == 0) return t->sym;
  return NoSymbol;
}

/* Decodes one UTF-8 sequence; returns its length, 0 if invalid. */
static int utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
  int len = p[0] < 0x80 ? 1 : (p[0] & 0xe0) == 0xc0 ? 2 : (p[0] & 0xf0) == 0xe0 ? 3
          : (p[0] & 0xf8) == 0xf0 ? 4 : 0;
  uint32_t c;
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (!len || (size_t)len > n) return 0;
  c = len == 1 ? p[0] : p[0] & (0x7f >> len);
  for (int i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    c = (c << 6) | (p[i] & 0x3f);
  }
  if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  *cp = c;
  return len;
}

static int utf8_valid(const uint8_t *p, size_t n)
{
  uint32_t cp;
  for (size_t i = 0; i < n;) {
    int k = utf8_next(p + i, n - i, &cp);
    if (!k) return 0;
    i += (size_t)k;
  }
  return 1;
}

/* The keysym a browser key event means, or NoSymbol. */
static unsigned long keysym_for(const char *code, const char *key)
{
  unsigned long sym;
  uint32_t cp;
  size_t n = strlen(key);
  if (strcmp(key, "AltGraph") != 0 && (sym = find_name(by_code, code)) != NoSymbol) return sym;
  if ((sym = find_name(by_key, key)) != NoSymbol) return sym;
  if (key[0] == 'F' && key[1] >= '1' && key[1] <= '9') {
    int f = atoi(key + 1);
    if (f >= 1 && f <= 24 && n <= 3) return XK_F1 + (unsigned long)(f - 1);
  }
  if (n && utf8_next((const uint8_t *)key, n, &cp) == (int)n && cp >= 0x20 && cp != 0x7f)
    return cp < 0x100 ? cp : 0x01000000ul | cp; /* Latin-1 keysyms are the code points */
  /* A dead or unidentified key: fall back to the physical key. */
  if (strncmp(code, "Key", 3) == 0 && code[3] >= 'A' && code[3] <= 'Z' && !code[4])
    return (unsigned long)(code[3] - 'A' + 'a');
  if (strncmp(code, "Digit", 5) == 0 && code[5] >= '0' && code[5] <= '9' && !code[6])
    return (unsigned long)code[5];
  return NoSymbol;
}

/* The keycode for sym, remapping the spare keycode when the map lacks it. */
static int keycode_for(rm_screen *s, unsigned long sym, int *need_shift)
{
  int kc;
  *need_shift = 0;
  if (sym == s->spare_keysym && s->spare_keycode) return s->spare_keycode;
  kc = XKeysymToKeycode(s->dpy, sym);
  if (kc) {
    *need_shift = XkbKeycodeToKeysym(s->dpy, (KeyCode)kc, 0, 0) != sym &&
                  XkbKeycodeToKeysym(s->dpy, (KeyCode)kc, 0, 1) == sym;
    return kc;
  }
  if (!s->spare_keycode) return 0;
  {
    KeySym syms[2] = {sym, sym}; /* same on both levels: Shift cannot change it */
    XChangeKeyboardMapping(s->dpy, s->spare_keycode, 2, syms, 1);
    XSync(s->dpy, False);
  }
  s->spare_keysym = sym;
  return s->spare_keycode;
}

static rm__pressed *find_pressed(rm_screen *s, const char *code)
{
  for (int i = 0; i < RM__PRESSED_MAX; i++)
    if (s->pressed[i].keycode && strcmp(s->pressed[i].code, code) == 0) return &s->pressed[i];
  return NULL;
}

static void key_event(rm_screen *s, const char *code, const char *key, int down)
{
  rm__pressed *p = find_pressed(s, code);
  unsigned long sym = keysym_for(code, key);
  int kc, need_shift, shift_kc;
  if (sym == XK_Shift_L || sym == XK_Shift_R) s->shift_down = down;
  if (!down) {
    if (p) { /* release what was pressed, whatever key says now */
      XTestFakeKeyEvent(s->dpy, (unsigned)p->keycode, False, CurrentTime);
      p->keycode = 0;
    }
    return;
  }
  if (sym == NoSymbol || !(kc = keycode_for(s, sym, &need_shift))) return;
  shift_kc = need_shift && !s->shift_down ? XKeysymToKeycode(s->dpy, XK_Shift_L) : 0;
  if (shift_kc) XTestFakeKeyEvent(s->dpy, (unsigned)shift_kc, True, CurrentTime);
  XTestFakeKeyEvent(s->dpy, (unsigned)kc, True, CurrentTime);
  if (shift_kc) XTestFakeKeyEvent(s->dpy, (unsigned)shift_kc, False, CurrentTime);
  for (int i = 0; !p && i < RM__PRESSED_MAX; i++)
    if (!s->pressed[i].keycode) p = &s->pressed[i];
  if (p) { /* auto-repeat presses the same code again: one slot per code */
    snprintf(p->code, sizeof p->code, "%s", code);
    p->keycode = kc;
  }
}

static void pointer(rm_screen *s, const uint8_t *xy)
{
  int x = xy[0] | xy[1] << 8, y = xy[2] | xy[3] << 8;
  x = x < s->w ? x : s->w - 1;
  y = y < s->h ? y : s->h - 1;
  XTestFakeMotionEvent(s->dpy, DefaultScreen(s->dpy), x, y, CurrentTime);
}

static int set_clipboard(rm_screen *s, const uint8_t *text, size_t n)
{
  char *copy = rm__screen_alloc(s, NULL, 0, n + 1);
  if (!copy) return RM_ENOMEM;
  memcpy(copy, text, n);
  copy[n] = 0;
  if (s->clip) rm__screen_alloc(s, s->clip, s->clip_len + 1, 0);
  s->clip = copy;
  s->clip_len = n;
  XSetSelectionOwner(s->dpy, s->a_clipboard, s->owner, CurrentTime);
  XSetSelectionOwner(s->dpy, XA_PRIMARY, s->owner, CurrentTime);
  XSync(s->dpy, False); /* a paste right after this message must find us owning it */
  return RM_OK;
}

static int zeros(const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static int bad(const char **why, const char *reason)
{
  if (why) *why = reason;
  return RM_EINVAL;
}

static int key_message(rm_screen *s, const uint8_t *m, size_t len, const char **why)
{
  char code[RM__KEY_FIELD_MAX + 1], key[RM__KEY_FIELD_MAX + 1];
  size_t cl, kl;
  if (len < 4) return bad(why, "short key message");
  cl = m[2];
  kl = m[3];
  if (m[1] > 1 || cl < 1 || cl > RM__KEY_FIELD_MAX || kl > RM__KEY_FIELD_MAX || len != 4 + cl + kl)
    return bad(why, "malformed key message");
  for (size_t i = 0; i < cl; i++)
    if (!((m[4 + i] >= 'A' && m[4 + i] <= 'Z') || (m[4 + i] >= 'a' && m[4 + i] <= 'z') ||
          (m[4 + i] >= '0' && m[4 + i] <= '9')))
      return bad(why, "bad key code");
  if (!utf8_valid(m + 4 + cl, kl) || memchr(m + 4 + cl, 0, kl)) return bad(why, "bad key value");
  memcpy(code, m + 4, cl);
  code[cl] = 0;
  memcpy(key, m + 4 + cl, kl);
  key[kl] = 0;
  key_event(s, code, key, m[1]);
  return RM_OK;
}

static int dispatch(rm_screen *s, const uint8_t *m, size_t len, uint8_t *reply, size_t *reply_len,
                    const char **why)
{
  uint32_t n;
  switch (m[0]) {
  case RM_SCREEN_IN_MOVE:
    if (len != 6 || m[1]) return bad(why, "malformed move message");
    pointer(s, m + 2);
    return RM_OK;
  case RM_SCREEN_IN_BUTTON:
    if (len != 8 || m[1] < 1 || m[1] > 7 || m[2] > 1 || m[3])
      return bad(why, "malformed button message");
    pointer(s, m + 4);
    XTestFakeButtonEvent(s->dpy, m[1], m[2], CurrentTime); /* X numbers buttons as we do */
    return RM_OK;
  case RM_SCREEN_IN_KEY:
    return key_message(s, m, len, why);
  case RM_SCREEN_IN_CLIPBOARD:
    if (len < 8 || !zeros(m + 1, 3)) return bad(why, "malformed clipboard message");
    n = (uint32_t)m[4] | (uint32_t)m[5] << 8 | (uint32_t)m[6] << 16 | (uint32_t)m[7] << 24;
    if (n != len - 8) return bad(why, "clipboard length mismatch");
    if (!utf8_valid(m + 8, n)) return bad(why, "clipboard is not UTF-8");
    return set_clipboard(s, m + 8, n);
  case RM_SCREEN_IN_PING:
    if (len != 12 || !zeros(m + 1, 3)) return bad(why, "malformed ping message");
    memcpy(reply, m, 12); /* the ping itself, the client's timestamp untouched */
    reply[0] = RM_SCREEN_MSG_PONG;
    *reply_len = 12;
    return RM_OK;
  default:
    return bad(why, "unknown message type");
  }
}

int rm_screen_input(rm_screen *s, const uint8_t *msg, size_t len, uint8_t *reply,
                    size_t *reply_len, const char **why)
{
  int rc;
  *reply_len = 0;
  if (s->dead) {
    if (why) *why = "X connection lost";
    return RM_EIO;
  }
  if (len > s->max_clipboard + 8) {
    if (why) *why = "message too large";
    return RM_EFULL;
  }
  if (len == 0) return bad(why, "empty message");
  if (!s->xtest && msg[0] != RM_SCREEN_IN_PING && msg[0] != RM_SCREEN_IN_CLIPBOARD) {
    if (why) *why = "XTest is not available";
    return RM_EIO;
  }
  rc = dispatch(s, msg, len, reply, reply_len, why);
  if (rc == RM_OK && (msg[0] == RM_SCREEN_IN_KEY || msg[0] == RM_SCREEN_IN_BUTTON))
    atomic_store(&s->input_ms, rm__now_ms()); /* what is drawn next, if small, is its echo (echo.c) */
  XFlush(s->dpy);
  return rc;
}

/* Another client asks for the clipboard text we own. */
void rm__screen_selection_request(rm_screen *s, XEvent *ev)
{
  XSelectionRequestEvent *r = &ev->xselectionrequest;
  XSelectionEvent n;
  Atom prop = r->property != None ? r->property : r->target; /* pre-ICCCM requestors */
  memset(&n, 0, sizeof n);
  n.type = SelectionNotify;
  n.requestor = r->requestor;
  n.selection = r->selection;
  n.target = r->target;
  n.time = r->time;
  n.property = None;
  if (r->owner == s->owner && s->clip) {
    if (r->target == s->a_targets) {
      Atom t[4] = {s->a_targets, s->a_utf8, XA_STRING, s->a_text};
      XChangeProperty(s->dpy, r->requestor, prop, XA_ATOM, 32, PropModeReplace, (unsigned char *)t, 4);
      n.property = prop;
    } else if (r->target == s->a_utf8 || r->target == XA_STRING || r->target == s->a_text) {
      XChangeProperty(s->dpy, r->requestor, prop, r->target == XA_STRING ? XA_STRING : s->a_utf8, 8,
                      PropModeReplace, (unsigned char *)s->clip, (int)s->clip_len);
      n.property = prop;
    }
  }
  XSendEvent(s->dpy, r->requestor, False, NoEventMask, (XEvent *)&n);
  XFlush(s->dpy);
}

/* The highest keycode with no keysym at all is ours to borrow. */
static int find_spare_keycode(Display *d)
{
  int min, max, per, spare = 0;
  KeySym *map;
  XDisplayKeycodes(d, &min, &max);
  map = XGetKeyboardMapping(d, (KeyCode)min, max - min + 1, &per);
  if (!map) return 0;
  for (int kc = max; kc >= min && !spare; kc--) {
    int used = 0;
    for (int i = 0; i < per; i++) used |= map[(kc - min) * per + i] != NoSymbol;
    if (!used) spare = kc;
  }
  XFree(map);
  return spare;
}

void rm__screen_input_init(rm_screen *s)
{
  int ev, er, maj, min;
  s->xtest = XTestQueryExtension(s->dpy, &ev, &er, &maj, &min);
  s->spare_keycode = find_spare_keycode(s->dpy);
  s->owner = XCreateSimpleWindow(s->dpy, DefaultRootWindow(s->dpy), -10, -10, 1, 1, 0, 0, 0);
  s->a_clipboard = XInternAtom(s->dpy, "CLIPBOARD", False);
  s->a_utf8 = XInternAtom(s->dpy, "UTF8_STRING", False);
  s->a_targets = XInternAtom(s->dpy, "TARGETS", False);
  s->a_text = XInternAtom(s->dpy, "TEXT", False);
}

void rm__screen_input_close(rm_screen *s)
{
  if (!s->dead) {
    for (int i = 0; i < RM__PRESSED_MAX; i++) /* leave no key stuck down */
      if (s->pressed[i].keycode)
        XTestFakeKeyEvent(s->dpy, (unsigned)s->pressed[i].keycode, False, CurrentTime);
    if (s->spare_keysym) {
      KeySym none[2] = {NoSymbol, NoSymbol};
      XChangeKeyboardMapping(s->dpy, s->spare_keycode, 2, none, 1);
    }
    if (s->owner) XDestroyWindow(s->dpy, s->owner);
    XSync(s->dpy, False);
  }
  if (s->clip) rm__screen_alloc(s, s->clip, s->clip_len + 1, 0);
  s->clip = NULL;
}
