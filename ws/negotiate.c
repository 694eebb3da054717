/* ws/negotiate.c: the permessage-deflate offer and response (RFC 7692
 * section 7.1), carried in Sec-WebSocket-Extensions:
 *
 *   extension-list = 1#( token *( OWS ";" OWS token [ "=" (token / quoted-string) ] ) )
 *
 * A server declines an offer it cannot parse or does not like and tries the
 * next; a client fails the connection on any response it did not ask for.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "ws/internal.h"

/* One element of the list, as far as permessage-deflate cares. */
typedef struct element {
  int is_deflate; /* the extension is permessage-deflate */
  int valid;      /* well-formed, and every parameter known and legal */
  int snct, cnct; /* server_/client_no_context_takeover present */
  int smwb;       /* server_max_window_bits: 0 absent */
  int cmwb;       /* client_max_window_bits: 0 absent, -1 present without value */
} element;

static const char *skip_ws(const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

static size_t token_len(const char *s)
{
  size_t n = 0;
  while (s[n] && (strchr("!#$%&'*+-.^_`|~", s[n]) ||
                  (s[n] >= '0' && s[n] <= '9') || ((s[n] | 0x20) >= 'a' && (s[n] | 0x20) <= 'z')))
    n++;
  return n;
}

/* A token or quoted-string value. Keeps the first size - 1 characters in val
 * and their full count in *vlen; NULL on a syntax error. */
static const char *read_value(const char *s, char *val, size_t size, size_t *vlen)
{
  size_t n = 0;
  if (*s != '"') {
    n = token_len(s);
    memcpy(val, s, n < size ? n : size - 1);
    *vlen = n;
    return n ? s + n : NULL;
  }
  for (s++; *s != '"'; s++) {
    if (*s == '\\')
      s++;
    if (*s == '\0')
      return NULL;
    if (n < size - 1)
      val[n] = *s;
    n++;
  }
  *vlen = n;
  return s + 1;
}

/* "8" to "15", no sign, no leading zero; 0 otherwise. */
static int window_bits(const char *v, size_t n)
{
  if (n == 1 && (v[0] == '8' || v[0] == '9'))
    return v[0] - '0';
  if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + v[1] - '0';
  return 0;
}

static int is(const char *name, size_t len, const char *want)
{
  return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

/* val is NULL for a parameter without a value. Duplicates are invalid. */
static void set_param(element *e, const char *name, size_t len, const char *val, size_t vlen)
{
  int ok;
  if (is(name, len, "server_no_context_takeover")) {
    ok = !e->snct && !val;
    e->snct = 1;
  } else if (is(name, len, "client_no_context_takeover")) {
    ok = !e->cnct && !val;
    e->cnct = 1;
  } else if (is(name, len, "server_max_window_bits")) {
    ok = !e->smwb && val && window_bits(val, vlen);
    e->smwb = val ? window_bits(val, vlen) : 0;
  } else if (is(name, len, "client_max_window_bits")) {
    ok = !e->cmwb && (!val || window_bits(val, vlen));
    e->cmwb = val ? window_bits(val, vlen) : -1;
  } else {
    ok = 0;
  }
  if (!ok)
    e->valid = 0;
}

/* Skips a malformed element up to the next comma outside quotes. */
static const char *skip_bad(const char *s, element *e)
{
  int quoted = 0;
  e->valid = 0;
  for (; *s && (quoted || *s != ','); s++) {
    if (*s == '"')
      quoted = !quoted;
    else if (*s == '\\' && quoted && s[1])
      s++;
  }
  return *s ? s + 1 : s;
}

/* Parses the next element at *s; 0 at the end of the list. */
static int next_element(const char **sp, element *e)
{
  const char *s = skip_ws(*sp);
  size_t n;
  while (*s == ',')
    s = skip_ws(s + 1);
  if (*s == '\0')
    return 0;
  memset(e, 0, sizeof *e);
  e->valid = 1;
  n = token_len(s);
  e->is_deflate = is(s, n, "permessage-deflate");
  s = skip_ws(s + n);
  while (n && *s == ';') {
    char val[4] = {0};
    size_t vlen = 0;
    const char *name = skip_ws(s + 1), *has_val = NULL;
    n = token_len(name);
    s = skip_ws(name + n);
    if (n && *s == '=') {
      s = read_value(skip_ws(s + 1), val, sizeof val, &vlen);
      if (!s)
        break;
      has_val = val;
      s = skip_ws(s);
    }
    set_param(e, name, n, has_val, vlen);
  }
  if (n && s && (*s == ',' || *s == '\0'))
    *sp = *s ? s + 1 : s;
  else
    *sp = skip_bad(s ? s : *sp, e);
  return 1;
}

static int bits(int b)
{
  return b >= 8 && b <= 15 ? b : 15;
}

static int min(int a, int b)
{
  return a < b ? a : b;
}

/* Appends to out; RM_EINVAL once it no longer fits. */
static int append(char *out, size_t size, size_t *len, const char *fmt, ...)
{
  va_list ap;
  int n;
  if (*len >= size)
    return RM_EINVAL;
  va_start(ap, fmt);
  n = vsnprintf(out + *len, size - *len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= size - *len)
    return RM_EINVAL;
  *len += (size_t)n;
  return RM_OK;
}

int rm_ws_deflate_accept(const char *offers, const rm_ws_deflate_params *want,
                         rm_ws_deflate_params *agreed, char *out, size_t size)
{
  rm_ws_deflate_params w = {0}, a;
  element e;
  size_t len = 0;
  int err;
  if (want)
    w = *want;
  while (offers && next_element(&offers, &e)) {
    if (!e.is_deflate || !e.valid)
      continue;
    a.server_no_context_takeover = e.snct || w.server_no_context_takeover;
    a.client_no_context_takeover = e.cnct || w.client_no_context_takeover;
    a.server_max_window_bits = min(bits(e.smwb), bits(w.server_max_window_bits));
    /* The client's window may only be limited if it said it can be. */
    a.client_max_window_bits = e.cmwb ? min(bits(e.cmwb), bits(w.client_max_window_bits)) : 15;
    err = append(out, size, &len, "permessage-deflate");
    if (!err && a.server_no_context_takeover)
      err = append(out, size, &len, "; server_no_context_takeover");
    if (!err && a.client_no_context_takeover)
      err = append(out, size, &len, "; client_no_context_takeover");
    if (!err && (e.smwb || a.server_max_window_bits < 15))
      err = append(out, size, &len, "; server_max_window_bits=%d", a.server_max_window_bits);
    if (!err && a.client_max_window_bits < 15)
      err = append(out, size, &len, "; client_max_window_bits=%d", a.client_max_window_bits);
    if (err)
      return err;
    *agreed = a;
    return 1;
  }
  return 0;
}

int rm_ws_deflate_offer(const rm_ws_deflate_params *want, char *out, size_t size)
{
  rm_ws_deflate_params w = {0};
  size_t len = 0;
  int err;
  if (want)
    w = *want;
  err = append(out, size, &len, "permessage-deflate");
  if (!err && w.server_no_context_takeover)
    err = append(out, size, &len, "; server_no_context_takeover");
  if (!err && w.client_no_context_takeover)
    err = append(out, size, &len, "; client_no_context_takeover");
  if (!err && bits(w.server_max_window_bits) < 15)
    err = append(out, size, &len, "; server_max_window_bits=%d", w.server_max_window_bits);
  /* Always say we can limit our window: servers short of memory need it. */
  if (!err && bits(w.client_max_window_bits) < 15)
    err = append(out, size, &len, "; client_max_window_bits=%d", w.client_max_window_bits);
  else if (!err)
    err = append(out, size, &len, "; client_max_window_bits");
  return err;
}

int rm_ws_deflate_confirm(const char *response, const rm_ws_deflate_params *offered,
                          rm_ws_deflate_params *agreed)
{
  rm_ws_deflate_params w = {0};
  element e, got;
  int n = 0;
  if (offered)
    w = *offered;
  while (response && next_element(&response, &e)) {
    if (!e.is_deflate || !e.valid || n++)
      return RM_WS_EPROTOCOL; /* not offered, malformed, or twice */
    got = e;
  }
  if (n == 0)
    return 0;
  if (got.cmwb < 0 || got.smwb > bits(w.server_max_window_bits) ||
      got.cmwb > bits(w.client_max_window_bits))
    return RM_WS_EPROTOCOL;
  agreed->server_no_context_takeover = got.snct;
  /* Having offered to reset our compressor, we do, asked or not. */
  agreed->client_no_context_takeover = got.cnct || w.client_no_context_takeover;
  agreed->server_max_window_bits = bits(got.smwb);
  agreed->client_max_window_bits = got.cmwb ? got.cmwb : bits(w.client_max_window_bits);
  return 1;
}
