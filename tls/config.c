/* config.c: TLS configurations, shared by the connections that use them.
 *
 * A config wraps one mbedtls_ssl_config with everything it points to: the
 * random generator, certificates and keys, trusted CAs, the session cache and
 * the ticket keys. mbedTLS locks the generator, cache and ticket keys itself
 * (MBEDTLS_THREADING_C), so one config serves connections on many threads;
 * what changes after creation is only the reference count.
 */
#include <stdlib.h>
#include <string.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ssl_ciphersuites.h>
#include "tls/tls_impl.h"

#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

enum {
  DEFAULT_TICKET_LIFETIME = 7200,
  DEFAULT_CACHE_MAX = 1000,
  DEFAULT_CACHE_TIMEOUT = 7200,
  DEFAULT_SPARE_BUFFERS = 16 /* a dispatcher works on one connection at a time */
};

/* Forward secrecy and no CBC padding oracles: ECDHE key exchange, AEAD ciphers. */
static const char *const default_suites[] = {
  "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
  "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
  "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
  "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
  "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
  "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
  NULL
};

/* The build enables small and exotic curves too; offer only the common strong ones. */
static const mbedtls_ecp_group_id curves[] = {
  MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_SECP384R1,
  MBEDTLS_ECP_DP_NONE
};

static void *default_alloc(void *ud, void *p, size_t osize, size_t nsize) {
  if (nsize == 0) {
    free(p);
    return NULL;
  }
  return realloc(p, nsize);
}

void *rm__tls_alloc(rm_tls_config *cfg, size_t n) {
  return cfg->alloc(cfg->alloc_ud, NULL, 0, n);
}

void rm__tls_free(rm_tls_config *cfg, void *p, size_t n) {
  if (p) cfg->alloc(cfg->alloc_ud, p, n, 0);
}

void *rm__tls_buf_get(rm_tls_config *cfg) {
  void *buf = NULL;
  pthread_mutex_lock(&cfg->spare_lock);
  if (cfg->nspare > 0) buf = cfg->spare[--cfg->nspare];
  pthread_mutex_unlock(&cfg->spare_lock);
  return buf ? buf : malloc(RM__TLS_BUF);
}

void rm__tls_buf_put(rm_tls_config *cfg, void *buf) {
  if (!buf) return;
  pthread_mutex_lock(&cfg->spare_lock);
  if (cfg->nspare < cfg->max_spare) {
    cfg->spare[cfg->nspare++] = buf;
    buf = NULL;
  }
  pthread_mutex_unlock(&cfg->spare_lock);
  free(buf); /* not wiped: see park() in stream.c */
}

/* Loading a file: missing or unreadable is an I/O error, anything else bad input. */
static int load_error(int ret) {
  if (ret == MBEDTLS_ERR_X509_FILE_IO_ERROR || ret == MBEDTLS_ERR_PK_FILE_IO_ERROR) return RM_EIO;
  if (ret == MBEDTLS_ERR_X509_ALLOC_FAILED || ret == MBEDTLS_ERR_PK_ALLOC_FAILED) return RM_ENOMEM;
  return RM_EINVAL;
}

static int set_suites(rm_tls_config *cfg, const char *const *names) {
  int n = 0;
  for (; names[n]; n++) {
    if (n == RM__TLS_MAX_SUITES) return RM_EFULL;
    cfg->suites[n] = mbedtls_ssl_get_ciphersuite_id(names[n]);
    if (cfg->suites[n] == 0) return RM_EINVAL;
  }
  if (n == 0) return RM_EINVAL;
  cfg->suites[n] = 0;
  mbedtls_ssl_conf_ciphersuites(&cfg->conf, cfg->suites);
  return RM_OK;
}

