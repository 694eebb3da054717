/* tls_impl.h: what the files of the TLS layer share. */
#ifndef REMORA_TLS_IMPL_H
#define REMORA_TLS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl_internal.h> /* the record buffer sizes */
#include "remora/tls.h"

/* One certificate chain with its key; servers keep a list for SNI. */
typedef struct rm__tls_cert {
  mbedtls_x509_crt chain;
  mbedtls_pk_context key;
  struct rm__tls_cert *next;
} rm__tls_cert;

enum { RM__TLS_MAX_SUITES = 32, RM__TLS_MAX_ALPN = 16 };

/* One record buffer: mbedTLS's input or output buffer, or a stream's
 * read-ahead buffer, all one size so that one spare fits any of them. */
enum { RM__TLS_BUF = MBEDTLS_SSL_IN_BUFFER_LEN };
_Static_assert(MBEDTLS_SSL_IN_BUFFER_LEN == MBEDTLS_SSL_OUT_BUFFER_LEN, "mbedTLS's record buffers differ in size");

struct rm_tls_config {
  atomic_int refs;
  int server;
  int flags;
  rm_alloc_fn alloc;
  void *alloc_ud;
  /* One generator per config; mbedTLS locks it, so threads may share it. */
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca;
  rm__tls_cert *certs; /* in the order added: the first is the default */
  mbedtls_ssl_cache_context cache;
  mbedtls_ssl_ticket_context tickets;
  int suites[RM__TLS_MAX_SUITES + 1];
  char *alpn[RM__TLS_MAX_ALPN + 1]; /* mbedTLS keeps pointers to these */
  /* Record buffers that idle sessions gave back, kept for the next session
   * that needs one, so that a keep-alive request allocates none. */
  pthread_mutex_t spare_lock;
  void **spare;
  int nspare, max_spare;
};

void *rm__tls_alloc(rm_tls_config *cfg, size_t n);
void rm__tls_free(rm_tls_config *cfg, void *p, size_t n);
/* A record buffer of RM__TLS_BUF bytes, from malloc() since mbedTLS frees its
 * own with free(): a spare one, or a new one (NULL when out of memory). */
void *rm__tls_buf_get(rm_tls_config *cfg);
/* Gives one back: kept as a spare while there is room, else freed. */
void rm__tls_buf_put(rm_tls_config *cfg, void *buf);
/* Does the certificate name host (dNSName or CN, with one-label wildcards)? */
int rm__tls_cert_names(const mbedtls_x509_crt *crt, const char *host, size_t len);
/* Does the certificate list the IP address (4 or 16 bytes) in its SAN? */
int rm__tls_cert_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len);
/* SHA-256 of the DER as 64 hex digits and a NUL. */
void rm__tls_fingerprint(const mbedtls_x509_crt *crt, char out[65]);

#endif
