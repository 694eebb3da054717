/* stream.c: one TLS session over a byte transport.
 *
 * The transport is a recv/send pair that may block or say RM_EAGAIN; mbedTLS
 * turns RM_EAGAIN into WANT_READ/WANT_WRITE and we remember which one, so a
 * non-blocking owner knows what to wait for. Nothing here waits by itself.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h> /* the transport error codes */
#include <mbedtls/ssl_internal.h> /* handshake->resume: 2.28 has no accessor */
#include "tls/tls_impl.h"

struct rm_tls_stream {
  rm_tls_config *cfg;
  mbedtls_ssl_context ssl;
  rm_tls_io io;
  /* Bytes taken from the transport that mbedTLS has not asked for yet: the
   * preread bytes at first, then what each read ahead brought (bio_recv). */
  unsigned char *ahead;
  size_t ahead_cap, ahead_off, ahead_len;
  size_t wpend;      /* a write that said RM_EAGAIN: its record holds this many bytes */
  int wants;         /* RM_READ / RM_WRITE the last call waits for */
  int err;           /* the first fatal error; the stream is dead after it */
  int io_err;        /* what the transport said when it failed */
  int last_ret;      /* mbedTLS's code for that failure */
  int done;          /* handshake finished */
  int resumed;
  int closed;        /* close_notify tried */
  int parked;        /* idle: the record buffers are given back (park()) */
  unsigned char ctr[2][8]; /* the record counters kept in them while parked */
  unsigned char ip[16]; /* client to an IP literal: the address to find in the SAN */
  size_t iplen;
};

/* ---- The transport under mbedTLS ---- */

static int bio_send(void *ud, const unsigned char *buf, size_t n) {
  rm_tls_stream *s = ud;
  long r = s->io.send(s->io.ud, buf, n);
  if (r > 0) return (int)r;
  if (r == 0 || r == RM_EAGAIN) return MBEDTLS_ERR_SSL_WANT_WRITE;
  s->io_err = (int)r;
  return MBEDTLS_ERR_NET_SEND_FAILED;
}

/* mbedTLS asks for a record's 5-byte header, then for its body: two system
 * calls per record when each ask goes to the socket. Each read takes up to a
 * whole record's worth instead (one call for a request), into a record
 * buffer, and the asks are served from there. What is there counts as
 * pending (rm_tls_stream_pending), since socket readiness does not announce
 * it. */

static void drop_ahead(rm_tls_stream *s) {
  if (s->ahead_cap == RM__TLS_BUF) rm__tls_buf_put(s->cfg, s->ahead);
  else free(s->ahead); /* a preread larger than a record */
  s->ahead = NULL;
  s->ahead_cap = s->ahead_off = s->ahead_len = 0;
}

/* The transport's answer as mbedTLS wants it. */
static int recv_result(rm_tls_stream *s, long r) {
  if (r >= 0) return (int)r;
  if (r == RM_EAGAIN) return MBEDTLS_ERR_SSL_WANT_READ;
  s->io_err = (int)r;
  return MBEDTLS_ERR_NET_RECV_FAILED;
}

static int bio_recv(void *ud, unsigned char *buf, size_t n) {
  rm_tls_stream *s = ud;
  size_t k;
  if (s->ahead_off == s->ahead_len) {
    long r;
    if (!s->ahead && (s->ahead = rm__tls_buf_get(s->cfg))) s->ahead_cap = RM__TLS_BUF;
    if (!s->ahead) return recv_result(s, s->io.recv(s->io.ud, buf, n)); /* no memory to read ahead */
    r = s->io.recv(s->io.ud, s->ahead, s->ahead_cap);
    if (r <= 0) return recv_result(s, r);
    s->ahead_off = 0;
    s->ahead_len = (size_t)r;
  }
  k = s->ahead_len - s->ahead_off < n ? s->ahead_len - s->ahead_off : n;
  memcpy(buf, s->ahead + s->ahead_off, k);
  s->ahead_off += k;
  return (int)k;
}

