/* TLS layer tests: real mbedTLS, real sockets on 127.0.0.1 (or socketpairs),
 * and the real openssl s_server / s_client for interoperability. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#include "remora/tls.h"
#include "tls/tls_impl.h" /* test_sign_table looks at the key */
#include "tests/unit/check.h"

static char dir[256];                 /* the temporary directory of this run */
static char self_crt[300], self_key[300], other_crt[300], other_key[300], enc_key[300];
static char self_fp[65];

/* ---- helpers ---- */

/* Runs a program without a shell; 0 when it exits with status 0. */
static int run(char *const argv[]) {
  int status;
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    execvp(argv[0], argv);
    _exit(127);
  }
  if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void path(char *out, const char *name) {
  snprintf(out, 300, "%s/%s", dir, name);
}

/* A second certificate for "other.test", made by openssl, and an encrypted copy of its key. */
static int make_other(void) {
  char *req[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", other_key, "-out", other_crt, "-days", "2", "-subj",
                 "/CN=other.test", "-addext", "subjectAltName=DNS:other.test,DNS:*.wild.test", NULL};
  char *enc[] = {"openssl", "ec", "-in", other_key, "-aes256", "-passout", "pass:secret",
                 "-out", enc_key, NULL};
  return run(req) == 0 && run(enc) == 0 ? 0 : -1;
}

static rm_tls_config *server_cfg(const char *const *alpn, int flags) {
  rm_tls_options o = {.flags = flags, .alpn = alpn};
  int err;
  rm_tls_config *cfg = rm_tls_server_new(&o, &err);
  if (cfg && (rm_tls_config_add_cert(cfg, self_crt, self_key, NULL) != RM_OK ||
              rm_tls_config_add_cert(cfg, other_crt, other_key, NULL) != RM_OK)) {
    rm_tls_config_unref(cfg);
    return NULL;
  }
  return cfg;
}

static rm_tls_config *client_cfg(const char *ca, const char *const *alpn, int flags) {
  rm_tls_options o = {.flags = flags, .alpn = alpn, .ca_file = ca};
  int err;
  return rm_tls_client_new(&o, &err);
}

/* Two streams over a non-blocking socketpair, stepped in turn. */
typedef struct pair {
  int fd[2];
  rm_tls_stream *cli, *srv;
  int rc, rs; /* handshake results */
} pair;

static int pair_open(pair *p, rm_tls_config *scfg, rm_tls_config *ccfg, const char *host) {
  rm_tls_io io;
  memset(p, 0, sizeof *p);
  p->rc = p->rs = RM_EAGAIN;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd) != 0) return -1;
  rm_tls_io_fd(&io, p->fd[0]);
  if (rm_tls_stream_new(ccfg, host, &io, NULL, 0, &p->cli) != RM_OK) return -1;
  rm_tls_io_fd(&io, p->fd[1]);
  return rm_tls_stream_new(scfg, NULL, &io, NULL, 0, &p->srv) == RM_OK ? 0 : -1;
}

static void pair_handshake(pair *p) {
  for (int i = 0; i < 200 && (p->rc == RM_EAGAIN || p->rs == RM_EAGAIN); i++) {
    if (p->rc == RM_EAGAIN) p->rc = rm_tls_stream_handshake(p->cli);
    if (p->rs == RM_EAGAIN) p->rs = rm_tls_stream_handshake(p->srv);
  }
}

/* Reads what the peer sent, stepping the writer as needed. */
static long pair_read(rm_tls_stream *s, char *buf, size_t n) {
  long r = RM_EAGAIN;
  for (int i = 0; i < 100 && r == RM_EAGAIN; i++) r = rm_tls_stream_read(s, buf, n);
  return r;
}

static void pair_close(pair *p) {
  rm_tls_stream_free(p->cli);
  rm_tls_stream_free(p->srv);
  close(p->fd[0]);
  close(p->fd[1]);
}

/* ---- certificates and configs ---- */

static void test_selfsigned(void) {
  char fp2[65];
  struct stat st;
  CHECK_EQ(rm_tls_selfsigned(dir, self_fp), RM_OK);
  CHECK_EQ(strlen(self_fp), 64);
  CHECK(stat(self_key, &st) == 0 && (st.st_mode & 0777) == 0600);
  CHECK_EQ(rm_tls_selfsigned(dir, fp2), RM_OK); /* loads, does not regenerate */
  CHECK(strcmp(self_fp, fp2) == 0);
  CHECK_EQ(rm_tls_selfsigned("/nonexistent-remora-dir", fp2), RM_EIO);
}

