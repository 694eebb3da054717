/* http/server.h: what the server's files share (server.c: connections and
 * requests; static.c: files from the document root). */
#ifndef REMORA_HTTP_SERVER_H
#define REMORA_HTTP_SERVER_H

#include <sys/stat.h>
#include "remora/server.h"

enum {
  RM__HTTP_PATH_MAX = 2048,
  RM__HTTP_MAP_SLOTS = 64,     /* URL -> real path cache (static.c): entries */
  RM__HTTP_MAP_MS = 1000       /* ... and how long an entry is trusted */
};

/* A URL path and the real path it resolved to (static.c). */
typedef struct rm__http_mapped {
  char *path, *real;   /* both in text[] */
  uint64_t checked;    /* loop time of the realpath() */
  size_t size;         /* bytes of text[] */
  char text[];
} rm__http_mapped;

/* Where a connection is in its life. */
enum { RM__ST_IDLE, RM__ST_HEAD, RM__ST_BODY, RM__ST_PAGE, RM__ST_FILE, RM__ST_DONE };

struct rm_http_server {
  rm_loop *loop;
  rm_http_server_config cfg;
  rm_listener *lst;
  char root[RM__HTTP_PATH_MAX];   /* the root's real path, no trailing '/' */
  size_t root_len;
  int nconns;
  int freed;                      /* rm_http_server_free was called */
  char own[64];                   /* "Date: ...\r\nServer: remora\r\n" ... */
  size_t own_len;
  time_t own_sec;                 /* ... made for this second */
  rm_http_exchange *all;          /* every connection, for rm_http_server_free */
  rm_http_exchange *spare;        /* closed connections' records, for new ones */
  int nspare;
  rm__http_mapped *map[RM__HTTP_MAP_SLOTS];   /* by hash of the URL path; NULL: empty */
};

struct rm_http_exchange {
  rm_http_server *srv;
  rm_conn *conn;
  rm_http_exchange *prev, *next;
  rm_http_parser *parser;
  rm_timer *timer;
  int state;
  /* Input: [0, head_end) is the current request's head (the parser's
   * pointers point there), [pos, len) what is not parsed yet. */
  char *in;
  size_t pos, len, cap, head_end;
  char *body;
  size_t body_len, body_cap;
  struct stat st;                 /* the stat of file */
  /* The answer. */
  int status, chunked, is_head, must_close, head_sent;
  int complete;                   /* the request was read whole */
  /* A page with a body that had not all arrived runs before it (lazy): it
   * reads on with rm_http_x_body_more; body_wait: it waits for input. */
  int routed, route, lazy, body_wait, body_err;
  rm_http_slice query;            /* of the target, once routed */
  int final_close;                /* ... and the client closes after it */
  uint64_t head_since;            /* loop time of the head's first byte */
  uint64_t due, timer_due;        /* loop time the wait ends; the timer is set for timer_due */
  int head_armed;                 /* the timer is set for that head's deadline */
  uint64_t sent;                  /* body bytes, for the access log */
  int fd;                         /* a static file being sent */
  struct z_stream_s *gz;          /* ... compressed on the fly (static.c) */
  uint64_t off, end;
  void *data;                     /* the handler's (rm_http_x_data) */
  /* Last: a record reused for a new connection is cleared up to here only
   * (both are written before they are read). */
  char path[RM__HTTP_PATH_MAX];   /* decoded URL path */
  char file[RM__HTTP_PATH_MAX];   /* the file it maps to */
};

/* The file under the root for a decoded URL path: 0, or the status to
 * answer (404, 403). st receives its stat. */
int rm__http_map(rm_http_server *s, const char *path, char *out, size_t cap, struct stat *st);
/* Frees the URL -> real path cache. */
void rm__http_map_free(rm_http_server *s);
/* A static file (x->file, stat st) for GET/HEAD. */
void rm__http_static(rm_http_exchange *x, const struct stat *st);
/* Closes x's file and ends its compression, if any. */
void rm__http_static_end(rm_http_exchange *x);
/* Sends more of x's file when the connection can take it. */
void rm__http_static_more(rm_http_exchange *x);
/* Queues a head with the server's own fields, then body bytes (one writev). */
int rm__http_send_head(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                       int framing, uint64_t length, const void *body, size_t len);
/* A complete small answer (errors, redirects, 304). */
void rm__http_simple(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                     const char *body);
/* The answer is out: next request or close. */
void rm__http_done(rm_http_exchange *x);
/* The value of a request field, or NULL. */
const rm_http_header *rm__http_field(const rm_http_exchange *x, const char *name);

#endif