static long fd_recv(void *ud, void *buf, size_t n) {
  ssize_t r;
  do r = read((int)(intptr_t)ud, buf, n);
  while (r < 0 && errno == EINTR);
  if (r >= 0) return (long)r;
  return errno == EAGAIN || errno == EWOULDBLOCK ? RM_EAGAIN : RM_EIO;
}

static long fd_send(void *ud, const void *buf, size_t n) {
  int fd = (int)(intptr_t)ud;
  ssize_t r;
  do r = send(fd, buf, n, MSG_NOSIGNAL); /* a closed peer must not kill the process */
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno == ENOTSOCK) r = write(fd, buf, n);
  if (r >= 0) return (long)r;
  return errno == EAGAIN || errno == EWOULDBLOCK ? RM_EAGAIN : RM_EIO;
}

void rm_tls_io_fd(rm_tls_io *io, int fd) {
  io->recv = fd_recv;
  io->send = fd_send;
  io->ud = (void *)(intptr_t)fd;
}

/* ---- Errors ---- */

/* Turns an mbedTLS result into ours: waiting is not a failure; anything else
 * is, and the first one sticks. */
static int fail(rm_tls_stream *s, int ret) {
  int err;
  if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
    s->wants = ret == MBEDTLS_ERR_SSL_WANT_READ ? RM_READ : RM_WRITE;
    return RM_EAGAIN;
  }
  switch (ret) {
  case MBEDTLS_ERR_NET_SEND_FAILED:
  case MBEDTLS_ERR_NET_RECV_FAILED: err = s->io_err; break;
  case MBEDTLS_ERR_SSL_ALLOC_FAILED: err = RM_ENOMEM; break;
  case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: err = RM_TLS_ENOTTRUSTED; break;
  case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE: err = RM_TLS_EALERT; break;
  case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY: err = RM_TLS_ECLOSENOTIFY; break;
  case MBEDTLS_ERR_SSL_CONN_EOF: err = s->done ? RM_ECLOSED : RM_TLS_EHANDSHAKE; break;
  default: err = s->done ? RM_TLS_ECRYPTO : RM_TLS_EHANDSHAKE; break;
  }
  s->last_ret = ret;
  s->wants = 0;
  if (!s->err) s->err = err;
  return s->err;
}

/* ---- Life cycle ---- */

/* Clients to an IP literal: mbedTLS 2.28 matches names only, so the address is
 * checked here, on the peer's own certificate (depth 0). */
static int on_verify(void *ud, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
  rm_tls_stream *s = ud;
  if (depth == 0 && !rm__tls_cert_has_ip(crt, s->ip, s->iplen)) *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  return 0;
}

static int set_peer_name(rm_tls_stream *s, const char *host) {
  if (inet_pton(AF_INET, host, s->ip) == 1) s->iplen = 4;
  else if (inet_pton(AF_INET6, host, s->ip) == 1) s->iplen = 16;
  if (s->iplen) { /* no SNI for addresses (RFC 6066) */
    mbedtls_ssl_set_verify(&s->ssl, on_verify, s);
    return RM_OK;
  }
  return mbedtls_ssl_set_hostname(&s->ssl, host) == 0 ? RM_OK : RM_EINVAL;
}

int rm_tls_stream_new(rm_tls_config *cfg, const char *host, const rm_tls_io *io,
                      const void *preread, size_t prelen, rm_tls_stream **out) {
  rm_tls_stream *s;
  int ret = RM_OK;
  if (!cfg || !io || !io->recv || !io->send || !out || (prelen && !preread)) return RM_EINVAL;
  if (cfg->server && !cfg->certs) return RM_TLS_ENOTENABLED;
  s = rm__tls_alloc(cfg, sizeof *s);
  if (!s) return RM_ENOMEM;
  memset(s, 0, sizeof *s);
  s->cfg = cfg;
  s->io = *io;
  mbedtls_ssl_init(&s->ssl);
  rm_tls_config_ref(cfg);
  if (prelen) {
    s->ahead_cap = prelen > RM__TLS_BUF ? prelen : RM__TLS_BUF;
    s->ahead = s->ahead_cap == RM__TLS_BUF ? rm__tls_buf_get(cfg) : malloc(prelen);
    if (!s->ahead) ret = RM_ENOMEM;
    else memcpy(s->ahead, preread, s->ahead_len = prelen);
  }
  if (ret == RM_OK && mbedtls_ssl_setup(&s->ssl, &cfg->conf) != 0) ret = RM_ENOMEM;
  if (ret == RM_OK && !cfg->server && host) ret = set_peer_name(s, host);
  if (ret != RM_OK) {
    rm_tls_stream_free(s);
    return ret;
  }
  mbedtls_ssl_set_bio(&s->ssl, s, bio_send, bio_recv, NULL);
  *out = s;
  return RM_OK;
}

