/* remora/conn.h: non-blocking TCP connections, listeners, name resolution, UDP.
 *
 * A connection (rm_conn) is a socket owned by one loop. Reading is pulled: the
 * owner asks for read readiness with rm_conn_want_read() and calls
 * rm_conn_read() when told. Writing is pushed into a FIFO queue: rm_conn_write()
 * hands the kernel what it takes at once and keeps the rest, in order, until the
 * socket is writable again. The owner hears when the queue drains, and sets a
 * hard bound on it.
 *
 * The owner calls rm_conn_close() exactly once. After that no callback runs and
 * the loop keeps the connection only to deliver what was queued, then frees it.
 */
#ifndef REMORA_CONN_H
#define REMORA_CONN_H

#include <sys/socket.h>
#include <sys/uio.h>
#include "remora/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rm_conn rm_conn;

/* What a connection's owner hears. Every member is optional. */
typedef struct rm_conn_handler {
  /* A connect started by rm_conn_connect() finished: err is RM_OK or RM_ECONNECT. */
  void (*on_connect)(rm_conn *c, int err, void *ud);
  /* Read readiness (while rm_conn_want_read() is on): rm_conn_read() will return
   * data, 0 for end of stream, or an error. Level-triggered. */
  void (*on_readable)(rm_conn *c, void *ud);
  /* The write queue fell to the low-water mark (or write readiness, while
   * rm_conn_want_write() is on). */
  void (*on_writable)(rm_conn *c, void *ud);
  /* The transport failed while the loop was sending (reset, broken pipe).
   * Later reads and writes fail; the owner still calls rm_conn_close(). */
  void (*on_error)(rm_conn *c, int err, void *ud);
} rm_conn_handler;

/* Wraps a connected, non-blocking socket. NULL at the loop's max_conns cap or
 * when memory runs out; the caller still owns fd then (and closes it). */
rm_conn *rm_conn_new(rm_loop *loop, int fd, const rm_conn_handler *h, void *ud);
/* The same for a socket from an rm_listen() listener's accept callback. */
rm_conn *rm_conn_accepted(rm_loop *loop, int fd, const rm_conn_handler *h, void *ud);
/* Starts a non-blocking connect; the handler's on_connect says how it ended.
 * bind_addr (may be NULL) picks the local address. RM_ELIMIT at the cap. */
int rm_conn_connect(rm_loop *loop, const struct sockaddr *addr, socklen_t len,
                    const struct sockaddr *bind_addr, socklen_t bind_len,
                    const rm_conn_handler *h, void *ud, rm_conn **out);

void rm_conn_set_handler(rm_conn *c, const rm_conn_handler *h, void *ud);
rm_loop *rm_conn_loop(const rm_conn *c);
int rm_conn_fd(const rm_conn *c);

/* Reads up to n bytes: > 0 bytes read, 0 end of stream, RM_EAGAIN, or an error. */
long rm_conn_read(rm_conn *c, void *buf, size_t n);
void rm_conn_want_read(rm_conn *c, int on);
void rm_conn_want_write(rm_conn *c, int on);
/* Bytes a filter holds already decoded: readable without the socket. */
size_t rm_conn_pending(const rm_conn *c);

/* Queues data in FIFO order and starts sending it. Returns RM_OK, RM_ECLOSED,
 * the transport's error, or RM_EFULL when the queue would pass its hard bound
 * (nothing of the data is queued then). An empty queue always takes one
 * message whole, so a message larger than the bound is not refused forever. */
int rm_conn_write(rm_conn *c, const void *buf, size_t n);
int rm_conn_writev(rm_conn *c, const struct iovec *iov, int iovcnt);
size_t rm_conn_queued(const rm_conn *c);
/* Hard bound on queued bytes (0: none) and the low-water mark for on_writable. */
void rm_conn_set_limits(rm_conn *c, size_t max_queue, size_t lowat);
/* Time the loop may spend after rm_conn_close() delivering queued data to a
 * peer that does not read (default 30 s); past it the connection is reset. */
void rm_conn_set_linger(rm_conn *c, unsigned ms);

