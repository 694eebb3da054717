/* cert.c: certificate helpers: host names, IP addresses, fingerprints, and the
 * self-signed certificate a server can use out of the box. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp */
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>
#include "tls/tls_impl.h"

/* "*.example.com" matches exactly one label in front of ".example.com". */
static int name_match(const char *pat, size_t plen, const char *host, size_t hlen) {
  if (plen > 2 && pat[0] == '*' && pat[1] == '.') {
    const char *dot = memchr(host, '.', hlen);
    if (!dot || dot == host) return 0;
    hlen -= (size_t)(dot - host);
    host = dot;
    pat++;
    plen--;
  }
  return plen == hlen && strncasecmp(pat, host, plen) == 0;
}

int rm__tls_cert_names(const mbedtls_x509_crt *crt, const char *host, size_t len) {
  const mbedtls_x509_sequence *san;
  const mbedtls_x509_name *n;
  int has_dns = 0;
  for (san = &crt->subject_alt_names; san && san->buf.p; san = san->next) {
    if (san->buf.tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME)) continue;
    has_dns = 1;
    if (name_match((const char *)san->buf.p, san->buf.len, host, len)) return 1;
  }
  if (has_dns) return 0; /* RFC 6125: the CN counts only without dNSName entries */
  for (n = &crt->subject; n; n = n->next) {
    if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0 &&
        name_match((const char *)n->val.p, n->val.len, host, len))
      return 1;
  }
  return 0;
}

/* Looks through the GeneralNames of one subjectAltName value for iPAddress. */
static int general_names_have_ip(unsigned char *p, const unsigned char *end,
                                 const unsigned char *ip, size_t iplen) {
  size_t len;
  if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return 0;
  end = p + len;
  while (p < end) {
    int tag = *p++;
    if (mbedtls_asn1_get_len(&p, end, &len) != 0) return 0;
    if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && len == iplen && memcmp(p, ip, iplen) == 0) return 1;
    p += len;
  }
  return 0;
}

/* mbedTLS 2.28 keeps only dNSName entries of the SAN, so IP addresses are
 * read from the raw extensions. */
int rm__tls_cert_has_ip(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t iplen) {
  unsigned char *p = crt->v3_ext.p;
  const unsigned char *end = p + crt->v3_ext.len;
  size_t len;
  if (!p || mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0)
    return 0;
  end = p + len;
  while (p < end) {
    const unsigned char *ext_end;
    mbedtls_x509_buf oid;
    int critical;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0) return 0;
    ext_end = p + len;
    if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID) != 0) return 0;
    oid.p = p;
    p += oid.len;
    (void)mbedtls_asn1_get_bool(&p, ext_end, &critical); /* optional */
    if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0) return 0;
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0)
      return general_names_have_ip(p, p + len, ip, iplen);
    p = (unsigned char *)ext_end;
  }
  return 0;
}

void rm__tls_fingerprint(const mbedtls_x509_crt *crt, char out[65]) {
  unsigned char md[32];
  mbedtls_sha256_ret(crt->raw.p, crt->raw.len, md, 0);
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- The self-signed certificate ---- */

enum { VALID_DAYS = 3650, PEM_MAX = 4096 };

/* The subjectAltName value: SEQUENCE { dNSName "localhost", iPAddress 127.0.0.1 }.
 * mbedTLS 2.28 has no writer for it; ASN.1 is written back to front. */
static int san_der(unsigned char *buf, size_t size, unsigned char **start) {
  static const unsigned char ip[4] = {127, 0, 0, 1};
  static const char dns[] = "localhost";
  unsigned char *p = buf + size;
  size_t len = 0, n;
  int ret;
  if ((ret = mbedtls_asn1_write_raw_buffer(&p, buf, ip, sizeof ip)) < 0) return ret;
  n = (size_t)ret;
  if ((ret = mbedtls_asn1_write_len(&p, buf, n)) < 0) return ret;
  n += (size_t)ret;
  if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)) < 0) return ret;
  len += n + (size_t)ret;
  if ((ret = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)dns, sizeof dns - 1)) < 0) return ret;
  n = (size_t)ret;
  if ((ret = mbedtls_asn1_write_len(&p, buf, n)) < 0) return ret;
  n += (size_t)ret;
  if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME)) < 0)
    return ret;
  len += n + (size_t)ret;
  if ((ret = mbedtls_asn1_write_len(&p, buf, len)) < 0) return ret;
  len += (size_t)ret;
  if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0) return ret;
  *start = p;
  return (int)(len + (size_t)ret);
}