void rm_tls_stream_free(rm_tls_stream *s) {
  rm_tls_config *cfg;
  if (!s) return;
  cfg = s->cfg;
  mbedtls_ssl_free(&s->ssl);
  drop_ahead(s);
  rm__tls_free(cfg, s, sizeof *s);
  rm_tls_config_unref(cfg);
}

/* ---- Idle sessions give their record buffers back ----
 *
 * mbedTLS keeps a 16.7 KB input and a 16.7 KB output buffer for the life of
 * a session (this build has no MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH), most of
 * the memory of an idle connection. Whenever nothing is buffered either way
 * (after the handshake, after a write sent whole, after a read that found
 * nothing more), both are freed with the read-ahead buffer, as OpenSSL does
 * with SSL_MODE_RELEASE_BUFFERS, and allocated again by the next call that
 * needs them: an owner that waits for readiness instead of reading until
 * RM_EAGAIN holds no buffers while it waits. Between records the buffers
 * hold no state but the record counters (the first 8 bytes of each, in TLS),
 * which are kept aside. */

static int can_park(const rm_tls_stream *s) {
  const mbedtls_ssl_context *ssl = &s->ssl;
  return s->done && !s->err && !s->parked && !s->wpend && !ssl->handshake && ssl->in_left == 0 &&
         s->ahead_off == s->ahead_len &&
         ssl->in_offt == NULL && ssl->in_msglen == 0 && ssl->in_hslen == 0 && ssl->out_left == 0 &&
         !ssl->keep_current_message;
}

static void park(rm_tls_stream *s) {
  mbedtls_ssl_context *ssl = &s->ssl;
  memcpy(s->ctr[0], ssl->in_ctr, 8);
  memcpy(s->ctr[1], ssl->out_ctr, 8);
  /* Not wiped: the same plaintext goes on to the owner's buffers and Lua
   * strings, freed without wiping, and wiping 33 KB per request took 55%
   * more instructions per keep-alive request (OpenSSL without
   * SSL_OP_CLEANSE_PLAINTEXT does the same). mbedTLS allocates with calloc
   * and frees with free() (no MBEDTLS_PLATFORM_MEMORY in this build), so the
   * spare buffers come from malloc() too. */
  rm__tls_buf_put(s->cfg, ssl->in_buf);
  rm__tls_buf_put(s->cfg, ssl->out_buf);
  ssl->in_buf = ssl->out_buf = NULL;
  drop_ahead(s);
  s->parked = 1;
}

/* The buffers again, with the pointers into them laid out as mbedTLS does
 * for TLS (mbedtls_ssl_reset_in_out_pointers, then the current transform). */
static int unpark(rm_tls_stream *s) {
  mbedtls_ssl_context *ssl = &s->ssl;
  if (!s->parked) return RM_OK;
  ssl->in_buf = rm__tls_buf_get(s->cfg);
  ssl->out_buf = rm__tls_buf_get(s->cfg);
  if (!ssl->in_buf || !ssl->out_buf) {
    rm__tls_buf_put(s->cfg, ssl->in_buf);
    rm__tls_buf_put(s->cfg, ssl->out_buf);
    ssl->in_buf = ssl->out_buf = NULL;
    return RM_ENOMEM;
  }
  ssl->out_ctr = ssl->out_buf;
  ssl->out_hdr = ssl->out_buf + 8;
  ssl->in_hdr = ssl->in_buf + 8;
  mbedtls_ssl_update_out_pointers(ssl, ssl->transform_out);
  mbedtls_ssl_update_in_pointers(ssl);
  memcpy(ssl->in_ctr, s->ctr[0], 8);
  memcpy(ssl->out_ctr, s->ctr[1], 8);
  s->parked = 0;
  return RM_OK;
}