/* Half-close: no more writes; the peer sees end of stream after the queue. */
int rm_conn_shutdown(rm_conn *c);
/* Releases the connection: queued data is still delivered, then it closes. */
void rm_conn_close(rm_conn *c);
/* rm_conn_close() for an owner that knows the peer sends nothing more (it
 * read a whole request that asked to close): after the queue the socket
 * closes at once, without the half-close and the wait for the peer's end of
 * stream that otherwise keep late input from turning into a reset. */
void rm_conn_close_final(rm_conn *c);
/* Releases it now with a reset (RST); queued data is dropped. */
void rm_conn_abort(rm_conn *c);
int rm_conn_is_broken(const rm_conn *c); /* the error seen, or 0 */

/* A filter sits between the queue and the socket (TLS does): it turns queued
 * plaintext into what goes on the wire and wire bytes into plaintext, using
 * rm_conn_raw_read/rm_conn_raw_write underneath. Results follow rm_conn_read
 * and the write convention (bytes consumed, or RM_EAGAIN, or an error). */
typedef struct rm_conn_filter {
  long (*read)(rm_conn *c, void *state, void *buf, size_t n);
  long (*write)(rm_conn *c, void *state, const void *buf, size_t n);
  size_t (*pending)(void *state);   /* plaintext ready without reading the socket */
  int (*wants)(void *state);        /* RM_READ/RM_WRITE the filter waits for */
  void (*free)(void *state);
  /* Optional: the queue is delivered and the write side closes next (TLS
   * sends close_notify here). Best effort; must not block. */
  void (*shutdown)(rm_conn *c, void *state);
} rm_conn_filter;
void rm_conn_set_filter(rm_conn *c, const rm_conn_filter *f, void *state);
void *rm_conn_filter_state(const rm_conn *c);
long rm_conn_raw_read(rm_conn *c, void *buf, size_t n);
long rm_conn_raw_write(rm_conn *c, const void *buf, size_t n);
/* A filter whose needs changed outside a read or write (a handshake step)
 * tells the connection so it watches the right events. */
void rm_conn_update(rm_conn *c);

/* Listeners. The accept callback receives a non-blocking, close-on-exec fd,
 * which the callee owns. When the process is out of file descriptors the
 * listener pauses for a moment and tries again, instead of spinning. While the
 * loop holds max_conns connections, new peers are accepted and closed at once
 * (one log line per burst); the callback does not run for them. */
typedef struct rm_listener rm_listener;
typedef void (*rm_accept_cb)(rm_listener *l, int fd, void *ud);
enum { RM_LISTEN_IPV6 = 1, RM_LISTEN_REUSEPORT = 2, RM_LISTEN_V6ONLY = 4 };
int rm_listen(rm_loop *loop, const char *host, int port, int flags, int backlog,
              rm_accept_cb cb, void *ud, rm_listener **out);
int rm_listener_fd(const rm_listener *l);
int rm_listener_port(const rm_listener *l);
void rm_listener_pause(rm_listener *l, int paused);
void rm_listener_close(rm_listener *l);

/* Name resolution that never blocks the loop: numeric addresses answer on the
 * next iteration; names are looked up on a helper thread. The callback gets the
 * first address of the family asked for (AF_UNSPEC: any), or err != 0. */
typedef struct rm_resolve rm_resolve;
typedef void (*rm_resolve_cb)(void *ud, int err, const struct sockaddr *addr, socklen_t len);
int rm_resolve_start(rm_loop *loop, const char *host, int port, int family,
                     rm_resolve_cb cb, void *ud, rm_resolve **out);
/* The callback will not run. Safe until the callback has run. */
void rm_resolve_cancel(rm_resolve *r);
/* Parses a numeric address; RM_OK or RM_ERESOLVE. No lookup. */
int rm_addr_parse(const char *host, int port, int family, struct sockaddr_storage *ss, socklen_t *len);
/* "ip" and port of an address; returns 1 for IPv6. */
int rm_addr_format(const struct sockaddr *sa, char *ip, size_t iplen, int *port);

/* A UDP socket, non-blocking, bound to host:port (host NULL: any; port 0:
 * ephemeral). The caller owns the fd and watches it with rm_loop_watch(). */
int rm_udp_open(const char *host, int port, int ipv6, int *fd_out);

/* How many connections this loop has open (including closing ones). */
int rm_conn_count(const rm_loop *loop);

#ifdef __cplusplus
}
#endif
#endif
