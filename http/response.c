/* http/response.c: what a server writes: status lines and fields into the
 * caller's buffer, chunk-size lines, and HTTP dates. */
#include <stdio.h>
#include <string.h>
#include "http/fields.h"

typedef struct reason {
  int status;
  const char *text;
} reason;

static const reason reasons[] = {
  {100, "Continue"}, {101, "Switching Protocols"},
  {200, "OK"}, {201, "Created"}, {202, "Accepted"}, {204, "No Content"},
  {206, "Partial Content"},
  {301, "Moved Permanently"}, {302, "Found"}, {303, "See Other"}, {304, "Not Modified"},
  {307, "Temporary Redirect"}, {308, "Permanent Redirect"},
  {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"},
  {405, "Method Not Allowed"}, {406, "Not Acceptable"}, {408, "Request Timeout"},
  {409, "Conflict"}, {410, "Gone"}, {411, "Length Required"}, {412, "Precondition Failed"},
  {413, "Content Too Large"}, {414, "URI Too Long"}, {415, "Unsupported Media Type"},
  {416, "Range Not Satisfiable"}, {417, "Expectation Failed"}, {426, "Upgrade Required"},
  {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
  {500, "Internal Server Error"}, {501, "Not Implemented"}, {502, "Bad Gateway"},
  {503, "Service Unavailable"}, {504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"},
};

const char *rm_http_reason(int status) {
  size_t i;
  for (i = 0; i < sizeof reasons / sizeof *reasons; i++)
    if (reasons[i].status == status) return reasons[i].text;
  return "Unknown";
}

/* ---- the head writer ---- */

static void put(rm_http_head *w, const char *s, size_t n) {
  if (w->err) return;
  if (n > w->cap - w->len) {
    w->err = RM_EFULL;
    return;
  }
  memcpy(w->buf + w->len, s, n);
  w->len += n;
}

static void puts_(rm_http_head *w, const char *s) {
  put(w, s, strlen(s));
}

/* n in decimal (base 10) or hex (16) at the end of out[20]: its first byte.
 * Heads are written on every request: snprintf was a tenth of a small page's cost. */
static char *format_u64(char out[20], uint64_t n, unsigned base) {
  char *p = out + 20;
  do {
    *--p = "0123456789abcdef"[n % base];
    n /= base;
  } while (n);
  return p;
}

/* The status line with straight copies (a head is written per request):
 * the status has three digits, checked. */
void rm_http_head_begin(rm_http_head *w, char *buf, size_t cap, int status, const char *why) {
  w->buf = buf;
  w->cap = cap;
  w->len = 0;
  w->err = RM_OK;
  if (status < 100 || status > 999 || (why && strpbrk(why, "\r\n"))) {
    w->err = RM_EINVAL;
    return;
  }
  if (!why) why = rm_http_reason(status);
  size_t n = strlen(why);
  if (n + 15 > cap) {
    w->err = RM_EFULL;
    return;
  }
  memcpy(buf, "HTTP/1.1 ", 9);
  buf[9] = (char)('0' + status / 100);
  buf[10] = (char)('0' + status / 10 % 10);
  buf[11] = (char)('0' + status % 10);
  buf[12] = ' ';
  memcpy(buf + 13, why, n);
  memcpy(buf + 13 + n, "\r\n", 2);
  w->len = n + 15;
}

/* One bound check and straight copies: a head is written per request. */
void rm_http_head_add(rm_http_head *w, const char *name, const char *value, size_t value_len) {
  size_t nl = 0;
  if (w->err) return;
  while (rm__http_is_tchar((unsigned char)name[nl])) nl++;   /* the NUL is no tchar */
  if (name[nl] || nl == 0 || rm__http_value_span(value, value_len) != value_len) {
    w->err = RM_EINVAL;
    return;
  }
  if (nl + value_len + 4 > w->cap - w->len) {
    w->err = RM_EFULL;
    return;
  }
  char *p = w->buf + w->len;
  memcpy(p, name, nl);
  p += nl;
  *p++ = ':';
  *p++ = ' ';
  memcpy(p, value, value_len);
  p += value_len;
  *p++ = '\r';
  *p++ = '\n';
  w->len = (size_t)(p - w->buf);
}

void rm_http_head_add_lines(rm_http_head *w, const char *lines, size_t n) { put(w, lines, n); }

long rm_http_head_end(rm_http_head *w, int framing, uint64_t length) {
  if (framing == RM_HTTP_FRAME_LENGTH) {   /* the field and the blank line in one put */
    char line[40], digits[20], *p = format_u64(digits, length, 10);
    size_t n = (size_t)(digits + 20 - p);
    memcpy(line, "Content-Length: ", 16);
    memcpy(line + 16, p, n);
    memcpy(line + 16 + n, "\r\n\r\n", 4);
    put(w, line, n + 20);
    return w->err ? w->err : (long)w->len;
  }
  if (framing == RM_HTTP_FRAME_CHUNKED) puts_(w, "Transfer-Encoding: chunked\r\n");
  else if (framing != RM_HTTP_FRAME_NONE && !w->err) w->err = RM_EINVAL;
  put(w, "\r\n", 2);
  return w->err ? w->err : (long)w->len;
}

size_t rm_http_chunk_header(char out[RM_HTTP_CHUNK_HEADER_MAX], uint64_t n) {
  char digits[20], *p = format_u64(digits, n, 16);
  size_t len = (size_t)(digits + 20 - p);
  memcpy(out, p, len);
  memcpy(out + len, "\r\n", 3);   /* 16 hex digits at most: fits with its NUL */
  return len + 2;
}

/* ---- dates ---- */

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int rm_http_date_format(time_t t, char out[RM_HTTP_DATE_LEN + 1]) {
  struct tm tm;
  char text[80]; /* the year check makes it exactly RM_HTTP_DATE_LEN */
  if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) return RM_EINVAL;
  snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday],
           tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  memcpy(out, text, RM_HTTP_DATE_LEN + 1);
  return RM_OK;
}

const char *rm_http_date_cached(rm_http_date_cache *c, time_t now) {
  if (c->text[0] == '\0' || c->sec != now) {
    if (rm_http_date_format(now, c->text) < 0) return NULL;
    c->sec = now;
  }
  return c->text;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
  int64_t era, yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int digits(const char *s, int n) {
  int v = 0, i;
  for (i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static int find_name(const char (*names)[4], int n, const char *s) {
  int i;
  for (i = 0; i < n; i++)
    if (memcmp(names[i], s, 3) == 0) return i;
  return -1;
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" */
int rm_http_date_parse(const char *s, size_t len, time_t *out) {
  static const char mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int wday, day, mon, year, hh, mm, ss;
  int64_t days;
  if (len != RM_HTTP_DATE_LEN || memcmp(s + 3, ", ", 2) != 0 || s[7] != ' ' || s[11] != ' ' ||
      s[16] != ' ' || s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0)
    return RM_HTTP_EBAD;
  wday = find_name(day_names, 7, s);
  mon = find_name(month_names, 12, s + 8);
  day = digits(s + 5, 2);
  year = digits(s + 12, 4);
  hh = digits(s + 17, 2);
  mm = digits(s + 20, 2);
  ss = digits(s + 23, 2);
  if (wday < 0 || mon < 0 || day < 1 || day > mdays[mon] || year < 0 || hh < 0 || hh > 23 ||
      mm < 0 || mm > 59 || ss < 0 || ss > 60)
    return RM_HTTP_EBAD;
  days = days_from_civil(year, mon + 1, day);
  *out = (time_t)(days * 86400 + hh * 3600 + mm * 60 + ss);
  return RM_OK;
}
