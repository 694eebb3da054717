/* remora/http.h: the HTTP/1.1 protocol core.
 *
 * Pure code over buffers: no sockets, no event loop, no Lua. A server feeds
 * the bytes it reads to a request parser and writes what the response helpers
 * format. Everything here is bounded by a limit the caller can change, and
 * every failure is a negative code (RM_* from loop.h, or RM_HTTP_* below) that
 * rm_http_status_for() turns into the status to answer with.
 *
 * The input contract, shared by the request parser and the multipart parser:
 * each call gets the bytes not yet consumed, and returns how many it consumed.
 * Bytes it did not consume must be passed again, unchanged, at the start of
 * the next call, with whatever arrived since appended. The parser remembers
 * how far it looked, so feeding one byte at a time costs no rescanning. The
 * buffer itself may move between calls (realloc is fine); only its contents
 * must be kept.
 *
 * A head (request line and header fields, or a part's header fields) is not
 * consumed until it is complete; the call that completes it consumes it whole
 * and the pointers it reports point into that call's buffer. They stay valid
 * for as long as the caller keeps those bytes where they were.
 */
#ifndef REMORA_HTTP_H
#define REMORA_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "remora/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Errors of the protocol, each with its own status (see rm_http_status_for). */
enum {
  RM_HTTP_EBAD = -100,     /* 400 malformed request */
  RM_HTTP_EURI = -101,     /* 414 request line too long */
  RM_HTTP_EHEAD = -102,    /* 431 header section too large or too many fields */
  RM_HTTP_EBODY = -103,    /* 413 body larger than allowed */
  RM_HTTP_ECODING = -104,  /* 501 transfer coding not implemented */
  RM_HTTP_EVERSION = -105, /* 505 version other than HTTP/1.0 and HTTP/1.1 */
  RM_HTTP_ERANGE = -106    /* 416 range not satisfiable */
};
/* The status to answer an error with: 400 for RM_EINVAL and unknown codes,
 * 503 for RM_ENOMEM. */
int rm_http_status_for(int err);

/* A slice of someone else's buffer. */
typedef struct rm_http_slice {
  const char *p;
  size_t len;
} rm_http_slice;

typedef struct rm_http_header {
  const char *name;
  size_t name_len;
  const char *value; /* surrounding whitespace removed */
  size_t value_len;
} rm_http_header;

/* Case-insensitive lookup: the first field called name, or NULL. */
const rm_http_header *rm_http_header_find(const rm_http_header *h, size_t n, const char *name);
/* Is token (case-insensitive) an element of the comma-separated list v?
 * For Connection, Upgrade, Transfer-Encoding and the like. */
int rm_http_has_token(const char *v, size_t len, const char *token);
/* Finds parameter name in a value like `type/sub; a=b; c="d"`. Returns 1 and
 * the value (quotes removed, backslash escapes left as sent), 0 when absent,
 * RM_HTTP_EBAD when the parameters are malformed. */
int rm_http_param(const char *v, size_t len, const char *name, rm_http_slice *out);

/* ---- Request parser ---------------------------------------------------- */

typedef struct rm_http_limits {
  size_t max_request_line; /* 414 past it; default 8 KiB */
  size_t max_head;         /* 431: bytes of header fields (trailers included); 16 KiB */
  size_t max_headers;      /* 431: number of fields (trailers included); 100 */
  size_t max_chunk_line;   /* 400: a chunk-size line with its extensions; 4 KiB */
  uint64_t max_body;       /* 413: decoded body bytes; 8 MiB */
} rm_http_limits;

/* Flags of a parsed request. */
enum {
  RM_HTTP_KEEP_ALIVE = 1,      /* the connection may carry another request */
  RM_HTTP_CHUNKED = 2,         /* the body is chunked */
  RM_HTTP_EXPECT_CONTINUE = 4, /* the client waits for "100 Continue" */
  RM_HTTP_UPGRADE = 8          /* Connection: upgrade with Upgrade: websocket */
};

typedef struct rm_http_request {
  rm_http_slice method;
  rm_http_slice target;
  int minor;                /* 0: HTTP/1.0, 1: HTTP/1.1 */
  unsigned flags;           /* RM_HTTP_KEEP_ALIVE ... */
  int64_t content_length;   /* -1 when absent */
  size_t head_len;          /* bytes of request line and header section */
  const rm_http_header *headers;
  size_t nheaders;
  const rm_http_header *trailers; /* after a chunked body, once DONE */
  size_t ntrailers;
} rm_http_request;

