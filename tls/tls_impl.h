/* tls_impl.h: what the files of the TLS layer share. */
#ifndef REMORA_TLS_IMPL_H
#define REMORA_TLS_IMPL_H

#include <stdatomic.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include "remora/tls.h"

/* One certificate chain with its key; servers keep a list for SNI. */
typedef struct rm__tls_cert {
  mbedtls_x509_crt chain;
  mbedtls_pk_context key;
  struct rm__tls_cert *next;
} rm__tls_cert;

enum { RM__TLS_MAX_SUITES = 32, RM__TLS_MAX_ALPN = 16 };

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
};

void *rm__tls_alloc(rm_tls_config *cfg, size_t n);
void rm__tls_free(rm_tls_config *cfg, void *p, size_t n);
/* Does the certificate name host (dNSName or CN, with one-label wildcards)? */
int rm__tls_cert_names(const mbedtls_x509_crt *crt, const char *host, size_t len);
/* Does the certificate list the IP address (4 or 16 bytes) in its SAN? */
int rm__tls_cert_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len);
/* SHA-256 of the DER as 64 hex digits and a NUL. */
void rm__tls_fingerprint(const mbedtls_x509_crt *crt, char out[65]);

#endif
