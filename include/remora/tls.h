/* remora/tls.h: TLS over mbedTLS 2.28.
 *
 * Three pieces:
 *  - rm_tls_config: what a server or a client is (certificates, trusted CAs,
 *    ALPN, session resumption, random generator). Refcounted, shared by every
 *    connection that uses it, from any thread.
 *  - rm_tls_stream: one TLS session over any byte transport given as a pair of
 *    recv/send functions. Works over blocking and non-blocking transports.
 *  - the connection filter: rm_tls_attach() puts a stream between an rm_conn's
 *    plaintext and its socket (also on a live connection: STARTTLS).
 *
 * Only TLS 1.2 is offered: the Debian build of mbedTLS 2.28 has no TLS 1.3.
 */
#ifndef REMORA_TLS_H
#define REMORA_TLS_H

#include <stddef.h>
#include "remora/loop.h"
#include "remora/conn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TLS failures, beyond the RM_* codes; rm_tls_errstr() names them the way
 * the Barracuda App Server does. */
enum {
  RM_TLS_EHANDSHAKE = -100,   /* "sslhandshake": the handshake failed */
  RM_TLS_EALERT = -101,       /* "sslalertrecv": the peer sent a fatal alert */
  RM_TLS_ENOTTRUSTED = -102,  /* "sslnottrusted": the peer's certificate failed verification */
  RM_TLS_ECRYPTO = -103,      /* "sslcryptoerr": a record failed to decrypt or verify */
  RM_TLS_ECLOSENOTIFY = -104, /* "sslclosenotify": the peer closed the TLS session */
  RM_TLS_ENOTENABLED = -105   /* "sslnotenabled": no TLS here, or no certificate to serve */
};
/* The Barracuda string for a RM_TLS_* code, or NULL for any other code. */
const char *rm_tls_errstr(int err);

/* ---- Configuration ---- */

typedef struct rm_tls_config rm_tls_config;

enum {
  RM_TLS_VERIFY_NONE = 1, /* client: do not fail on an untrusted peer (still reported) */
  RM_TLS_NO_TICKETS = 2,  /* server: no session tickets */
  RM_TLS_NO_CACHE = 4     /* server: no session-id cache */
};

/* Every member may be zero: the defaults are safe. */
typedef struct rm_tls_options {
  int flags;                       /* RM_TLS_* above */
  const char *const *alpn;         /* NULL-terminated, in order of preference */
  const char *const *ciphersuites; /* NULL-terminated mbedTLS names; NULL: AEAD ECDHE only */
  const char *ca_file;             /* client: trusted CAs (PEM); NULL: the system bundle */
  unsigned ticket_lifetime;        /* server: seconds a ticket key is used, then rotated (7200) */
  int cache_max;                   /* server: sessions kept in the cache (1000) */
  unsigned cache_timeout;          /* server: seconds a cached session lives (7200) */
  rm_alloc_fn alloc;               /* NULL: realloc/free */
  void *alloc_ud;
  int spare_buffers;               /* 16.7 KB record buffers idle sessions leave for
                                      busy ones (16); -1: none, every session allocates */
} rm_tls_options;

/* A new config with one reference. opts may be NULL. *err says why on NULL. */
rm_tls_config *rm_tls_server_new(const rm_tls_options *opts, int *err);
rm_tls_config *rm_tls_client_new(const rm_tls_options *opts, int *err);
void rm_tls_config_ref(rm_tls_config *cfg);
void rm_tls_config_unref(rm_tls_config *cfg);

/* Adds a certificate chain and its key (PEM files; password NULL for a clear
 * key). The first one is the default; the others are chosen by SNI. Call it
 * before the config serves its first connection. */
int rm_tls_config_add_cert(rm_tls_config *cfg, const char *cert_file,
                           const char *key_file, const char *password);

/* Creates, once, a self-signed ECDSA P-256 certificate for CN "localhost"
 * (SAN localhost, 127.0.0.1) in dir, as RM_TLS_SELF_CERT and RM_TLS_SELF_KEY
 * (mode 0600); later calls load the existing pair. Writes the SHA-256
 * fingerprint of the certificate as 64 hex digits plus NUL into fp (may be NULL). */
#define RM_TLS_SELF_CERT "selfsigned.crt"
#define RM_TLS_SELF_KEY "selfsigned.key"
int rm_tls_selfsigned(const char *dir, char fp[65]);

/* ---- Streams ---- */