static void x509_date(time_t t, char out[15]) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 15, "%Y%m%d%H%M%S", &tm);
}

/* Fills key and cert with a fresh P-256 key and its self-signed certificate, as PEM. */
static int make_pair(mbedtls_ctr_drbg_context *drbg, unsigned char *key_pem, unsigned char *crt_pem) {
  mbedtls_pk_context key;
  mbedtls_x509write_cert crt;
  mbedtls_mpi serial;
  unsigned char san[64], *sanp;
  char from[15], to[15];
  time_t now = time(NULL);
  int ret, san_len;
  mbedtls_pk_init(&key);
  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi_init(&serial);
  x509_date(now - 86400, from); /* a day of slack for clocks behind ours */
  x509_date(now + (time_t)VALID_DAYS * 86400, to);
  if ((ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
      (ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                 mbedtls_ctr_drbg_random, drbg)) != 0 ||
      (ret = mbedtls_pk_write_key_pem(&key, key_pem, PEM_MAX)) != 0 ||
      (ret = mbedtls_mpi_fill_random(&serial, 16, mbedtls_ctr_drbg_random, drbg)) != 0)
    goto done;
  mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&crt, &key);
  mbedtls_x509write_crt_set_issuer_key(&crt, &key);
  if ((ret = mbedtls_x509write_crt_set_subject_name(&crt, "CN=localhost")) != 0 ||
      (ret = mbedtls_x509write_crt_set_issuer_name(&crt, "CN=localhost")) != 0 ||
      (ret = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
      (ret = mbedtls_x509write_crt_set_validity(&crt, from, to)) != 0 ||
      (ret = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
      (ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
      (ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0 ||
      (ret = san_len = san_der(san, sizeof san, &sanp)) < 0 ||
      (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                 MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                                                 sanp, (size_t)san_len)) != 0)
    goto done;
  ret = mbedtls_x509write_crt_pem(&crt, crt_pem, PEM_MAX, mbedtls_ctr_drbg_random, drbg);
done:
  mbedtls_mpi_free(&serial);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_pk_free(&key);
  return ret == 0 ? RM_OK : RM_EIO;
}

/* Writes a whole file under a temporary name, then renames it into place, so
 * readers see either nothing or all of it. */
static int write_atomic(const char *dir, const char *name, const unsigned char *data, mode_t mode) {
  char tmp[PATH_MAX], path[PATH_MAX];
  size_t len = strlen((const char *)data), off = 0;
  int fd, ok;
  if (snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name) >= (int)sizeof tmp ||
      snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
    return RM_EINVAL;
  fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 from the start */
  if (fd < 0) return RM_EIO;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  ok = off == len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return RM_EIO;
  }
  return RM_OK;
}

static int create_pair(const char *dir) {
  static const char pers[] = "remora-selfsigned";
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  unsigned char key[PEM_MAX], crt[PEM_MAX];
  int ret = RM_EIO;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                            (const unsigned char *)pers, sizeof pers - 1) == 0 &&
      (ret = make_pair(&drbg, key, crt)) == RM_OK &&
      (ret = write_atomic(dir, RM_TLS_SELF_KEY, key, 0600)) == RM_OK)
    ret = write_atomic(dir, RM_TLS_SELF_CERT, crt, 0644); /* last: it marks a complete pair */
  mbedtls_platform_zeroize(key, sizeof key);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  return ret;
}

int rm_tls_selfsigned(const char *dir, char fp[65]) {
  char path[PATH_MAX];
  mbedtls_x509_crt crt;
  int lock, ret = RM_OK;
  if (!dir || snprintf(path, sizeof path, "%s/%s", dir, RM_TLS_SELF_CERT) >= (int)sizeof path)
    return RM_EINVAL;
  /* The directory itself is the lock: two processes starting at once must
   * not end up with the key of one and the certificate of the other. */
  lock = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock < 0) return RM_EIO;
  if (flock(lock, LOCK_EX) != 0) ret = RM_EIO;
  else if (access(path, F_OK) != 0) ret = create_pair(dir);
  close(lock);
  if (ret != RM_OK) return ret;
  mbedtls_x509_crt_init(&crt);
  if (mbedtls_x509_crt_parse_file(&crt, path) != 0) ret = RM_EINVAL;
  else if (fp) rm__tls_fingerprint(&crt, fp);
  mbedtls_x509_crt_free(&crt);
  return ret;
}
