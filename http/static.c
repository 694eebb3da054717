/* http/static.c: files from the document root.
 *
 * A URL path (already decoded and normalised, so it cannot climb) is joined
 * to the root and resolved with realpath(), which follows symlinks: a file
 * whose real path leaves the root, or passes through a dot segment, is
 * refused. A small file travels with its head in one write (one TLS record,
 * one segment). Larger files go out with sendfile(2) when the connection has
 * no filter; under TLS the bytes must pass through the filter, so they are
 * read and queued in slices, as the queue drains. Compression: a precompressed ".gz"
 * sibling when there is one, else deflate on the fly for text-like types up
 * to gzip_max bytes, whenever the client accepts gzip and asked for no range:
 * a small file at once, a larger one a few slices per loop turn as the
 * connection takes it, in chunks, so compressing never holds the dispatcher
 * for more than about a millisecond (nginx's gzip filter works the same way).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/sendfile.h>
#include <zlib.h>
#include "http/server.h"

enum {
  SLICE = 64 * 1024,            /* read-and-queue step under a filter */
  FILTER_QUEUE = 256 * 1024,    /* how much of a file a filtered connection holds queued */
  SENDFILE_STEP = 1024 * 1024,  /* one sendfile call at most, so other connections get turns */
  GZIP_MIN = 256,               /* smaller files do not gain from compression */
  GZIP_WHOLE = 32 * 1024,       /* compressed at once up to this; larger ones stream */
  GZIP_SLICE = 16 * 1024,       /* a streamed file is read and deflated this much at a time ... */
  GZIP_TURN = 4,                /* ... and this many slices per loop turn */
  /* Sent with the head: a head is at most 2 KiB, so both fit one TLS record
   * (16 KiB of plaintext) and the file costs one record to seal, not two. */
  SMALL_BODY = 14 * 1024
};

/* The real path of root + path, checked to stay inside the root: 0 or a status. */
static int resolve(rm_http_server *s, const char *path, char real[PATH_MAX]) {
  char joined[RM__HTTP_PATH_MAX * 2];
  int n = snprintf(joined, sizeof joined, "%.*s%s", (int)s->root_len, s->root, path);
  if (n < 0 || (size_t)n >= sizeof joined) return 414;
  if (!realpath(joined, real)) return errno == ENOENT || errno == ENOTDIR ? 404 : 403;
  size_t rl = s->root_len;
  if (strncmp(real, s->root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
    rm_loop_log(s->loop, RM_LOG_WARN, "http: %s leads outside the document root: refused", path);
    return 403;
  }
  if (strstr(real + rl, "/.")) return 404;   /* a link to a hidden file is hidden too */
  return 0;
}

static size_t hash_path(const char *p) {
  size_t h = 5381;
  for (; *p; p++) h = h * 33 + (unsigned char)*p;
  return h % RM__HTTP_MAP_SLOTS;
}

static void map_drop(rm_http_server *s, rm__http_mapped *m) {
  if (!m) return;
  rm_loop_free_mem(s->loop, m, sizeof *m + m->size);
}

/* Remembers path -> real in the slot of path (replacing what was there). */
static void map_store(rm_http_server *s, size_t slot, const char *path, const char *real) {
  size_t pl = strlen(path) + 1, rl = strlen(real) + 1;
  rm__http_mapped *m = rm_loop_alloc(s->loop, sizeof *m + pl + rl);
  map_drop(s, s->map[slot]);
  s->map[slot] = m;
  if (!m) return;   /* no memory: simply not cached */
  m->size = pl + rl;
  m->checked = rm_loop_now(s->loop);
  m->path = m->text;
  m->real = m->text + pl;
  memcpy(m->path, path, pl);
  memcpy(m->real, real, rl);
}

/* realpath() costs a readlink per path component on every request, so a
 * URL's real path is remembered and resolved again once it is older than
 * RM__HTTP_MAP_MS (a moved symlink is seen that late; the old target was
 * inside the root). The stat is fresh on every call: a changed or deleted
 * file is seen at once. */
int rm__http_map(rm_http_server *s, const char *path, char *out, size_t cap, struct stat *st) {
  char real[PATH_MAX];
  size_t slot = hash_path(path);
  rm__http_mapped *m = s->map[slot];
  uint64_t now = rm_loop_now(s->loop);
  if (m && strcmp(m->path, path) == 0 && now - m->checked < RM__HTTP_MAP_MS && stat(m->real, st) == 0) {
    if (strlen(m->real) + 1 > cap) return 414;
    strcpy(out, m->real);
    return 0;
  }
  int status = resolve(s, path, real);
  if (status) return status;
  if (stat(real, st) != 0) return 404;
  if (strlen(real) + 1 > cap) return 414;
  strcpy(out, real);
  map_store(s, slot, path, real);
  return 0;
}

void rm__http_map_free(rm_http_server *s) {
  for (size_t i = 0; i < RM__HTTP_MAP_SLOTS; i++) {
    map_drop(s, s->map[i]);
    s->map[i] = NULL;
  }
}

static int compressible(const char *type) {
  return strncmp(type, "text/", 5) == 0 || strstr(type, "javascript") || strstr(type, "json") ||
         strstr(type, "xml") || strstr(type, "svg");
}

static int accepts_gzip(rm_http_exchange *x) {
  const rm_http_header *h = rm__http_field(x, "Accept-Encoding");
  return h && rm_http_has_token(h->value, h->value_len, "gzip");
}

/* The whole file, gzip-compressed, in memory the caller frees; NULL on failure. */
static char *gzip_file(int fd, size_t size, size_t *outlen) {
  char *in = malloc(size ? size : 1), *out = NULL;
  z_stream z;
  memset(&z, 0, sizeof z);
  if (!in || pread(fd, in, size, 0) != (ssize_t)size) goto fail;
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) goto fail;
  size_t cap = deflateBound(&z, size) + 32;
  if (!(out = malloc(cap))) { deflateEnd(&z); goto fail; }
  z.next_in = (Bytef *)in;
  z.avail_in = (uInt)size;
  z.next_out = (Bytef *)out;
  z.avail_out = (uInt)cap;
  int rc = deflate(&z, Z_FINISH);
  *outlen = z.total_out;
  deflateEnd(&z);
  free(in);
  if (rc != Z_STREAM_END) { free(out); return NULL; }
  return out;
fail:
  free(in);
  free(out);
  return NULL;
}