typedef struct rm_tls_stream rm_tls_stream;

/* The transport under a stream: >0 bytes moved, 0 end of stream (recv only),
 * RM_EAGAIN when it would block, or another negative code. */
typedef struct rm_tls_io {
  long (*recv)(void *ud, void *buf, size_t n);
  long (*send)(void *ud, const void *buf, size_t n);
  void *ud;
} rm_tls_io;
/* A transport on a plain file descriptor, blocking or not. */
void rm_tls_io_fd(rm_tls_io *io, int fd);

/* host: client: the name sent as SNI and checked against the certificate (an
 * IP literal is checked against the IP addresses instead, and not sent;
 * NULL checks no name); server: ignored. preread: bytes already taken from the transport that
 * belong to the TLS session (may be NULL). */
int rm_tls_stream_new(rm_tls_config *cfg, const char *host, const rm_tls_io *io,
                      const void *preread, size_t prelen, rm_tls_stream **out);
void rm_tls_stream_free(rm_tls_stream *s);

/* Handshake step: RM_OK when done, RM_EAGAIN while it waits (see wants), or
 * an error. Reads and writes drive the handshake themselves. */
int rm_tls_stream_handshake(rm_tls_stream *s);
/* Plaintext: >0 bytes, 0 at the end of the session, RM_EAGAIN, or an error.
 * After RM_EAGAIN from write, the next write must pass at least the same bytes. */
long rm_tls_stream_read(rm_tls_stream *s, void *buf, size_t n);
long rm_tls_stream_write(rm_tls_stream *s, const void *buf, size_t n);
/* Sends close_notify once, without waiting: RM_OK, RM_EAGAIN (dropped), or an error. */
int rm_tls_stream_close(rm_tls_stream *s);
int rm_tls_stream_established(const rm_tls_stream *s); /* the handshake is over */
int rm_tls_stream_wants(const rm_tls_stream *s);      /* RM_READ / RM_WRITE / 0 */
size_t rm_tls_stream_pending(const rm_tls_stream *s); /* readable without the transport */
int rm_tls_stream_error(const rm_tls_stream *s);      /* the first fatal error, or 0 */
/* mbedTLS's text for the last failure (and the verification failure, if any). */
void rm_tls_stream_detail(const rm_tls_stream *s, char *buf, size_t n);

/* Client session reuse: save the session of a finished handshake as bytes
 * (RM_EFULL with *len set to the size needed when buf is too small), and
 * offer saved bytes to a new stream before its handshake. */
int rm_tls_session_save(const rm_tls_stream *s, void *buf, size_t n, size_t *len);
int rm_tls_session_resume(rm_tls_stream *s, const void *buf, size_t n);

/* What the handshake settled. Strings live as long as the stream. */
typedef struct rm_tls_info {
  const char *version; /* "TLSv1.2" */
  const char *cipher;  /* e.g. "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" */
  const char *alpn;    /* NULL when none was agreed */
  int resumed;         /* 1: an earlier session was resumed */
  int verified;        /* 1: the peer's certificate was checked and trusted */
  char verify_reason[160]; /* why not verified ("" when verified) */
  int has_peer_cert;
  char subject[256], issuer[256];
  char not_before[21], not_after[21]; /* "2024-01-31T23:59:59Z" */
  char fingerprint[65];               /* SHA-256 of the DER, hex */
} rm_tls_info;
int rm_tls_stream_info(const rm_tls_stream *s, rm_tls_info *info);

/* ---- Connection filter ---- */

/* Installs TLS on c: its queue then carries plaintext. preread: bytes the
 * layer above already read from the socket that start the TLS session. */
int rm_tls_attach(rm_conn *c, rm_tls_config *cfg, const char *host,
                  const void *preread, size_t prelen);
/* Handshake step on c. While it returns RM_EAGAIN it turns on want_read (and
 * want_write, only while it needs to send) so that on_readable/on_writable
 * fire: call it again from there. On RM_OK want_write is off, want_read kept. */
int rm_tls_handshake(rm_conn *c);
/* close_notify, best effort, before rm_conn_close(): sent now if nothing is
 * queued (RM_OK), else skipped (RM_EAGAIN); never waits. */
int rm_tls_close(rm_conn *c);
/* The stream of a connection set up by rm_tls_attach(). */
rm_tls_stream *rm_tls_of(const rm_conn *c);

#ifdef __cplusplus
}
#endif
#endif
