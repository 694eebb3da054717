/* ws/handshake.c: the opening handshake's keys and subprotocols (RFC 6455
 * section 4). The HTTP layer parses the request and response; these take the
 * header values. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include "ws/internal.h"

#define GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int rm__ws_random(void *buf, size_t n)
{
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t k = getrandom(p, n, 0);
    if (k < 0) {
      if (errno == EINTR)
        continue;
      return RM_EIO;
    }
    p += k;
    n -= (size_t)k;
  }
  return RM_OK;
}

/* Header values arrive with optional whitespace already trimmed by a careful
 * HTTP parser, but a lenient one may leave some: strip it here. */
static void trim(const char **s, size_t *len)
{
  const char *p = *s, *e = p + strlen(p);
  while (p < e && (*p == ' ' || *p == '\t'))
    p++;
  while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  *s = p;
  *len = (size_t)(e - p);
}

int rm_ws_accept_key(const char *key, char out[RM_WS_ACCEPT_LEN + 1])
{
  unsigned char raw[18], digest[20], buf[sizeof GUID - 1 + RM_WS_KEY_LEN];
  size_t len, n;
  trim(&key, &len);
  if (len != RM_WS_KEY_LEN ||
      mbedtls_base64_decode(raw, sizeof raw, &n, (const unsigned char *)key, len) != 0 || n != 16)
    return RM_EINVAL;
  memcpy(buf, key, len);
  memcpy(buf + len, GUID, sizeof GUID - 1);
  if (mbedtls_sha1_ret(buf, sizeof buf, digest) != 0 ||
      mbedtls_base64_encode((unsigned char *)out, RM_WS_ACCEPT_LEN + 1, &n, digest, sizeof digest) != 0)
    return RM_EINVAL;
  return RM_OK;
}

int rm_ws_client_key(char out[RM_WS_KEY_LEN + 1])
{
  unsigned char raw[16];
  size_t n;
  int err = rm__ws_random(raw, sizeof raw);
  if (err < 0)
    return err;
  if (mbedtls_base64_encode((unsigned char *)out, RM_WS_KEY_LEN + 1, &n, raw, sizeof raw) != 0)
    return RM_EINVAL;
  return RM_OK;
}

int rm_ws_check_accept(const char *key, const char *accept)
{
  char want[RM_WS_ACCEPT_LEN + 1];
  size_t len;
  if (!accept || rm_ws_accept_key(key, want) < 0)
    return RM_WS_EPROTOCOL;
  trim(&accept, &len);
  if (len != RM_WS_ACCEPT_LEN || memcmp(accept, want, len) != 0)
    return RM_WS_EPROTOCOL;
  return RM_OK;
}

/* The next comma-separated item of *s, trimmed; 0 at the end of the list. */
static int next_item(const char **s, const char **item, size_t *len)
{
  const char *p = *s, *e;
  while (*p == ' ' || *p == '\t' || *p == ',')
    p++;
  if (*p == '\0')
    return 0;
  e = p;
  while (*e && *e != ',')
    e++;
  *s = e;
  while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  *item = p;
  *len = (size_t)(e - p);
  return 1;
}

static int list_has(const char *list, const char *name, size_t len)
{
  const char *item;
  size_t n;
  while (next_item(&list, &item, &n))
    if (n == len && memcmp(item, name, len) == 0)
      return 1;
  return 0;
}

int rm_ws_select_protocol(const char *offered, const char *supported,
                          const char **name, size_t *len)
{
  const char *item;
  size_t n;
  if (!offered || !supported)
    return 0;
  while (next_item(&supported, &item, &n))
    if (list_has(offered, item, n)) {
      *name = item;
      *len = n;
      return 1;
    }
  return 0;
}