/* ---- Data ---- */

int rm_tls_stream_handshake(rm_tls_stream *s) {
  if (s->err) return s->err;
  /* Step by step rather than mbedtls_ssl_handshake(): the resume flag lives
   * in state that the last step frees. */
  while (s->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
    int ret = mbedtls_ssl_handshake_step(&s->ssl);
    if (s->ssl.handshake) s->resumed = s->ssl.handshake->resume;
    if (ret != 0) return fail(s, ret);
  }
  s->done = 1;
  s->wants = 0;
  if (can_park(s)) park(s); /* a client may connect long before it asks */
  return RM_OK;
}

/* The end of the session reads as end of stream, whichever way it came. */
static long read_failed(int err) {
  return err == RM_TLS_ECLOSENOTIFY || err == RM_ECLOSED ? 0 : err;
}

long rm_tls_stream_read(rm_tls_stream *s, void *buf, size_t n) {
  int ret;
  if (s->err) return read_failed(s->err);
  if (n == 0) return RM_EINVAL;
  if (!s->done && (ret = rm_tls_stream_handshake(s)) != RM_OK) return ret;
  if (unpark(s) != RM_OK) return fail(s, MBEDTLS_ERR_SSL_ALLOC_FAILED);
  ret = mbedtls_ssl_read(&s->ssl, buf, n > INT_MAX ? INT_MAX : n);
  if (ret > 0) {
    s->wants = 0;
    return ret;
  }
  if (ret == MBEDTLS_ERR_SSL_WANT_READ && can_park(s)) park(s);
  /* 0: the transport ended without close_notify. Many peers do that, and
   * every record up to there was authenticated. */
  return read_failed(fail(s, ret == 0 ? MBEDTLS_ERR_SSL_CONN_EOF : ret));
}

long rm_tls_stream_write(rm_tls_stream *s, const void *buf, size_t n) {
  int ret;
  if (s->err) return s->err;
  if (n == 0) return RM_EINVAL;
  if (!s->done && (ret = rm_tls_stream_handshake(s)) != RM_OK) return ret;
  if (unpark(s) != RM_OK) return fail(s, MBEDTLS_ERR_SSL_ALLOC_FAILED);
  /* mbedTLS already sealed the first try into a record; a retry with more
   * bytes would make it claim them all, so pass exactly the first length. */
  if (s->wpend) {
    if (n < s->wpend) return RM_EINVAL;
    n = s->wpend;
  }
  ret = mbedtls_ssl_write(&s->ssl, buf, n > INT_MAX ? INT_MAX : n);
  if (ret >= 0) {
    s->wpend = 0;
    s->wants = 0;
    if (can_park(s)) park(s); /* an answer sent whole: the session may idle from here */
    return ret;
  }
  ret = fail(s, ret);
  if (ret == RM_EAGAIN) s->wpend = n;
  return ret;
}

int rm_tls_stream_close(rm_tls_stream *s) {
  int ret;
  if (s->err || !s->done || s->closed) return s->err;
  if (unpark(s) != RM_OK) return fail(s, MBEDTLS_ERR_SSL_ALLOC_FAILED);
  s->closed = 1;
  ret = mbedtls_ssl_close_notify(&s->ssl);
  return ret == 0 ? RM_OK : fail(s, ret);
}

int rm_tls_stream_established(const rm_tls_stream *s) {
  return s->done;
}

int rm_tls_stream_wants(const rm_tls_stream *s) {
  return s->wants;
}

size_t rm_tls_stream_pending(const rm_tls_stream *s) {
  return mbedtls_ssl_get_bytes_avail(&s->ssl) + (s->ahead_len - s->ahead_off);
}

int rm_tls_stream_error(const rm_tls_stream *s) {
  return s->err;
}