static int gzip_begin(rm_http_exchange *x) {
  z_stream *z = calloc(1, sizeof *z);
  if (!z || deflateInit2(z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    free(z);
    return -1;
  }
  x->gz = z;
  return 0;
}

/* A few slices of the file through deflate into chunks: 1 when the last
 * chunk is queued, 0 to come back, -1 on failure. */
static int send_gzip(rm_http_exchange *x) {
  char in[GZIP_SLICE], out[GZIP_SLICE];
  z_stream *z = x->gz;
  for (int k = 0; k < GZIP_TURN && rm_conn_queued(x->conn) < FILTER_QUEUE; k++) {
    size_t step = x->end - x->off < GZIP_SLICE ? (size_t)(x->end - x->off) : GZIP_SLICE;
    ssize_t r = step ? pread(x->fd, in, step, (off_t)x->off) : 0;
    if (r != (ssize_t)step) return -1;   /* the file shrank */
    x->off += step;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)step;
    int rc;
    do {
      z->next_out = (Bytef *)out;
      z->avail_out = sizeof out;
      rc = deflate(z, x->off == x->end ? Z_FINISH : Z_NO_FLUSH);
      size_t have = sizeof out - z->avail_out;
      if (have && rm_http_x_write(x, out, have) != RM_OK) return -1;
    } while (z->avail_out == 0);
    if (rc == Z_STREAM_END)
      return rm_conn_write(x->conn, RM_HTTP_LAST_CHUNK, sizeof RM_HTTP_LAST_CHUNK - 1) == RM_OK ? 1 : -1;
  }
  return 0;
}