static int set_alpn(rm_tls_config *cfg, const char *const *protos) {
  int n = 0;
  for (; protos[n]; n++) {
    size_t len = strlen(protos[n]);
    if (n == RM__TLS_MAX_ALPN) return RM_EFULL;
    if (len == 0 || len > 255) return RM_EINVAL;
    cfg->alpn[n] = rm__tls_alloc(cfg, len + 1);
    if (!cfg->alpn[n]) return RM_ENOMEM;
    memcpy(cfg->alpn[n], protos[n], len + 1);
  }
  cfg->alpn[n] = NULL;
  if (mbedtls_ssl_conf_alpn_protocols(&cfg->conf, (const char **)cfg->alpn) != 0) return RM_EINVAL;
  return RM_OK;
}

/* SNI: every certificate that names the host is a candidate (mbedTLS picks the
 * one that fits the suite, RSA or ECDSA); no match keeps the default. */
static int on_sni(void *ud, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len) {
  rm_tls_config *cfg = ud;
  for (rm__tls_cert *c = cfg->certs; c; c = c->next) {
    if (rm__tls_cert_names(&c->chain, (const char *)name, len) &&
        mbedtls_ssl_set_hs_own_cert(ssl, &c->chain, &c->key) != 0)
      return -1;
  }
  return 0;
}

static int setup_server(rm_tls_config *cfg, const rm_tls_options *o) {
  mbedtls_ssl_conf_sni(&cfg->conf, on_sni, cfg);
  if (!(cfg->flags & RM_TLS_NO_CACHE)) {
    mbedtls_ssl_cache_set_max_entries(&cfg->cache, o->cache_max > 0 ? o->cache_max : DEFAULT_CACHE_MAX);
    mbedtls_ssl_cache_set_timeout(&cfg->cache, o->cache_timeout ? o->cache_timeout : DEFAULT_CACHE_TIMEOUT);
    mbedtls_ssl_conf_session_cache(&cfg->conf, &cfg->cache, mbedtls_ssl_cache_get, mbedtls_ssl_cache_set);
  }
  if (!(cfg->flags & RM_TLS_NO_TICKETS)) {
    /* mbedTLS keeps two keys and rotates the active one after a lifetime, so
     * a ticket stays valid for one to two lifetimes. */
    unsigned life = o->ticket_lifetime ? o->ticket_lifetime : DEFAULT_TICKET_LIFETIME;
    if (mbedtls_ssl_ticket_setup(&cfg->tickets, mbedtls_ctr_drbg_random, &cfg->drbg,
                                 MBEDTLS_CIPHER_AES_256_GCM, life) != 0)
      return RM_EIO;
    mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, mbedtls_ssl_ticket_write,
                                        mbedtls_ssl_ticket_parse, &cfg->tickets);
  }
  return RM_OK;
}

static int setup_client(rm_tls_config *cfg, const rm_tls_options *o) {
  int verify = !(cfg->flags & RM_TLS_VERIFY_NONE);
  int ret = mbedtls_x509_crt_parse_file(&cfg->ca, o->ca_file ? o->ca_file : SYSTEM_CA_FILE);
  /* A bundle may hold a few certificates mbedTLS cannot parse (ret > 0);
   * what matters is that some trust anchor was loaded. */
  int have_ca = ret >= 0 && cfg->ca.version != 0;
  if (!have_ca && (verify || o->ca_file)) return ret < 0 ? load_error(ret) : RM_EINVAL;
  if (have_ca) mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
  /* Without verification the result is still computed, for rm_tls_stream_info(). */
  mbedtls_ssl_conf_authmode(&cfg->conf, verify ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_OPTIONAL);
  return RM_OK;
}

static int setup(rm_tls_config *cfg, const rm_tls_options *o) {
  static const char pers[] = "remora-tls";
  mbedtls_ssl_config *conf = &cfg->conf;
  int ret;
  if (mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy,
                            (const unsigned char *)pers, sizeof pers - 1) != 0)
    return RM_EIO;
  if (mbedtls_ssl_config_defaults(conf, cfg->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                  MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    return RM_ENOMEM;
  /* TLS 1.2 only: older versions are broken, 1.3 is not in this mbedTLS build. */
  mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &cfg->drbg);
  mbedtls_ssl_conf_curves(conf, curves);
  if ((ret = set_suites(cfg, o->ciphersuites ? o->ciphersuites : default_suites)) != RM_OK) return ret;
  if (o->alpn && (ret = set_alpn(cfg, o->alpn)) != RM_OK) return ret;
  cfg->max_spare = o->spare_buffers < 0 ? 0 : o->spare_buffers ? o->spare_buffers : DEFAULT_SPARE_BUFFERS;
  if (cfg->max_spare && !(cfg->spare = rm__tls_alloc(cfg, cfg->max_spare * sizeof *cfg->spare))) return RM_ENOMEM;
  return cfg->server ? setup_server(cfg, o) : setup_client(cfg, o);
}