static void test_config_errors(void) {
  rm_tls_options o = {.ca_file = "/nonexistent.pem"};
  const char *bad_suite[] = {"TLS-RSA-WITH-NOPE", NULL};
  rm_tls_config *cfg;
  int err = 0;
  CHECK(rm_tls_client_new(&o, &err) == NULL);
  CHECK_EQ(err, RM_EIO);
  o = (rm_tls_options){.ciphersuites = bad_suite};
  CHECK(rm_tls_server_new(&o, &err) == NULL);
  CHECK_EQ(err, RM_EINVAL);
  cfg = rm_tls_server_new(NULL, &err);
  CHECK(cfg != NULL);
  if (!cfg) return;
  CHECK_EQ(rm_tls_config_add_cert(cfg, self_crt, other_key, NULL), RM_EINVAL); /* key of another cert */
  CHECK_EQ(rm_tls_config_add_cert(cfg, other_crt, enc_key, "wrong"), RM_EINVAL);
  CHECK_EQ(rm_tls_config_add_cert(cfg, other_crt, enc_key, NULL), RM_EINVAL);
  CHECK_EQ(rm_tls_config_add_cert(cfg, other_crt, enc_key, "secret"), RM_OK);
  rm_tls_config_unref(cfg);
  /* A server with no certificate cannot serve. */
  cfg = rm_tls_server_new(NULL, &err);
  if (cfg) {
    rm_tls_stream *s;
    rm_tls_io io;
    rm_tls_io_fd(&io, -1);
    CHECK_EQ(rm_tls_stream_new(cfg, NULL, &io, NULL, 0, &s), RM_TLS_ENOTENABLED);
    CHECK(strcmp(rm_tls_errstr(RM_TLS_ENOTENABLED), "sslnotenabled") == 0);
    rm_tls_config_unref(cfg);
  }
}

/* A server's ECDSA key is held so that its curve group keeps the comb table
 * of the generator between signatures (white box: tls/config.c). A config
 * that offers static ECDH keeps the key as a plain EC key, which that key
 * exchange needs, and still completes a handshake. */
static void test_sign_table(void) {
  const char *ecdh[] = {"TLS-ECDH-ECDSA-WITH-AES-128-GCM-SHA256", NULL};
  rm_tls_options o = {.ciphersuites = ecdh};
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg, *ecdh_cfg;
  rm_tls_info info;
  pair p;
  int err;
  if (!scfg) { CHECK(0); return; }
  CHECK_EQ(mbedtls_pk_get_type(&scfg->certs->key), MBEDTLS_PK_ECDSA);
  CHECK(mbedtls_pk_ec(scfg->certs->key)->grp.T != NULL);
  rm_tls_config_unref(scfg);
  ecdh_cfg = rm_tls_server_new(&o, &err);
  ccfg = rm_tls_client_new(&(rm_tls_options){.ciphersuites = ecdh, .ca_file = other_crt}, &err);
  if (!ecdh_cfg || !ccfg || rm_tls_config_add_cert(ecdh_cfg, other_crt, other_key, NULL) != RM_OK) {
    CHECK(0);
    return;
  }
  CHECK_EQ(mbedtls_pk_get_type(&ecdh_cfg->certs->key), MBEDTLS_PK_ECKEY);
  if (pair_open(&p, ecdh_cfg, ccfg, "other.test") != 0) { CHECK(0); return; }
  pair_handshake(&p);
  CHECK_EQ(p.rs, RM_OK);
  CHECK_EQ(rm_tls_stream_info(p.srv, &info), RM_OK);
  CHECK(info.cipher && strcmp(info.cipher, ecdh[0]) == 0);
  pair_close(&p);
  rm_tls_config_unref(ecdh_cfg);
  rm_tls_config_unref(ccfg);
}

/* ---- streams over a socketpair ---- */