/* Streams the file compressed, in chunks: 0, or -1 when it cannot. */
static int send_gzip_stream(rm_http_exchange *x, const rm_http_header *f, size_t n, uint64_t size) {
  if (!x->is_head && gzip_begin(x) != 0) return -1;
  x->state = RM__ST_FILE;
  x->off = 0;
  x->end = x->is_head ? 0 : size;
  if (rm__http_send_head(x, 200, f, n, RM_HTTP_FRAME_CHUNKED, 0, NULL, 0) != RM_OK) x->must_close = 1;
  rm__http_static_more(x);   /* a head that failed fails the first chunk too */
  return 0;
}

void rm__http_static_end(rm_http_exchange *x) {
  if (x->fd >= 0) close(x->fd);
  x->fd = -1;
  if (x->gz) {
    deflateEnd(x->gz);
    free(x->gz);
    x->gz = NULL;
  }
}

/* A ".gz" sibling at least as new as the file: its fd, or -1. */
static int gz_sibling(rm_http_exchange *x, const struct stat *st, struct stat *gst) {
  char gz[RM__HTTP_PATH_MAX + 4];
  snprintf(gz, sizeof gz, "%s.gz", x->file);
  if (stat(gz, gst) != 0 || !S_ISREG(gst->st_mode) || gst->st_mtime < st->st_mtime) return -1;
  return open(gz, O_RDONLY | O_CLOEXEC);
}

/* 304 when the client's copy is current. */
static int not_modified(rm_http_exchange *x, const char *etag, size_t elen, time_t mtime) {
  const rm_http_header *inm = rm__http_field(x, "If-None-Match");
  if (inm) return rm_http_etag_match(inm->value, inm->value_len, etag, elen);
  const rm_http_header *ims = rm__http_field(x, "If-Modified-Since");
  return ims && rm_http_not_modified(ims->value, ims->value_len, mtime);
}

/* The whole answer in one write: the head and [off, end) of the file. */
static void send_small(rm_http_exchange *x, int status, const rm_http_header *f, size_t n) {
  char body[SMALL_BODY];
  size_t len = (size_t)(x->end - x->off);
  if (len && pread(x->fd, body, len, (off_t)x->off) != (ssize_t)len) {   /* it shrank since the stat */
    rm_loop_log(x->srv->loop, RM_LOG_WARN, "http: %s could not be read whole", x->file);
    rm__http_simple(x, 500, NULL, 0, "<html><body><h1>500 Internal Server Error</h1></body></html>\n");
    return;
  }
  rm__http_send_head(x, status, f, n, RM_HTTP_FRAME_LENGTH, len, body, len);
  rm__http_done(x);
}