static void config_free(rm_tls_config *cfg) {
  rm__tls_cert *c = cfg->certs;
  while (c) {
    rm__tls_cert *next = c->next;
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_pk_free(&c->key);
    rm__tls_free(cfg, c, sizeof *c);
    c = next;
  }
  for (int i = 0; cfg->alpn[i]; i++) rm__tls_free(cfg, cfg->alpn[i], strlen(cfg->alpn[i]) + 1);
  while (cfg->nspare > 0) free(cfg->spare[--cfg->nspare]);
  rm__tls_free(cfg, cfg->spare, cfg->max_spare * sizeof *cfg->spare);
  pthread_mutex_destroy(&cfg->spare_lock);
  mbedtls_ssl_ticket_free(&cfg->tickets);
  mbedtls_ssl_cache_free(&cfg->cache);
  mbedtls_x509_crt_free(&cfg->ca);
  mbedtls_ssl_config_free(&cfg->conf);
  mbedtls_ctr_drbg_free(&cfg->drbg);
  mbedtls_entropy_free(&cfg->entropy);
  rm__tls_free(cfg, cfg, sizeof *cfg);
}

static rm_tls_config *config_new(const rm_tls_options *o, int server, int *err) {
  static const rm_tls_options none;
  rm_alloc_fn alloc;
  rm_tls_config *cfg;
  int ret;
  if (!o) o = &none;
  alloc = o->alloc ? o->alloc : default_alloc;
  cfg = alloc(o->alloc_ud, NULL, 0, sizeof *cfg);
  if (!cfg) {
    if (err) *err = RM_ENOMEM;
    return NULL;
  }
  memset(cfg, 0, sizeof *cfg);
  atomic_init(&cfg->refs, 1);
  cfg->server = server;
  cfg->flags = o->flags;
  cfg->alloc = alloc;
  cfg->alloc_ud = o->alloc_ud;
  /* Initialise everything first so that config_free() is right at any failure. */
  mbedtls_entropy_init(&cfg->entropy);
  mbedtls_ctr_drbg_init(&cfg->drbg);
  mbedtls_ssl_config_init(&cfg->conf);
  mbedtls_x509_crt_init(&cfg->ca);
  mbedtls_ssl_cache_init(&cfg->cache);
  mbedtls_ssl_ticket_init(&cfg->tickets);
  pthread_mutex_init(&cfg->spare_lock, NULL);
  if ((ret = setup(cfg, o)) != RM_OK) {
    config_free(cfg);
    cfg = NULL;
  }
  if (err) *err = ret;
  return cfg;
}

rm_tls_config *rm_tls_server_new(const rm_tls_options *opts, int *err) {
  return config_new(opts, 1, err);
}

rm_tls_config *rm_tls_client_new(const rm_tls_options *opts, int *err) {
  return config_new(opts, 0, err);
}

void rm_tls_config_ref(rm_tls_config *cfg) {
  atomic_fetch_add(&cfg->refs, 1);
}

void rm_tls_config_unref(rm_tls_config *cfg) {
  if (cfg && atomic_fetch_sub(&cfg->refs, 1) == 1) config_free(cfg);
}

/* Does a configured suite use the certificate's own EC key for ECDH (static
 * ECDH, no forward secrecy, but a caller may ask for it)? mbedTLS then wants
 * the key as MBEDTLS_PK_ECKEY. */