/* What one call of a parser produced. */
enum {
  RM_HTTP_AGAIN, /* needs more input */
  RM_HTTP_HEAD,  /* request head complete: see rm_http_parser_request() */
  RM_HTTP_PART,  /* multipart: a part's head complete: see rm_http_multipart_part() */
  RM_HTTP_BODY,  /* data/len is a piece of body, inside the caller's buffer */
  RM_HTTP_DONE   /* the message ended */
};
typedef struct rm_http_event {
  int type;
  const char *data;
  size_t len;
} rm_http_event;

typedef struct rm_http_parser rm_http_parser;

/* lim may be NULL (defaults), as may alloc (realloc/free); zero fields of lim
 * take their default. Returns NULL when out of memory. */
rm_http_parser *rm_http_parser_new(const rm_http_limits *lim, rm_alloc_fn alloc, void *ud);
void rm_http_parser_free(rm_http_parser *p);
void rm_http_limits_default(rm_http_limits *lim);

/* Parses one message. Returns the bytes consumed (see the input contract
 * above), or an error; ev says what happened. Call it again, with what is left
 * of the buffer, until it says RM_HTTP_AGAIN (read more, then call again) or
 * RM_HTTP_DONE. A message ends exactly where its body ends: the bytes that
 * follow (a pipelined request) are left unconsumed. After RM_HTTP_DONE, calls
 * keep answering DONE until rm_http_parser_reset(). After an error every call
 * returns that error; the connection cannot be trusted for more requests. */
long rm_http_parse(rm_http_parser *p, const char *buf, size_t len, rm_http_event *ev);
/* Prepares for the next message on the connection; the previous request's
 * fields become invalid and max_body returns to its configured value. */
void rm_http_parser_reset(rm_http_parser *p);
/* The request, valid from RM_HTTP_HEAD until the next reset. */
const rm_http_request *rm_http_parser_request(const rm_http_parser *p);
/* Raises or lowers the body limit of this message only; allowed after
 * RM_HTTP_HEAD, before the first body piece, e.g. for an upload route. */
void rm_http_parser_set_max_body(rm_http_parser *p, uint64_t max);
/* A short reason for the log after an error ("obsolete line folding"). */
const char *rm_http_parser_error(const rm_http_parser *p);

/* ---- Response ------------------------------------------------------------ */

/* "Not Found" for 404; "Unknown" for a status it does not know. */
const char *rm_http_reason(int status);

/* Writes a response head into a buffer the caller owns. The first failure
 * sticks: later calls do nothing and rm_http_head_end() returns it. */
typedef struct rm_http_head {
  char *buf;
  size_t cap, len;
  int err;
} rm_http_head;

enum { RM_HTTP_FRAME_NONE, RM_HTTP_FRAME_LENGTH, RM_HTTP_FRAME_CHUNKED };

/* "HTTP/1.1 status reason\r\n"; reason NULL takes the table's. */
void rm_http_head_begin(rm_http_head *w, char *buf, size_t cap, int status, const char *reason);
/* Refuses (RM_EINVAL) a name that is not a token and a value holding CR, LF,
 * NUL or other control bytes: no header injection through this call. */
void rm_http_head_add(rm_http_head *w, const char *name, const char *value, size_t value_len);
/* Appends whole field lines ("Name: value\r\n"...) as they are, unchecked:
 * for a server's own lines, made once (its Date and Server lines). */
void rm_http_head_add_lines(rm_http_head *w, const char *lines, size_t n);
/* Adds the framing (Content-Length: length, or Transfer-Encoding: chunked,
 * or nothing) and the blank line. Returns the head's length or an error
 * (RM_EFULL when it did not fit, RM_EINVAL for a refused field). */
long rm_http_head_end(rm_http_head *w, int framing, uint64_t length);

/* A chunk's size line ("1a2b\r\n") for a chunk of n bytes (n > 0): send it,
 * the data and "\r\n" in one writev. The last chunk is RM_HTTP_LAST_CHUNK. */
#define RM_HTTP_CHUNK_HEADER_MAX 19
#define RM_HTTP_LAST_CHUNK "0\r\n\r\n"
size_t rm_http_chunk_header(char out[RM_HTTP_CHUNK_HEADER_MAX], uint64_t n);

/* IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT": RM_HTTP_DATE_LEN bytes and a NUL. */
#define RM_HTTP_DATE_LEN 29
int rm_http_date_format(time_t t, char out[RM_HTTP_DATE_LEN + 1]);
/* Parses an IMF-fixdate (the format every sender must use); the obsolete
 * RFC 850 and asctime forms are refused with RM_HTTP_EBAD. */
int rm_http_date_parse(const char *s, size_t len, time_t *out);
/* Formats once per second: a server keeps one per loop thread. Zero it first. */
typedef struct rm_http_date_cache {
  time_t sec;
  char text[RM_HTTP_DATE_LEN + 1];
} rm_http_date_cache;
const char *rm_http_date_cached(rm_http_date_cache *c, time_t now);

