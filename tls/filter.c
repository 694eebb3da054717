/* filter.c: TLS as an rm_conn filter.
 *
 * The stream's transport is the connection's raw socket; the connection's
 * queue holds plaintext and hands it to the stream as the socket allows. The
 * connection asks the filter which events it waits for after every read and
 * write; rm_tls_handshake() tells it after a handshake step.
 */
#include "tls/tls_impl.h"

static long f_read(rm_conn *c, void *state, void *buf, size_t n) {
  return rm_tls_stream_read(state, buf, n);
}

static long f_write(rm_conn *c, void *state, const void *buf, size_t n) {
  return rm_tls_stream_write(state, buf, n);
}

static size_t f_pending(void *state) {
  return rm_tls_stream_pending(state);
}

/* After the handshake, waiting to read is the owner's business (want_read):
 * reporting it would keep the socket watched while the owner holds off, and
 * a level-triggered loop would spin on data nobody reads. */
static int f_wants(void *state) {
  int w = rm_tls_stream_wants(state);
  return rm_tls_stream_established(state) ? w & RM_WRITE : w;
}

static void f_free(void *state) {
  rm_tls_stream_free(state);
}

/* The queue is delivered: close_notify goes out before the FIN. */
static void f_shutdown(rm_conn *c, void *state) {
  rm_tls_stream_close(state);
}

static const rm_conn_filter tls_filter = {f_read, f_write, f_pending, f_wants, f_free, f_shutdown};

static long conn_recv(void *ud, void *buf, size_t n) {
  return rm_conn_raw_read(ud, buf, n);
}

static long conn_send(void *ud, const void *buf, size_t n) {
  return rm_conn_raw_write(ud, buf, n);
}

int rm_tls_attach(rm_conn *c, rm_tls_config *cfg, const char *host,
                  const void *preread, size_t prelen) {
  rm_tls_io io = {conn_recv, conn_send, c};
  rm_tls_stream *s;
  int ret;
  if (!c) return RM_EINVAL;
  if (rm_tls_of(c)) return RM_EINVAL; /* TLS inside TLS is not a thing we do */
  ret = rm_tls_stream_new(cfg, host, &io, preread, prelen, &s);
  if (ret == RM_OK) rm_conn_set_filter(c, &tls_filter, s);
  return ret;
}

rm_tls_stream *rm_tls_of(const rm_conn *c) {
  return rm_conn_filter_state(c);
}

int rm_tls_handshake(rm_conn *c) {
  rm_tls_stream *s = rm_tls_of(c);
  int ret;
  if (!s) return RM_TLS_ENOTENABLED;
  ret = rm_tls_stream_handshake(s);
  /* The owner hears the events the handshake waits for, through on_readable
   * and on_writable, and steps again from there. */
  if (ret == RM_EAGAIN && (rm_tls_stream_wants(s) & RM_READ)) rm_conn_want_read(c, 1);
  rm_conn_want_write(c, ret == RM_EAGAIN && (rm_tls_stream_wants(s) & RM_WRITE));
  rm_conn_update(c);
  return ret;
}

int rm_tls_close(rm_conn *c) {
  rm_tls_stream *s = rm_tls_of(c);
  if (!s) return RM_TLS_ENOTENABLED;
  /* close_notify must follow the data; with data still queued it is skipped
   * rather than waited for. */
  if (rm_conn_queued(c) > 0) return RM_EAGAIN;
  return rm_tls_stream_close(s);
}
