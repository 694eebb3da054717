/* http/fields.h: what the http layer's files share.
 *
 * A field section (request headers, chunked trailers, a multipart part's
 * headers) is lines of "name: value" ended by an empty line. The scanner
 * walks it incrementally over the caller's buffer and reports each complete
 * field as offsets, so the buffer may move between calls.
 */
#ifndef REMORA_HTTP_FIELDS_H
#define REMORA_HTTP_FIELDS_H

#include <stddef.h>
#include <stdint.h>
#include "remora/http.h"

typedef struct rm__http_fields {
  size_t pos;       /* next byte to look at, from the buffer's start */
  size_t line;      /* where the current field line starts */
  size_t name_end;  /* the ':' */
  size_t value;     /* first byte of the value */
  size_t value_end; /* one past its last non-blank byte */
  int state;
  const char *why;  /* reason for the last error */
} rm__http_fields;

/* Called per complete field with offsets into buf; a negative return stops
 * the scan with that error. */
typedef int (*rm__http_field_fn)(void *ud, const char *buf, size_t name, size_t name_len,
                                 size_t value, size_t value_len);

void rm__http_fields_init(rm__http_fields *s, size_t start);
/* Scans buf[s->pos, len). Returns 1 when the empty line was seen (s->pos is
 * then one past it), 0 when more bytes are needed, RM_HTTP_EHEAD when the
 * section would pass offset limit, RM_HTTP_EBAD for a malformed line. */
int rm__http_fields_scan(rm__http_fields *s, const char *buf, size_t len, size_t limit,
                         rm__http_field_fn fn, void *ud);

/* The default allocator: realloc and free behind rm_alloc_fn. */
void *rm__http_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* A token character (RFC 9110): letters, digits and !#$%&'*+-.^_`|~, as
 * the bits of a 128-bit set, so that scanning a name costs no call or
 * branch per byte. */
static inline int rm__http_is_tchar(unsigned char c) {
  static const uint64_t set[2] = {0x03ff6cfa00000000u, 0x57ffffffc7fffffeu};
  return c < 128 && (set[c >> 6] >> (c & 63)) & 1;
}
/* How many bytes at p a field value may hold (VCHAR, obs-text, SP, HTAB):
 * eight at a time while no byte of them is a control byte. */
size_t rm__http_value_span(const char *p, size_t n);
/* The value of a hex digit, or -1. */
int rm__http_hex(unsigned char c);
/* Walks a comma-separated list: 1 with the next non-empty element, trimmed,
 * 0 at the end. */
int rm__http_list_next(const char **cur, const char *end, rm_http_slice *item);
/* Case-insensitive equality of s[0, len) and the NUL-terminated lit. */
int rm__http_ieq(const char *s, size_t len, const char *lit);
/* Trims spaces and tabs from both ends. */
rm_http_slice rm__http_trim(const char *s, size_t len);

#endif