static int static_ecdh_offered(const rm_tls_config *cfg) {
  for (const int *id = cfg->suites; *id; id++) {
    const mbedtls_ssl_ciphersuite_t *info = mbedtls_ssl_ciphersuite_from_id(*id);
    if (info && mbedtls_ssl_ciphersuite_uses_ecdh(info)) return 1;
  }
  return 0;
}

/* A key parsed from PEM is a plain EC key (MBEDTLS_PK_ECKEY), and mbedTLS
 * signs with such a key through a copy whose curve group is loaded afresh:
 * the table of multiples of the generator that its comb method builds is
 * built again, and dropped, at every handshake (4.9 M of the 9.1 M
 * instructions of a P-256 signature). The same key held as MBEDTLS_PK_ECDSA is
 * signed with in place, and its group keeps the table. One signature here
 * builds it now, before the config is shared between threads; signing
 * afterwards only reads it. */
static int keep_sign_table(rm_tls_config *cfg, mbedtls_pk_context *key) {
  static const unsigned char hash[32];
  unsigned char sig[MBEDTLS_ECDSA_MAX_LEN];
  size_t len;
  mbedtls_pk_context ecdsa;
  int ret;
  if (mbedtls_pk_get_type(key) != MBEDTLS_PK_ECKEY || static_ecdh_offered(cfg)) return RM_OK;
  mbedtls_pk_init(&ecdsa);
  ret = mbedtls_pk_setup(&ecdsa, mbedtls_pk_info_from_type(MBEDTLS_PK_ECDSA));
  if (ret == 0) ret = mbedtls_ecdsa_from_keypair(mbedtls_pk_ec(ecdsa), mbedtls_pk_ec(*key));
  if (ret == 0)
    ret = mbedtls_pk_sign(&ecdsa, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &len, mbedtls_ctr_drbg_random,
                          &cfg->drbg);
  if (ret != 0) {
    mbedtls_pk_free(&ecdsa);
    return RM_ENOMEM; /* the key signed nothing yet: only memory can be short */
  }
  mbedtls_pk_free(key);
  *key = ecdsa; /* a pk context is two pointers: it moves by copy */
  return RM_OK;
}

int rm_tls_config_add_cert(rm_tls_config *cfg, const char *cert_file,
                           const char *key_file, const char *password) {
  rm__tls_cert *c, **tail;
  int ret;
  if (!cert_file || !key_file) return RM_EINVAL;
  c = rm__tls_alloc(cfg, sizeof *c);
  if (!c) return RM_ENOMEM;
  c->next = NULL;
  mbedtls_x509_crt_init(&c->chain);
  mbedtls_pk_init(&c->key);
  if ((ret = mbedtls_x509_crt_parse_file(&c->chain, cert_file)) != 0 ||
      (ret = mbedtls_pk_parse_keyfile(&c->key, key_file, password)) != 0) {
    ret = load_error(ret);
  } else if (mbedtls_pk_check_pair(&c->chain.pk, &c->key) != 0) {
    ret = RM_EINVAL; /* the key does not belong to the certificate */
  } else {
    ret = keep_sign_table(cfg, &c->key);
  }
  if (ret == RM_OK && !cfg->certs && mbedtls_ssl_conf_own_cert(&cfg->conf, &c->chain, &c->key) != 0)
    ret = RM_ENOMEM;
  if (ret != RM_OK) {
    mbedtls_x509_crt_free(&c->chain);
    mbedtls_pk_free(&c->key);
    rm__tls_free(cfg, c, sizeof *c);
    return ret;
  }
  for (tail = &cfg->certs; *tail; tail = &(*tail)->next) {}
  *tail = c;
  return RM_OK;
}

const char *rm_tls_errstr(int err) {
  switch (err) {
  case RM_TLS_EHANDSHAKE: return "sslhandshake";
  case RM_TLS_EALERT: return "sslalertrecv";
  case RM_TLS_ENOTTRUSTED: return "sslnottrusted";
  case RM_TLS_ECRYPTO: return "sslcryptoerr";
  case RM_TLS_ECLOSENOTIFY: return "sslclosenotify";
  case RM_TLS_ENOTENABLED: return "sslnotenabled";
  default: return NULL;
  }
}