void rm__http_static(rm_http_exchange *x, const struct stat *st) {
  char etag[48], lm[RM_HTTP_DATE_LEN + 1], range[80];
  const char *type = rm_http_mime_type(x->file, strlen(x->file));
  long elen = rm_http_etag(etag, sizeof etag, (uint64_t)st->st_size, (int64_t)st->st_mtime);
  rm_http_date_format(st->st_mtime, lm);
  rm_http_header f[8];
  size_t n = 0;
  f[n++] = (rm_http_header){"Last-Modified", 13, lm, RM_HTTP_DATE_LEN};
  f[n++] = (rm_http_header){"ETag", 4, etag, (size_t)elen};
  int zip = compressible(type);
  if (zip) f[n++] = (rm_http_header){"Vary", 4, "Accept-Encoding", 15};
  if (not_modified(x, etag, (size_t)elen, st->st_mtime)) { rm__http_simple(x, 304, f, n, NULL); return; }
  f[n++] = (rm_http_header){"Content-Type", 12, type, strlen(type)};
  f[n++] = (rm_http_header){"Accept-Ranges", 13, "bytes", 5};

  const rm_http_header *rh = rm__http_field(x, "Range");
  uint64_t size = (uint64_t)st->st_size, first = 0, last = size ? size - 1 : 0;
  int ranged = rh ? rm_http_range(rh->value, rh->value_len, size, &first, &last) : 0;
  if (ranged == RM_HTTP_ERANGE) {
    int k = snprintf(range, sizeof range, "bytes */%llu", (unsigned long long)size);
    f[n++] = (rm_http_header){"Content-Range", 13, range, (size_t)k};
    rm__http_simple(x, 416, f, n, "<html><body><h1>416 Range Not Satisfiable</h1></body></html>\n");
    return;
  }
  struct stat gst;
  int gz = ranged || !zip || !accepts_gzip(x) ? -1 : gz_sibling(x, st, &gst);
  x->fd = gz >= 0 ? gz : open(x->file, O_RDONLY | O_CLOEXEC);
  if (x->fd < 0) { rm__http_simple(x, 403, NULL, 0, "<html><body><h1>403 Forbidden</h1></body></html>\n"); return; }
  if (gz >= 0 || (zip && !ranged && !x->srv->cfg.no_gzip && accepts_gzip(x) && size >= GZIP_MIN &&
                  size <= x->srv->cfg.gzip_max)) {
    f[n++] = (rm_http_header){"Content-Encoding", 16, "gzip", 4};
    if (gz >= 0) {
      size = (uint64_t)gst.st_size;
      last = size - 1;
    } else if (size > GZIP_WHOLE) {
      if (rm_http_parser_request(x->parser)->minor == 1 && send_gzip_stream(x, f, n, size) == 0) return;
      n--;   /* HTTP/1.0 has no chunks (or no memory): send it as it is */
    } else {
      size_t zlen;
      char *z = gzip_file(x->fd, (size_t)size, &zlen);
      if (z) {
        rm__http_send_head(x, 200, f, n, RM_HTTP_FRAME_LENGTH, zlen, z, zlen);
        free(z);
        rm__http_done(x);
        return;
      }
      n--;   /* could not compress: send it as it is */
    }
  }
  int status = 200;
  if (ranged == 1) {
    int k = snprintf(range, sizeof range, "bytes %llu-%llu/%llu", (unsigned long long)first,
                     (unsigned long long)last, (unsigned long long)size);
    f[n++] = (rm_http_header){"Content-Range", 13, range, (size_t)k};
    status = 206;
  }
  x->off = first;
  x->end = size ? last + 1 : 0;
  if (!x->is_head && x->end - x->off <= SMALL_BODY) { send_small(x, status, f, n); return; }
  x->state = RM__ST_FILE;
  if (rm__http_send_head(x, status, f, n, RM_HTTP_FRAME_LENGTH, x->end - x->off, NULL, 0) != RM_OK ||
      x->is_head)
    x->off = x->end;
  x->sent = x->is_head ? 0 : x->end - x->off;
  rm__http_static_more(x);
}

/* Plain TCP: the kernel copies the file; the queue (the head) goes first. */
static int send_plain(rm_http_exchange *x) {
  int sock = rm_conn_fd(x->conn);
  while (x->off < x->end) {
    if (rm_conn_queued(x->conn) > 0) return 0;
    off_t o = (off_t)x->off;
    size_t step = x->end - x->off < SENDFILE_STEP ? (size_t)(x->end - x->off) : SENDFILE_STEP;
    ssize_t w = sendfile(sock, x->fd, &o, step);
    if (w > 0) { x->off = (uint64_t)o; continue; }
    if (w < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;   /* the peer went away, or the file shrank */
  }
  return 1;
}

/* Under a filter: read slices into the queue while it is short. */
static int send_filtered(rm_http_exchange *x) {
  char buf[SLICE];
  while (x->off < x->end && rm_conn_queued(x->conn) < FILTER_QUEUE) {
    size_t step = x->end - x->off < SLICE ? (size_t)(x->end - x->off) : SLICE;
    ssize_t r = pread(x->fd, buf, step, (off_t)x->off);
    if (r <= 0 || rm_conn_write(x->conn, buf, (size_t)r) != RM_OK) return -1;
    x->off += (uint64_t)r;
  }
  return x->off == x->end;
}

void rm__http_static_more(rm_http_exchange *x) {
  int filtered = rm_conn_filter_state(x->conn) != NULL;
  int rc = x->gz ? send_gzip(x) : filtered ? send_filtered(x) : send_plain(x);
  if (rc == 0) {   /* on_writable brings us back: readiness, or the queue's drain */
    rm_conn_want_write(x->conn, !filtered || x->gz != NULL);
    return;
  }
  rm_conn_want_write(x->conn, 0);
  if (rc < 0) x->must_close = 1;
  rm__http_done(x);
}