static void test_stream_exchange(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  rm_tls_info info;
  char buf[64];
  pair p;
  CHECK(scfg && ccfg);
  if (!scfg || !ccfg || pair_open(&p, scfg, ccfg, "localhost") != 0) return;
  pair_handshake(&p);
  CHECK_EQ(p.rc, RM_OK);
  CHECK_EQ(p.rs, RM_OK);
  CHECK(rm_tls_stream_established(p.cli) && rm_tls_stream_established(p.srv));
  CHECK_EQ(rm_tls_stream_read(p.srv, buf, sizeof buf), RM_EAGAIN);
  CHECK_EQ(rm_tls_stream_wants(p.srv), RM_READ);
  CHECK_EQ(rm_tls_stream_write(p.cli, "ping", 4), 4);
  CHECK_EQ(pair_read(p.srv, buf, sizeof buf), 4);
  CHECK(memcmp(buf, "ping", 4) == 0);
  CHECK_EQ(rm_tls_stream_write(p.srv, "pong!", 5), 5);
  CHECK_EQ(pair_read(p.cli, buf, 2), 2); /* the rest of the record waits, decoded */
  CHECK_EQ(rm_tls_stream_pending(p.cli), 3);
  CHECK_EQ(pair_read(p.cli, buf + 2, sizeof buf - 2), 3);
  CHECK(memcmp(buf, "pong!", 5) == 0);
  CHECK_EQ(rm_tls_stream_info(p.cli, &info), RM_OK);
  CHECK(strcmp(info.version, "TLSv1.2") == 0);
  CHECK(strcmp(info.cipher, "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256") == 0);
  CHECK(info.verified && info.has_peer_cert && !info.resumed && info.alpn == NULL);
  CHECK(strcmp(info.subject, "CN=localhost") == 0 && strcmp(info.issuer, "CN=localhost") == 0);
  CHECK(strcmp(info.fingerprint, self_fp) == 0);
  CHECK(strlen(info.not_before) == 20 && info.not_after[19] == 'Z');
  CHECK_EQ(rm_tls_stream_info(p.srv, &info), RM_OK);
  CHECK(!info.verified && !info.has_peer_cert); /* no client certificate asked */
  /* close_notify reads as the end of the stream, and says so. */
  CHECK_EQ(rm_tls_stream_close(p.cli), RM_OK);
  CHECK_EQ(pair_read(p.srv, buf, sizeof buf), 0);
  CHECK_EQ(rm_tls_stream_error(p.srv), RM_TLS_ECLOSENOTIFY);
  pair_close(&p);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* A transport that ends without close_notify also ends the stream. */
static void test_stream_eof(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  char buf[16];
  pair p;
  if (!scfg || !ccfg || pair_open(&p, scfg, ccfg, "localhost") != 0) { CHECK(0); return; }
  pair_handshake(&p);
  shutdown(p.fd[0], SHUT_WR);
  CHECK_EQ(pair_read(p.srv, buf, sizeof buf), 0);
  CHECK_EQ(rm_tls_stream_error(p.srv), RM_ECLOSED);
  CHECK_EQ(rm_tls_stream_read(p.srv, buf, sizeof buf), 0);
  CHECK_EQ(rm_tls_stream_write(p.srv, "x", 1), RM_ECLOSED);
  pair_close(&p);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* A write that meets a full socket must be retried with the same bytes; the
 * queue may offer more by then, and no byte may be lost or doubled. */
static void test_stream_write_retry(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  static char out[200000], in[200000];
  size_t sent = 0, got = 0, offered = 1000;
  int small = 4096, waits = 0;
  pair p;
  if (!scfg || !ccfg || pair_open(&p, scfg, ccfg, "localhost") != 0) return;
  pair_handshake(&p);
  setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  for (size_t i = 0; i < sizeof out; i++) out[i] = (char)(i * 7 + i / 251);
  for (int i = 0; i < 100000 && got < sizeof in; i++) {
    if (sent < sizeof out) {
      long w = rm_tls_stream_write(p.cli, out + sent, offered);
      if (w > 0) {
        sent += (size_t)w;
        offered = 3000;
      } else {
        CHECK_EQ(w, RM_EAGAIN);
        waits++;
        offered += 500; /* the queue grew while the socket was full */
      }
      if (offered > sizeof out - sent) offered = sizeof out - sent;
    }
    if (i % 3 == 0) { /* read slowly so that the socket fills */
      long r = rm_tls_stream_read(p.srv, in + got, sizeof in - got);
      if (r > 0) got += (size_t)r;
    }
  }
  CHECK(waits > 0); /* the case under test did happen */
  CHECK_EQ(got, sizeof in);
  CHECK(memcmp(in, out, sizeof in) == 0);
  pair_close(&p);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

static void expect_handshake(rm_tls_config *scfg, rm_tls_config *ccfg, const char *host,
                             int want_client, int want_server, rm_tls_info *info) {
  pair p;
  if (pair_open(&p, scfg, ccfg, host) != 0) {
    CHECK(0);
    return;
  }
  pair_handshake(&p);
  CHECK_EQ(p.rc, want_client);
  CHECK_EQ(p.rs, want_server);
  if (info && p.rc == RM_OK) rm_tls_stream_info(p.cli, info);
  pair_close(&p);
}

static void test_names(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  rm_tls_config *ocfg = client_cfg(other_crt, NULL, 0);
  rm_tls_info info;
  if (!scfg || !ccfg || !ocfg) { CHECK(0); return; }
  expect_handshake(scfg, ccfg, "127.0.0.1", RM_OK, RM_OK, NULL);   /* the IP SAN */
  expect_handshake(scfg, ccfg, "LocalHost", RM_OK, RM_OK, NULL);
  expect_handshake(scfg, ccfg, "127.0.0.2", RM_TLS_ENOTTRUSTED, RM_TLS_EALERT, NULL);
  expect_handshake(scfg, ccfg, "::1", RM_TLS_ENOTTRUSTED, RM_TLS_EALERT, NULL);
  /* SNI picks the second certificate; unknown names get the first. */
  memset(&info, 0, sizeof info);
  expect_handshake(scfg, ocfg, "other.test", RM_OK, RM_OK, &info);
  CHECK(strcmp(info.subject, "CN=other.test") == 0);
  expect_handshake(scfg, ocfg, "a.wild.test", RM_OK, RM_OK, NULL);
  expect_handshake(scfg, ocfg, "a.b.wild.test", RM_TLS_ENOTTRUSTED, RM_TLS_EALERT, NULL);
  expect_handshake(scfg, ocfg, "nothere.test", RM_TLS_ENOTTRUSTED, RM_TLS_EALERT, NULL);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
  rm_tls_config_unref(ocfg);
}

static void test_verify_none(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *wrong = client_cfg(other_crt, NULL, 0);
  rm_tls_config *lax = client_cfg(other_crt, NULL, RM_TLS_VERIFY_NONE);
  rm_tls_info info;
  pair p;
  if (!scfg || !wrong || !lax) { CHECK(0); return; }
  if (pair_open(&p, scfg, wrong, "localhost") == 0) {
    char detail[200];
    pair_handshake(&p);
    CHECK_EQ(p.rc, RM_TLS_ENOTTRUSTED);
    CHECK(strcmp(rm_tls_errstr(p.rc), "sslnottrusted") == 0);
    CHECK_EQ(p.rs, RM_TLS_EALERT);
    CHECK(strcmp(rm_tls_errstr(p.rs), "sslalertrecv") == 0);
    rm_tls_stream_detail(p.cli, detail, sizeof detail);
    CHECK(strstr(detail, "not correctly signed") != NULL);
    pair_close(&p);
  }
  memset(&info, 0, sizeof info);
  expect_handshake(scfg, lax, "localhost", RM_OK, RM_OK, &info);
  CHECK(!info.verified && info.has_peer_cert && info.verify_reason[0] != 0);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(wrong);
  rm_tls_config_unref(lax);
}

static void test_alpn(void) {
  const char *srv[] = {"h2", "http/1.1", NULL}, *cli[] = {"http/1.1", NULL}, *none[] = {"x", NULL};
  rm_tls_config *scfg = server_cfg(srv, 0), *ccfg = client_cfg(self_crt, cli, 0);
  rm_tls_config *bad = client_cfg(self_crt, none, 0);
  rm_tls_info info;
  if (!scfg || !ccfg || !bad) { CHECK(0); return; }
  memset(&info, 0, sizeof info);
  expect_handshake(scfg, ccfg, "localhost", RM_OK, RM_OK, &info);
  CHECK(info.alpn && strcmp(info.alpn, "http/1.1") == 0);
  /* No protocol in common: mbedTLS refuses the handshake. */
  expect_handshake(scfg, bad, "localhost", RM_TLS_EALERT, RM_TLS_EHANDSHAKE, NULL);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
  rm_tls_config_unref(bad);
}

static void resume_with(int server_flags) {
  rm_tls_config *scfg = server_cfg(NULL, server_flags), *ccfg = client_cfg(self_crt, NULL, 0);
  unsigned char saved[4096];
  size_t len = 0;
  rm_tls_info ci, si;
  pair p;
  if (!scfg || !ccfg || pair_open(&p, scfg, ccfg, "localhost") != 0) { CHECK(0); return; }
  pair_handshake(&p);
  CHECK_EQ(rm_tls_session_save(p.cli, saved, 10, &len), RM_EFULL);
  CHECK(len > 10 && len <= sizeof saved);
  CHECK_EQ(rm_tls_session_save(p.cli, saved, sizeof saved, &len), RM_OK);
  CHECK_EQ(rm_tls_session_save(p.srv, saved, sizeof saved, &len), RM_EINVAL);
  pair_close(&p);
  if (pair_open(&p, scfg, ccfg, "localhost") != 0) { CHECK(0); return; }
  CHECK_EQ(rm_tls_session_resume(p.cli, saved, 5), RM_EINVAL); /* truncated */
  CHECK_EQ(rm_tls_session_resume(p.cli, saved, len), RM_OK);
  pair_handshake(&p);
  CHECK_EQ(p.rc, RM_OK);
  CHECK_EQ(p.rs, RM_OK);
  rm_tls_stream_info(p.cli, &ci);
  rm_tls_stream_info(p.srv, &si);
  CHECK(ci.resumed && si.resumed);
  CHECK(ci.verified && strcmp(ci.fingerprint, self_fp) == 0); /* carried by the session */
  pair_close(&p);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

static void test_resume_ticket(void) { resume_with(RM_TLS_NO_CACHE); }
static void test_resume_cache(void) { resume_with(RM_TLS_NO_TICKETS); }

static void test_garbage_hello(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  unsigned char noise[600];
  pair p;
  if (!scfg || !ccfg) { CHECK(0); return; }
  for (int round = 0; round < 2; round++) {
    if (pair_open(&p, scfg, ccfg, "localhost") != 0) { CHECK(0); return; }
    if (round == 0) CHECK(write(p.fd[0], http, sizeof http - 1) > 0);
    else {
      for (size_t i = 0; i < sizeof noise; i++) noise[i] = (unsigned char)(i * 131 + 22);
      noise[0] = 22, noise[1] = 3, noise[2] = 3, noise[3] = 0x01, noise[4] = 0xff; /* a handshake record header */
      CHECK(write(p.fd[0], noise, sizeof noise) > 0);
    }
    CHECK_EQ(rm_tls_stream_handshake(p.srv), RM_TLS_EHANDSHAKE);
    CHECK(strcmp(rm_tls_errstr(rm_tls_stream_error(p.srv)), "sslhandshake") == 0);
    pair_close(&p);
  }
  expect_handshake(scfg, ccfg, "localhost", RM_OK, RM_OK, NULL); /* the config still serves */
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* Upgrade on a byte stream: the server read the plaintext command together
 * with the start of the ClientHello, and hands those bytes back. */
static void test_stream_preread(void) {
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  char buf[4096], *eol;
  rm_tls_io io;
  long n;
  pair p;
  if (!scfg || !ccfg || pair_open(&p, scfg, ccfg, "localhost") != 0) { CHECK(0); return; }
  rm_tls_stream_free(p.srv);
  CHECK(write(p.fd[0], "STARTTLS\r\n", 10) == 10);
  CHECK_EQ(rm_tls_stream_handshake(p.cli), RM_EAGAIN); /* ClientHello sent */
  n = read(p.fd[1], buf, sizeof buf);
  eol = memchr(buf, '\n', n > 0 ? (size_t)n : 0);
  CHECK(eol && n > 10 + 5);
  if (!eol) return;
  rm_tls_io_fd(&io, p.fd[1]);
  CHECK_EQ(rm_tls_stream_new(scfg, NULL, &io, eol + 1, (size_t)(buf + n - eol - 1), &p.srv), RM_OK);
  CHECK(rm_tls_stream_pending(p.srv) > 0);
  pair_handshake(&p);
  CHECK_EQ(p.rc, RM_OK);
  CHECK_EQ(p.rs, RM_OK);
  pair_close(&p);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* Sends msg from a to b and checks that b reads it whole. */
static void exchange(rm_tls_stream *a, rm_tls_stream *b, const char *msg, size_t n) {
  static char got[40000];
  size_t have = 0;
  for (size_t off = 0; off < n;) {
    long w = rm_tls_stream_write(a, msg + off, n - off);
    CHECK(w > 0);
    if (w <= 0) return;
    off += (size_t)w;
  }
  while (have < n) {
    long r = pair_read(b, got + have, sizeof got - have);
    CHECK(r > 0);
    if (r <= 0) return;
    have += (size_t)r;
  }
  CHECK(have == n && memcmp(got, msg, n) == 0);
}

/* What an idle session costs: mbedTLS allocates with calloc, so the C
 * library's counters see it. After a read finds nothing, a session gives its
 * two 16.7 KB record buffers back; the next records, both ways and across
 * several records, must still be sealed and opened with the right counters. */
static void test_idle_memory(void) {
  /* Without spare buffers: what one idle session holds, not what a config keeps. */
  rm_tls_options so = {.spare_buffers = -1}, co = {.spare_buffers = -1, .ca_file = self_crt};
  rm_tls_config *scfg = rm_tls_server_new(&so, NULL), *ccfg = rm_tls_client_new(&co, NULL);
  enum { N = 20 };
  pair p[N];
  static char big[40000];
  char buf[64];
  struct mallinfo2 before, after;
  if (!scfg || !ccfg || rm_tls_config_add_cert(scfg, self_crt, self_key, NULL) != RM_OK) { CHECK(0); return; }
  for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
  before = mallinfo2();
  for (int i = 0; i < N; i++) {
    CHECK(pair_open(&p[i], scfg, ccfg, "localhost") == 0);
    pair_handshake(&p[i]);
    CHECK(p[i].rc == RM_OK && p[i].rs == RM_OK);
    exchange(p[i].cli, p[i].srv, "request", 7);
    exchange(p[i].srv, p[i].cli, "answer", 6);
    CHECK(rm_tls_stream_read(p[i].cli, buf, sizeof buf) == RM_EAGAIN);   /* idle now */
    /* The server's last call was a write sent whole: it idles without a
     * read that finds nothing, as the HTTP server waits for readiness. */
  }
  after = mallinfo2();
  size_t per = (size_t)(after.uordblks - before.uordblks) / N;
  printf("# idle TLS session, client and server side together: %zu bytes\n", per);
  CHECK(per < 16384);   /* with the record buffers it was about 75 KB */
  for (int i = 0; i < N; i++) {
    exchange(p[i].cli, p[i].srv, big, sizeof big);
    exchange(p[i].srv, p[i].cli, big, sizeof big);
    CHECK(rm_tls_stream_read(p[i].srv, buf, sizeof buf) == RM_EAGAIN);
    exchange(p[i].cli, p[i].srv, "again", 5);
    pair_close(&p[i]);
  }
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* Idle sessions leave their record buffers to busy ones, up to the config's
 * bound (white box: the config's spare list). */
static void test_spare_buffers(void) {
  enum { N = 4 };
  rm_tls_options so = {.spare_buffers = 2};
  rm_tls_config *scfg = rm_tls_server_new(&so, NULL), *ccfg = client_cfg(self_crt, NULL, 0);
  pair p[N];
  if (!scfg || !ccfg || rm_tls_config_add_cert(scfg, self_crt, self_key, NULL) != RM_OK) { CHECK(0); return; }
  for (int i = 0; i < N; i++) {
    CHECK(pair_open(&p[i], scfg, ccfg, "localhost") == 0);
    pair_handshake(&p[i]);
    exchange(p[i].cli, p[i].srv, "request", 7);
    exchange(p[i].srv, p[i].cli, "answer", 6); /* the server idles after its write */
  }
  CHECK_EQ(scfg->nspare, 2); /* the bound holds: the others were freed */
  exchange(p[0].cli, p[0].srv, "again", 5);  /* input, output and read-ahead taken */
  CHECK_EQ(scfg->nspare, 0);
  exchange(p[0].srv, p[0].cli, "fine", 4);
  CHECK_EQ(scfg->nspare, 2);
  for (int i = 0; i < N; i++) pair_close(&p[i]);
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

/* ---- on an rm_loop: a TLS echo server and clients over 127.0.0.1 ---- */

typedef struct world {
  rm_loop *loop;
  rm_tls_config *scfg;
  int upgrade;        /* the next accepted connection starts in plaintext */
  int srv_ends;       /* server connections finished */
  int srv_err;        /* how the last one ended */
  size_t srv_preread; /* bytes handed back at the last upgrade */
} world;

typedef struct peer {
  world *w;
  rm_conn *c;
  rm_tls_config *cfg;
  const char *host;
  int plain;   /* before STARTTLS */
  int garbage; /* a client that speaks HTTP to the TLS port */
  int hs, done, err;
  char buf[512];
  size_t len;
  rm_tls_info info;
  unsigned char session[4096];
  size_t session_len; /* in: offer it; out: the saved one */
} peer;

static void srv_end(peer *p, int err) {
  p->w->srv_ends++;
  p->w->srv_err = err;
  rm_conn_close(p->c);
  free(p);
}

/* The server reads a plaintext line first on upgrade, then echoes over TLS. */
static void srv_step(rm_conn *c, void *ud) {
  peer *p = ud;
  char buf[4096];
  long r;
  if (p->plain) {
    char *eol;
    r = rm_conn_read(c, p->buf + p->len, sizeof p->buf - p->len);
    if (r <= 0) { if (r != RM_EAGAIN) srv_end(p, (int)r); return; }
    p->len += (size_t)r;
    if (!(eol = memchr(p->buf, '\n', p->len))) return;
    p->plain = 0;
    p->w->srv_preread = (size_t)(p->buf + p->len - eol - 1);
    if (rm_tls_attach(c, p->w->scfg, NULL, eol + 1, p->w->srv_preread) != RM_OK) { srv_end(p, RM_EINVAL); return; }
  }
  if (p->hs == RM_EAGAIN && (p->hs = rm_tls_handshake(c)) != RM_OK) {
    if (p->hs != RM_EAGAIN) srv_end(p, p->hs);
    return;
  }
  while ((r = rm_conn_read(c, buf, sizeof buf)) > 0) rm_conn_write(c, buf, (size_t)r);
  if (r != RM_EAGAIN) srv_end(p, (int)r);
}

static const rm_conn_handler srv_handler = {NULL, srv_step, srv_step, NULL};

static void on_accept(rm_listener *l, int fd, void *ud) {
  world *w = ud;
  peer *p = calloc(1, sizeof *p);
  p->w = w;
  p->hs = RM_EAGAIN;
  p->plain = w->upgrade;
  p->c = rm_conn_new(w->loop, fd, &srv_handler, p);
  rm_conn_want_read(p->c, 1);
  if (!p->plain && rm_tls_attach(p->c, w->scfg, NULL, NULL, 0) == RM_OK) rm_tls_handshake(p->c);
}

static void cli_end(peer *p, int err) {
  p->done = 1;
  p->err = err;
  rm_conn_close(p->c);
}

static void cli_step(rm_conn *c, void *ud) {
  peer *p = ud;
  long r;
  if (p->garbage) { /* wait for the server to give up on us */
    char b[256];
    while ((r = rm_conn_read(c, b, sizeof b)) > 0) {}
    if (r != RM_EAGAIN) cli_end(p, (int)r);
    return;
  }
  if (p->hs == RM_EAGAIN) {
    if ((p->hs = rm_tls_handshake(c)) == RM_EAGAIN) return;
    if (p->hs != RM_OK) { cli_end(p, p->hs); return; }
    rm_tls_stream_info(rm_tls_of(c), &p->info);
    rm_conn_write(c, "ping\n", 5);
  }
  while ((r = rm_conn_read(c, p->buf + p->len, sizeof p->buf - p->len)) > 0) p->len += (size_t)r;
  if (p->len == 5) {
    rm_tls_session_save(rm_tls_of(c), p->session, sizeof p->session, &p->session_len);
    rm_tls_close(c);
    cli_end(p, RM_OK);
  } else if (r != RM_EAGAIN) {
    cli_end(p, (int)r);
  }
}

static void cli_connect(rm_conn *c, int err, void *ud) {
  peer *p = ud;
  p->c = c;
  if (err) { cli_end(p, err); return; }
  rm_conn_want_read(c, 1);
  if (p->garbage) { rm_conn_write(c, "GET / HTTP/1.0\r\n\r\n", 18); return; }
  if (p->plain) rm_conn_write(c, "STARTTLS\n", 9); /* and the ClientHello right behind it */
  if (rm_tls_attach(c, p->cfg, p->host, NULL, 0) != RM_OK ||
      (p->session_len && rm_tls_session_resume(rm_tls_of(c), p->session, p->session_len) != RM_OK)) {
    cli_end(p, RM_EINVAL);
    return;
  }
  p->session_len = 0;
  cli_step(c, p);
}

static const rm_conn_handler cli_handler = {cli_connect, cli_step, cli_step, NULL};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void run_until(world *w, const int *counter, int target) {
  double end = now_s() + 10;
  while (*counter < target && now_s() < end) rm_loop_run_once(w->loop, 50);
}

/* One client from connect to close; returns how it ended. */
static int client(world *w, int port, peer *p) {
  struct sockaddr_storage ss;
  socklen_t len;
  rm_conn *c;
  int ends = w->srv_ends;
  p->w = w;
  p->hs = RM_EAGAIN;
  p->done = 0;
  p->len = 0;
  if (rm_addr_parse("127.0.0.1", port, AF_INET, &ss, &len) != RM_OK ||
      rm_conn_connect(w->loop, (struct sockaddr *)&ss, len, NULL, 0, &cli_handler, p, &c) != RM_OK)
    return RM_ECONNECT;
  run_until(w, &p->done, 1);
  run_until(w, &w->srv_ends, ends + 1);
  return p->done ? p->err : RM_ETIMEDOUT;
}

static void test_loop(void) {
  world w = {0};
  rm_listener *l;
  rm_tls_config *ccfg = client_cfg(self_crt, NULL, 0), *wrong = client_cfg(other_crt, NULL, 0);
  peer p = {.host = "localhost"}, bad = {.host = "localhost"}, junk = {.garbage = 1};
  int port;
  w.loop = rm_loop_new(NULL);
  w.scfg = server_cfg(NULL, 0);
  if (!w.loop || !w.scfg || !ccfg || !wrong ||
      rm_listen(w.loop, "127.0.0.1", 0, 0, 16, on_accept, &w, &l) != RM_OK) { CHECK(0); return; }
  port = rm_listener_port(l);
  p.cfg = ccfg;
  bad.cfg = wrong;

  CHECK_EQ(client(&w, port, &p), RM_OK);
  CHECK(p.len == 5 && memcmp(p.buf, "ping\n", 5) == 0);
  CHECK(p.info.verified && !p.info.resumed);
  CHECK(p.session_len > 0);
  CHECK_EQ(w.srv_err, 0); /* the server read the end of the stream */

  CHECK_EQ(client(&w, port, &p), RM_OK); /* p offers the session saved above */
  CHECK(p.info.resumed);

  CHECK_EQ(client(&w, port, &bad), RM_TLS_ENOTTRUSTED);
  CHECK_EQ(w.srv_err, RM_TLS_EALERT);
  CHECK_EQ(client(&w, port, &junk), 0);
  CHECK_EQ(w.srv_err, RM_TLS_EHANDSHAKE);

  p.session_len = 0; /* the listener still serves */
  CHECK_EQ(client(&w, port, &p), RM_OK);
  CHECK(p.len == 5 && !p.info.resumed);

  w.upgrade = 1; /* STARTTLS: the server reads the line and the ClientHello together */
  p.plain = 1;
  CHECK_EQ(client(&w, port, &p), RM_OK);
  CHECK(p.len == 5 && memcmp(p.buf, "ping\n", 5) == 0);
  CHECK(w.srv_preread > 0);

  rm_listener_close(l);
  for (int i = 0; i < 100 && rm_conn_count(w.loop) > 0; i++) rm_loop_run_once(w.loop, 20);
  CHECK_EQ(rm_conn_count(w.loop), 0);
  rm_loop_free(w.loop);
  rm_tls_config_unref(w.scfg);
  rm_tls_config_unref(ccfg);
  rm_tls_config_unref(wrong);
}

/* ---- interoperability with openssl, over blocking sockets ---- */

static int free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static void set_timeouts(int fd, int seconds) {
  struct timeval tv = {seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Connects to 127.0.0.1:port, retrying while the server starts (bounded). */
static int connect_retry(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (int i = 0; i < 100; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    if (fd >= 0) close(fd);
    usleep(50000);
  }
  return -1;
}

static pid_t spawn(char *const argv[], int *in, int *out) {
  int pin[2], pout[2];
  pid_t pid;
  if (pipe(pin) != 0 || pipe(pout) != 0) return -1;
  pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(pin[0], 0);
    dup2(pout[1], 1);
    dup2(null, 2);
    close(pin[1]);
    close(pout[0]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(pin[0]);
  close(pout[1]);
  *in = pin[1];
  *out = pout[0];
  return pid;
}

static void reap(pid_t pid, int in, int out) {
  close(in);
  close(out);
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
}

/* Blocking sockets on worker threads, all sharing two configs. */
typedef struct side {
  rm_tls_config *cfg;
  const char *host;
  int fd, ok;
} side;

static void *side_run(void *ud) {
  side *sd = ud;
  rm_tls_stream *s;
  rm_tls_io io;
  char buf[16];
  set_timeouts(sd->fd, 10);
  rm_tls_io_fd(&io, sd->fd);
  if (rm_tls_stream_new(sd->cfg, sd->host, &io, NULL, 0, &s) != RM_OK) return NULL;
  if (rm_tls_stream_handshake(s) == RM_OK && rm_tls_stream_write(s, "hello", 5) == 5 &&
      rm_tls_stream_read(s, buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0)
    sd->ok = 1;
  rm_tls_stream_free(s);
  return NULL;
}

static void test_threads(void) {
  enum { N = 4 };
  rm_tls_config *scfg = server_cfg(NULL, 0), *ccfg = client_cfg(self_crt, NULL, 0);
  side sides[2 * N];
  pthread_t th[2 * N];
  if (!scfg || !ccfg) { CHECK(0); return; }
  for (int i = 0; i < N; i++) {
    int fd[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fd) == 0);
    sides[2 * i] = (side){ccfg, "localhost", fd[0], 0};
    sides[2 * i + 1] = (side){scfg, NULL, fd[1], 0};
  }
  for (int i = 0; i < 2 * N; i++) pthread_create(&th[i], NULL, side_run, &sides[i]);
  for (int i = 0; i < 2 * N; i++) {
    pthread_join(th[i], NULL);
    CHECK(sides[i].ok);
    close(sides[i].fd);
  }
  rm_tls_config_unref(scfg);
  rm_tls_config_unref(ccfg);
}

static void test_openssl_server(void) {
  char port_s[16];
  int port = free_port(), in, out, fd;
  char *argv[] = {"openssl", "s_server", "-accept", port_s, "-cert", self_crt, "-key", self_key,
                  "-alpn", "http/1.1", "-www", "-naccept", "1", NULL};
  const char *alpn[] = {"http/1.1", NULL};
  rm_tls_config *ccfg = client_cfg(self_crt, alpn, 0);
  rm_tls_stream *s;
  rm_tls_io io;
  rm_tls_info info;
  static char page[65536];
  size_t got = 0;
  long r;
  pid_t pid;
  snprintf(port_s, sizeof port_s, "127.0.0.1:%d", port);
  if (!ccfg || port < 0 || (pid = spawn(argv, &in, &out)) < 0) { CHECK(0); return; }
  fd = connect_retry(port);
  CHECK(fd >= 0);
  if (fd >= 0) {
    set_timeouts(fd, 10);
    rm_tls_io_fd(&io, fd);
    CHECK_EQ(rm_tls_stream_new(ccfg, "localhost", &io, NULL, 0, &s), RM_OK);
    CHECK_EQ(rm_tls_stream_handshake(s), RM_OK); /* blocking: in one call */
    rm_tls_stream_info(s, &info);
    CHECK(info.verified && info.alpn && strcmp(info.alpn, "http/1.1") == 0);
    CHECK_EQ(rm_tls_stream_write(s, "GET / HTTP/1.0\r\n\r\n", 18), 18);
    while (got < sizeof page - 1 && (r = rm_tls_stream_read(s, page + got, sizeof page - 1 - got)) > 0)
      got += (size_t)r;
    page[got] = 0;
    CHECK(strstr(page, "200 ok") != NULL);
    CHECK(strstr(page, "ECDHE-ECDSA-AES128-GCM-SHA256") != NULL); /* openssl's name of our suite */
    rm_tls_stream_free(s);
    close(fd);
  }
  reap(pid, in, out);
  rm_tls_config_unref(ccfg);
}

static void test_openssl_client(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  const char *alpn[] = {"http/1.1", NULL};
  rm_tls_config *scfg = server_cfg(alpn, 0);
  int lfd = socket(AF_INET, SOCK_STREAM, 0), fd = -1, in, out;
  char connect_s[32], buf[256];
  char *argv[] = {"openssl", "s_client", "-connect", connect_s, "-CAfile", self_crt,
                  "-verify_return_error", "-verify_hostname", "localhost", "-servername",
                  "localhost", "-alpn", "http/1.1", "-quiet", NULL};
  struct pollfd pfd;
  rm_tls_stream *s;
  rm_tls_io io;
  rm_tls_info info;
  size_t got = 0;
  long r;
  pid_t pid;
  if (!scfg || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) { CHECK(0); return; }
  snprintf(connect_s, sizeof connect_s, "127.0.0.1:%d", ntohs(a.sin_port));
  if ((pid = spawn(argv, &in, &out)) < 0) { CHECK(0); return; }
  pfd = (struct pollfd){lfd, POLLIN, 0};
  if (poll(&pfd, 1, 10000) == 1) fd = accept(lfd, NULL, NULL);
  CHECK(fd >= 0);
  if (fd >= 0) {
    set_timeouts(fd, 10);
    rm_tls_io_fd(&io, fd);
    CHECK_EQ(rm_tls_stream_new(scfg, NULL, &io, NULL, 0, &s), RM_OK);
    CHECK_EQ(rm_tls_stream_handshake(s), RM_OK);
    rm_tls_stream_info(s, &info);
    CHECK(info.alpn && strcmp(info.alpn, "http/1.1") == 0);
    CHECK(write(in, "hello from openssl\n", 19) == 19);
    while (got < sizeof buf - 1 && !memchr(buf, '\n', got) &&
           (r = rm_tls_stream_read(s, buf + got, sizeof buf - 1 - got)) > 0)
      got += (size_t)r;
    buf[got] = 0;
    CHECK(strcmp(buf, "hello from openssl\n") == 0);
    CHECK_EQ(rm_tls_stream_write(s, "hi from remora\n", 15), 15);
    CHECK_EQ(rm_tls_stream_close(s), RM_OK);
    rm_tls_stream_free(s);
    close(fd);
    got = 0;
    pfd = (struct pollfd){out, POLLIN, 0};
    while (got < sizeof buf - 1 && poll(&pfd, 1, 10000) == 1 && (r = read(out, buf + got, sizeof buf - 1 - got)) > 0)
      got += (size_t)r;
    buf[got] = 0;
    CHECK(strstr(buf, "hi from remora") != NULL);
  }
  reap(pid, in, out);
  close(lfd);
  rm_tls_config_unref(scfg);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  signal(SIGPIPE, SIG_IGN);
  snprintf(dir, sizeof dir, "%s/remora-tls-XXXXXX", tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) return 1;
  path(self_crt, RM_TLS_SELF_CERT);
  path(self_key, RM_TLS_SELF_KEY);
  path(other_crt, "other.crt");
  path(other_key, "other.key");
  path(enc_key, "other-enc.key");
  RUN(test_selfsigned);
  if (make_other() != 0) {
    printf("FAIL setup: openssl could not make the second certificate\n");
    return 1;
  }
  RUN(test_config_errors);
  RUN(test_sign_table);
  RUN(test_stream_exchange);
  RUN(test_stream_eof);
  RUN(test_stream_write_retry);
  RUN(test_names);
  RUN(test_verify_none);
  RUN(test_alpn);
  RUN(test_resume_ticket);
  RUN(test_resume_cache);
  RUN(test_garbage_hello);
  RUN(test_stream_preread);
  RUN(test_idle_memory);
  RUN(test_spare_buffers);
  RUN(test_loop);
  RUN(test_threads);
  RUN(test_openssl_server);
  RUN(test_openssl_client);
  {
    char *rm[] = {"rm", "-rf", dir, NULL};
    run(rm);
  }
  return CHECK_DONE();
}