/* The verification failure as one line: mbedTLS writes one reason per line. */
static void verify_text(uint32_t flags, char *buf, size_t n) {
  char *nl;
  int len;
  buf[0] = 0;
  if (flags == 0 || flags == (uint32_t)-1) return;
  len = mbedtls_x509_crt_verify_info(buf, n, "", flags);
  while (len > 0 && buf[len - 1] == '\n') buf[--len] = 0;
  while ((nl = strchr(buf, '\n'))) *nl = ';';
}

void rm_tls_stream_detail(const rm_tls_stream *s, char *buf, size_t n) {
  char verify[160];
  size_t len;
  if (n == 0) return;
  buf[0] = 0;
  if (s->last_ret) mbedtls_strerror(s->last_ret, buf, n);
  verify_text(mbedtls_ssl_get_verify_result(&s->ssl), verify, sizeof verify);
  len = strlen(buf);
  if (verify[0]) snprintf(buf + len, n - len, "%s%s", len ? ": " : "", verify);
}

/* ---- Information ---- */

static void iso_time(const mbedtls_x509_time *t, char out[21]) {
  snprintf(out, 21, "%04u-%02u-%02uT%02u:%02u:%02uZ", (unsigned)t->year % 10000, (unsigned)t->mon % 100,
           (unsigned)t->day % 100, (unsigned)t->hour % 100, (unsigned)t->min % 100, (unsigned)t->sec % 100);
}

int rm_tls_stream_info(const rm_tls_stream *s, rm_tls_info *info) {
  const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&s->ssl);
  uint32_t flags = mbedtls_ssl_get_verify_result(&s->ssl);
  memset(info, 0, sizeof *info);
  if (!s->done) return RM_EINVAL;
  info->version = mbedtls_ssl_get_version(&s->ssl);
  info->cipher = mbedtls_ssl_get_ciphersuite(&s->ssl);
  info->alpn = mbedtls_ssl_get_alpn_protocol(&s->ssl);
  info->resumed = s->resumed;
  info->verified = peer && flags == 0;
  if (!peer) snprintf(info->verify_reason, sizeof info->verify_reason, "no peer certificate");
  else verify_text(flags, info->verify_reason, sizeof info->verify_reason);
  if (peer) {
    info->has_peer_cert = 1;
    mbedtls_x509_dn_gets(info->subject, sizeof info->subject, &peer->subject);
    mbedtls_x509_dn_gets(info->issuer, sizeof info->issuer, &peer->issuer);
    iso_time(&peer->valid_from, info->not_before);
    iso_time(&peer->valid_to, info->not_after);
    rm__tls_fingerprint(peer, info->fingerprint);
  }
  return RM_OK;
}

/* ---- Client session reuse ---- */

int rm_tls_session_save(const rm_tls_stream *s, void *buf, size_t n, size_t *len) {
  mbedtls_ssl_session sess;
  int ret;
  size_t need = 0;
  if (!s->done || s->cfg->server) return RM_EINVAL;
  mbedtls_ssl_session_init(&sess);
  ret = mbedtls_ssl_get_session(&s->ssl, &sess);
  if (ret == 0) ret = mbedtls_ssl_session_save(&sess, buf, n, &need);
  mbedtls_ssl_session_free(&sess);
  if (len) *len = need;
  if (ret == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL) return RM_EFULL;
  if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED) return RM_ENOMEM;
  return ret == 0 ? RM_OK : RM_EINVAL;
}

int rm_tls_session_resume(rm_tls_stream *s, const void *buf, size_t n) {
  mbedtls_ssl_session sess;
  int ret;
  if (s->done || s->cfg->server) return RM_EINVAL;
  mbedtls_ssl_session_init(&sess);
  ret = mbedtls_ssl_session_load(&sess, buf, n);
  if (ret == 0) ret = mbedtls_ssl_set_session(&s->ssl, &sess);
  mbedtls_ssl_session_free(&sess);
  return ret == 0 ? RM_OK : ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? RM_ENOMEM : RM_EINVAL;
}
