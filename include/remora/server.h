/* remora/server.h: the HTTP/1.1 server on a remora loop.
 *
 * A server owns one listener and the connections it accepts. It parses
 * requests with the http/ parser, answers static files from a document root
 * itself, and hands pages (files with the dynamic extension, ".lsp") to a
 * handler, which answers through an exchange: the request as parsed, its whole
 * body, and calls that write the response. Requests on one connection are
 * answered in order: the next one is parsed only when the previous answer has
 * been queued.
 *
 * Everything runs on the loop's thread. Timeouts and limits have safe
 * defaults (zero fields in the config take them).
 */
#ifndef REMORA_SERVER_H
#define REMORA_SERVER_H

#include <stdio.h>
#include <sys/stat.h>
#include "remora/conn.h"
#include "remora/http.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rm_http_server rm_http_server;
typedef struct rm_http_exchange rm_http_exchange;

/* What runs pages. Every member but run is optional. */
typedef struct rm_http_handler {
  /* A request for a page: answer it through x, now or later, and end with
   * rm_http_x_finish() (or hand the connection away with rm_http_x_detach()). */
  void (*run)(rm_http_exchange *x, void *ud);
  /* The write queue of x fell back under its bound (see rm_http_x_queued). */
  void (*drain)(rm_http_exchange *x, void *ud);
  /* With this member the handler takes pages whose body is still arriving
   * (an upload): run comes at once and the body is read on demand with
   * rm_http_x_body_more; this says that a wait for it ended. Without it,
   * bodies are read whole (up to max_body) before run. */
  void (*body)(rm_http_exchange *x, void *ud);
} rm_http_handler;

typedef struct rm_http_server_config {
  const char *root;           /* document root (required) */
  const char *page_ext;       /* handled by the handler: ".lsp" */
  rm_http_limits limits;      /* zero fields: the parser's defaults */
  unsigned header_timeout_ms; /* whole request head (slowloris): 10 s */
  unsigned idle_timeout_ms;   /* keep-alive wait for the next request: 15 s */
  unsigned body_timeout_ms;   /* silence while a body arrives: 30 s */
  uint64_t max_upload;        /* a body a page streams (rawrdr), past max_body: 1 GiB */
  int max_conns;              /* open connections; more are answered 503: 1024 */
  size_t gzip_max;            /* compress files up to this size on the fly: 8 MiB (0 default) */
  int no_gzip;                /* never compress on the fly */
  FILE *access_log;           /* Common Log Format lines, or NULL */
  int secure;                 /* connections are TLS (set by on_accept's owner) */
  /* Called for each accepted connection before it is read: TLS attaches its
   * filter here. A negative return refuses the connection. */
  int (*on_accept)(rm_conn *c, void *ud);
  void *accept_ud;
  const rm_http_handler *handler;   /* pages; NULL: page files are never served */
  void *handler_ud;
} rm_http_server_config;

/* Listens on host:port (port 0: any; see rm_http_server_port). The config's
 * strings must outlive the server. */
int rm_http_server_new(rm_loop *loop, const char *host, int port, const rm_http_server_config *cfg,
                       rm_http_server **out);
int rm_http_server_port(const rm_http_server *s);
/* Stops listening, closes idle connections; busy ones end after their answer. */
void rm_http_server_free(rm_http_server *s);
/* Takes a connection (back) as a keep-alive HTTP connection; pre holds bytes
 * already read from it (a request's start). */
int rm_http_server_adopt(rm_http_server *s, rm_conn *c, const char *pre, size_t prelen);

/* ---- the exchange, as the handler sees it ---- */

const rm_http_request *rm_http_x_request(const rm_http_exchange *x);
const char *rm_http_x_body(const rm_http_exchange *x, size_t *len);
/* The decoded, normalised URL path ("/a/b.lsp") and the file it maps to. */
const char *rm_http_x_path(const rm_http_exchange *x);
const char *rm_http_x_file(const rm_http_exchange *x);
/* The file's stat, taken when the request was mapped (saves the handler one). */
const struct stat *rm_http_x_stat(const rm_http_exchange *x);
rm_conn *rm_http_x_conn(const rm_http_exchange *x);
rm_http_server *rm_http_x_server(const rm_http_exchange *x);
int rm_http_x_secure(const rm_http_exchange *x);
/* A pointer the handler keeps with the exchange (NULL at first). */
void **rm_http_x_data(rm_http_exchange *x);
/* A file of the document root for a URL path (forward/include): "" when the
 * path is refused. */
int rm_http_x_map(const rm_http_exchange *x, const char *path, char *out, size_t cap);

/* The head: status, fields (name/value pairs; Date, Server, Connection and the
 * framing are added), and the framing: RM_HTTP_FRAME_LENGTH with length, or
 * RM_HTTP_FRAME_CHUNKED. body/len may hold the start (or all) of the body: it
 * leaves with the head in one writev. A HEAD request gets the head only. */
int rm_http_x_begin(rm_http_exchange *x, int status, const rm_http_header *fields, size_t n,
                    int framing, uint64_t length, const void *body, size_t len);
/* More body (a chunk when chunked). */
int rm_http_x_write(rm_http_exchange *x, const void *p, size_t n);
/* Bytes waiting in the connection's queue: a handler that writes much waits
 * for drain while this is above its bound. */
size_t rm_http_x_queued(const rm_http_exchange *x);
/* The answer is complete (the last chunk goes out): the connection goes on to
 * the next request, or closes. x is invalid afterwards. close: 1 forces a
 * close; RM_HTTP_X_BROKEN closes without ending a chunked body, so the client
 * sees the answer is incomplete (an error after the head went out). */
enum { RM_HTTP_X_BROKEN = 2 };
void rm_http_x_finish(rm_http_exchange *x, int close);
/* The body of a page that came before it: 1 once it is read whole. */
int rm_http_x_body_complete(const rm_http_exchange *x);
/* Reads on: appends what arrived to the body (rm_http_x_body). RM_OK when
 * bytes came or the body is whole; RM_EAGAIN: the handler's body() is called
 * when the wait ends; RM_ETIMEDOUT (body_timeout_ms of silence), RM_ECLOSED,
 * or a parser error (RM_HTTP_EBODY past max_body when whole is set: without
 * it the body is streamed and only the reader bounds it). After an error the
 * connection closes after the answer. */
int rm_http_x_body_more(rm_http_exchange *x, int whole);
/* Drops the body bytes the handler has taken (streaming). */
void rm_http_x_body_taken(rm_http_exchange *x);

/* Bytes already read past the request (a pipelined request, or a protocol's
 * first bytes after an upgrade); copy them before rm_http_x_detach(). */
const char *rm_http_x_rest(const rm_http_exchange *x, size_t *len);
/* Hands the connection to the caller without an answer (req2sock). x is
 * invalid afterwards. NULL when the connection is already broken (x is then
 * finished). */
rm_conn *rm_http_x_detach(rm_http_exchange *x);

#ifdef __cplusplus
}
#endif
#endif