/* ---- URLs, forms, cookies ---------------------------------------------- */

/* Splits a request target at '?' (and drops a '#' fragment). */
void rm_http_target_split(const char *t, size_t len, rm_http_slice *path, rm_http_slice *query);
/* Decodes %XX escapes (and '+' as space when form is set) into out, which may
 * be in itself. Returns the decoded length; RM_EINVAL for a bad escape, an
 * encoded or raw NUL; RM_EFULL when cap is too small (cap >= len always fits). */
long rm_http_percent_decode(const char *in, size_t len, char *out, size_t cap, int form);
/* Walks application/x-www-form-urlencoded pairs: returns 1 with the next
 * key and value still encoded (decode with form = 1), 0 at the end. Empty
 * pairs are skipped; a key without '=' has an empty value. */
int rm_http_form_next(const char **cur, const char *end, rm_http_slice *key, rm_http_slice *value);
/* Walks a Cookie header's name=value pairs: 1 with the next, 0 at the end.
 * Pairs without '=' are skipped; surrounding double quotes are removed. */
int rm_http_cookie_next(const char **cur, const char *end, rm_http_slice *name, rm_http_slice *value);

enum { RM_HTTP_PATH_NO_HIDDEN = 1 }; /* refuse segments that start with '.' */
/* Decodes and normalises an origin-form path ("/a/./b/../c" -> "/a/c"):
 * resolves "." and "..", merges "//", keeps a trailing '/'. Refuses
 * (RM_EINVAL) a path not starting with '/', one that would climb above the
 * root, NUL, control bytes, '\' and an encoded '/' (raw or encoded). cap must
 * be at least len + 1 (RM_EFULL otherwise). Returns the output length. */
long rm_http_path_normalize(const char *path, size_t len, char *out, size_t cap, unsigned flags);

/* ---- multipart/form-data ------------------------------------------------ */

typedef struct rm_http_multipart_limits {
  size_t max_part_head;    /* bytes of one part's header fields; 8 KiB */
  size_t max_part_headers; /* fields in one part; 16 */
} rm_http_multipart_limits;

typedef struct rm_http_part {
  rm_http_slice name;         /* Content-Disposition name */
  rm_http_slice filename;     /* .p NULL when the part is not a file */
  rm_http_slice content_type; /* .p NULL when absent (text/plain) */
} rm_http_part;

typedef struct rm_http_multipart rm_http_multipart;

/* Takes the request's Content-Type value (multipart/form-data; boundary=...).
 * Returns RM_OK, RM_HTTP_EBAD without a usable boundary, or RM_ENOMEM. */
int rm_http_multipart_new(rm_http_multipart **out, const char *content_type, size_t len,
                          const rm_http_multipart_limits *lim, rm_alloc_fn alloc, void *ud);
void rm_http_multipart_free(rm_http_multipart *m);
/* Feeds decoded body bytes, with the request parser's input contract. Events:
 * RM_HTTP_PART (a part begins; see rm_http_multipart_part), RM_HTTP_BODY (a
 * piece of the current part's data), RM_HTTP_DONE (closing boundary seen; the
 * epilogue is consumed and ignored), RM_HTTP_AGAIN. A body that ends before
 * DONE was truncated. */
long rm_http_multipart_parse(rm_http_multipart *m, const char *buf, size_t len, rm_http_event *ev);
const rm_http_part *rm_http_multipart_part(const rm_http_multipart *m);

/* ---- Static files: types, ranges, validators ------------------------------- */

/* By the extension of the path's last segment, case-insensitive; text types
 * carry "; charset=utf-8". Unknown: "application/octet-stream". */
const char *rm_http_mime_type(const char *path, size_t len);

/* A Range header against a representation of size bytes. Returns 1 with the
 * inclusive range [*first, *last] (answer 206), 0 when the header is to be
 * ignored (malformed, another unit, or several ranges: answer 200 with the
 * whole), or RM_HTTP_ERANGE (answer 416). */
int rm_http_range(const char *v, size_t len, uint64_t size, uint64_t *first, uint64_t *last);

/* A strong validator from size and modification time, quotes included.
 * Returns its length, or RM_EFULL. 40 bytes always suffice. */
long rm_http_etag(char *out, size_t cap, uint64_t size, int64_t mtime);
/* If-None-Match against etag (weak comparison, "*" matches): 1 means the
 * client's copy is current (304 for GET/HEAD). */
int rm_http_etag_match(const char *v, size_t len, const char *etag, size_t etag_len);
/* If-Modified-Since: 1 when the resource has not changed since that date
 * (304). Invalid dates never match. Ignore it when If-None-Match is present. */
int rm_http_not_modified(const char *v, size_t len, time_t mtime);

#ifdef __cplusplus
}
#endif
#endif
