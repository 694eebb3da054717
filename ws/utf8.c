/* ws/utf8.c: incremental UTF-8 validation for text messages (RFC 3629).
 *
 * A deterministic automaton in the manner of Bjoern Hoehrmann's decoder: each
 * byte falls into one of 12 classes, and (state, class) gives the next state.
 * The states remember exactly what the next byte may be, so an invalid text is
 * rejected at the first byte that cannot continue it (fail fast, as Autobahn
 * checks): overlong forms, UTF-16 surrogates and anything above U+10FFFF never
 * get past their second byte. Runs of ASCII skip the automaton 8 bytes at a time.
 */
#include <string.h>
#include "ws/internal.h"

/* Byte classes. */
enum {
  ASCII,  /* 00..7F */
  CONT1,  /* 80..8F continuation */
  CONT2,  /* 90..9F continuation */
  CONT3,  /* A0..BF continuation */
  BAD,    /* C0 C1 F5..FF: never in UTF-8 */
  LEAD2,  /* C2..DF */
  E0,     /* E0: next must be A0..BF, or the form is overlong */
  LEAD3,  /* E1..EC EE EF */
  ED,     /* ED: next must be 80..9F, or it encodes a surrogate */
  F0,     /* F0: next must be 90..BF, or the form is overlong */
  LEAD4,  /* F1..F3 */
  F4,     /* F4: next must be 80..8F, or it is above U+10FFFF */
  NCLASS
};

static const uint8_t byte_class[256] = {
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
   1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,
   2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
   3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,
   3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,
   4,  4,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,
   5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,
   6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  7,
   9, 10, 10, 10, 11,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,
};

/* States: what the automaton still expects. Each is its row's offset in
 * next_state, which saves a multiplication per byte. */
enum {
  OK = RM_WS_UTF8_ACCEPT, /* between characters */
  NO = 1 * NCLASS,        /* rejected (sticky) */
  NEED1 = 2 * NCLASS,     /* one more continuation byte, any */
  NEED2 = 3 * NCLASS,     /* two more, any */
  AFTER_E0 = 4 * NCLASS,  /* A0..BF, then one more */
  AFTER_ED = 5 * NCLASS,  /* 80..9F, then one more */
  NEED3 = 6 * NCLASS,     /* three more, any */
  AFTER_F0 = 7 * NCLASS,  /* 90..BF, then two more */
  AFTER_F4 = 8 * NCLASS   /* 80..8F, then two more */
};

/* next_state[state + class] */
static const uint8_t next_state[9 * NCLASS] = {
  /* ASCII CONT1  CONT2  CONT3  BAD LEAD2  E0        LEAD3  ED        F0        LEAD4  F4 */
  OK,     NO,    NO,    NO,    NO, NEED1, AFTER_E0, NEED2, AFTER_ED, AFTER_F0, NEED3, AFTER_F4, /* OK */
  NO,     NO,    NO,    NO,    NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* NO */
  NO,     OK,    OK,    OK,    NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* NEED1 */
  NO,     NEED1, NEED1, NEED1, NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* NEED2 */
  NO,     NO,    NO,    NEED1, NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* AFTER_E0 */
  NO,     NEED1, NEED1, NO,    NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* AFTER_ED */
  NO,     NEED2, NEED2, NEED2, NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* NEED3 */
  NO,     NO,    NEED2, NEED2, NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* AFTER_F0 */
  NO,     NEED2, NO,    NO,    NO, NO,    NO,       NO,    NO,       NO,       NO,    NO,       /* AFTER_F4 */
};

#define HIGH_BITS 0x8080808080808080ull

int rm_ws_utf8_validate(uint32_t *state, const uint8_t *p, size_t n)
{
  uint32_t s = *state;
  size_t i = 0;
  while (i < n) {
    if (s == OK && p[i] < 0x80) { /* a run of ASCII: no automaton needed */
      uint64_t w;
      while (n - i >= 8) {
        memcpy(&w, p + i, 8);
        if (w & HIGH_BITS)
          break;
        i += 8;
      }
      while (i < n && p[i] < 0x80)
        i++;
      continue;
    }
    s = next_state[s + byte_class[p[i++]]];
    if (s == NO)
      break;
  }
  *state = s;
  return s == NO ? RM_WS_EBADDATA : RM_OK;
}
