/* TLS for ba.socket: the ba.create objects (sharkcert, sharkssl, certstore)
 * and the TLS side of sockets (bind/connect {shark=}, upgrade, certificate,
 * cipher, trusted, isresumed, alpn), over the tls/ layer.
 *
 * A TLS socket carries the tls/ filter on its connection, so the plain read
 * and write paths of lsocket.c move plaintext. It also carries a socket
 * extension (rm_sock_ext) for two things those paths cannot do: run the
 * handshake first, suspending the coroutine until it is over, and name a
 * failure with Barracuda's TLS strings ("sslhandshake", "sslcryptoerr", ...)
 * instead of "socketreadfailed". The extension forwards every call to the
 * plain method, swapping itself for a pass-through while the call runs so the
 * plain method does not come back here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/mman.h>
#include "remora/tls.h"
#include "lua/lsocket.h"

#define SSL_MT "ba.sharkssl"
#define CERT_MT "ba.sharkcert"
#define STORE_MT "ba.certstore"

enum {
  DEFAULT_HANDSHAKE_MS = 10000, /* a peer that stalls mid-handshake is dropped after this */
  DEFAULT_SESSIONS = 100,       /* client sessions kept per sharkssl for resumption */
  MAX_ALPN = 16,
  HOST_MAX = 256
};

/* ---- ba.create.sharkssl ---- */

/* The user value of a sharkssl is a table: ca, opts (as given), certs (the
 * sharkcerts added), derived (alpn string -> config for that ALPN list) and
 * sessions (client: "host:port" -> saved session bytes). */
typedef struct ltls_ssl {
  rm_tls_config *cfg;
  int server, used, nsessions, max_sessions;
  long hs_timeout;
} ltls_ssl;

static ltls_ssl *check_ssl(lua_State *L, int idx) { return luaL_checkudata(L, idx, SSL_MT); }

/* An ALPN list from a table of strings or a comma-separated string; the
 * strings point into buf or into the table's values (alive on the stack). */
static void read_alpn(lua_State *L, int idx, const char *list[MAX_ALPN + 1], char *buf, size_t bufsize) {
  int n = 0;
  if (lua_istable(L, idx)) {
    for (; n < MAX_ALPN && lua_rawgeti(L, idx, n + 1) == LUA_TSTRING; n++) {
      list[n] = lua_tostring(L, -1);
      lua_pop(L, 1);   /* the table keeps the string alive */
    }
    lua_pop(L, 1);
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    snprintf(buf, bufsize, "%s", lua_tostring(L, idx));
    for (char *save, *p = strtok_r(buf, ", ", &save); p && n < MAX_ALPN; p = strtok_r(NULL, ", ", &save))
      list[n++] = p;
  }
  list[n] = NULL;
}

static int opt_bool(lua_State *L, int opts, const char *name, int dflt) {
  int t = lua_getfield(L, opts, name);
  int v = t == LUA_TNIL ? dflt : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static lua_Integer opt_int(lua_State *L, int opts, const char *name, lua_Integer dflt) {
  lua_Integer v = lua_getfield(L, opts, name) == LUA_TNIL ? dflt : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* A certstore's PEM text as a file mbedTLS can open by name, without
 * touching the file system: a memfd, read through /proc. */
static int pem_file(const char *pem, size_t len, char path[64]) {
  int fd = memfd_create("remora-ca", MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (write(fd, pem, len) != (ssize_t)len) { close(fd); return -1; }
  snprintf(path, 64, "/proc/self/fd/%d", fd);
  return fd;
}

/* A new config from the sharkssl at idx (its ca and opts), with alpn (NULL:
 * the one in opts) and every certificate added so far. */
static rm_tls_config *build_config(lua_State *L, int idx, ltls_ssl *ssl, const char *alpn, int *err) {
  rm_tls_options o;
  const char *protos[MAX_ALPN + 1], *suites[33];
  char alpnbuf[256], capath[64];
  int top = lua_gettop(L), cafd = -1;
  memset(&o, 0, sizeof o);
  lua_getiuservalue(L, idx, 1);
  int uv = lua_gettop(L);
  lua_getfield(L, uv, "opts");
  int opts = lua_gettop(L);
  if (!opt_bool(L, opts, "verify", 1)) o.flags |= RM_TLS_VERIFY_NONE;
  if (!opt_bool(L, opts, "tickets", 1)) o.flags |= RM_TLS_NO_TICKETS;
  if (!opt_bool(L, opts, "cache", 1)) o.flags |= RM_TLS_NO_CACHE;
  o.cache_max = (int)opt_int(L, opts, "cachesize", 0);
  o.cache_timeout = (unsigned)opt_int(L, opts, "cachetimeout", 0);
  o.ticket_lifetime = (unsigned)opt_int(L, opts, "ticketlifetime", 0);
  if (alpn) lua_pushstring(L, alpn); else lua_getfield(L, opts, "alpn");
  read_alpn(L, lua_gettop(L), protos, alpnbuf, sizeof alpnbuf);
  if (protos[0]) o.alpn = protos;
  if (lua_getfield(L, opts, "ciphers") == LUA_TTABLE) {
    int n = 0;
    for (; n < 32 && lua_rawgeti(L, -1, n + 1) == LUA_TSTRING; n++) { suites[n] = lua_tostring(L, -1); lua_pop(L, 1); }
    lua_pop(L, 1);
    suites[n] = NULL;
    o.ciphersuites = suites;
  }
  int ca = lua_getfield(L, uv, "ca");
  if (ca == LUA_TSTRING) {
    o.ca_file = lua_tostring(L, -1);
  } else if (ca == LUA_TUSERDATA) {   /* a certstore: its PEM text is user value 1 */
    size_t len;
    lua_getiuservalue(L, -1, 1);
    const char *pem = lua_tolstring(L, -1, &len);
    if (!pem || (cafd = pem_file(pem, len, capath)) < 0) { lua_settop(L, top); *err = RM_EINVAL; return NULL; }
    o.ca_file = capath;
  }
  rm_tls_config *cfg = ssl->server ? rm_tls_server_new(&o, err) : rm_tls_client_new(&o, err);
  if (cafd >= 0) close(cafd);
  lua_getfield(L, uv, "certs");
  for (int i = 1; cfg && lua_rawgeti(L, -1, i) == LUA_TUSERDATA; i++) {
    lua_getiuservalue(L, -1, 1);
    lua_getiuservalue(L, -2, 2);
    lua_getiuservalue(L, -3, 3);
    *err = rm_tls_config_add_cert(cfg, lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pop(L, 4);
    if (*err != RM_OK) { rm_tls_config_unref(cfg); cfg = NULL; }
  }
  lua_settop(L, top);
  return cfg;
}

static const char *tls_errstr(int err) {
  const char *s = rm_tls_errstr(err);
  return s ? s : rm_errstr(err);
}

/* ba.create.sharkssl([ca,] [opts]): ca is a certstore or a PEM file path. */
static int create_sharkssl(lua_State *L) {
  if (lua_istable(L, 1)) { lua_pushnil(L); lua_insert(L, 1); }   /* sharkssl(opts) */
  if (!lua_isnoneornil(L, 1) && !lua_isstring(L, 1)) luaL_checkudata(L, 1, STORE_MT);
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  ltls_ssl *ssl = lua_newuserdatauv(L, sizeof *ssl, 1);
  memset(ssl, 0, sizeof *ssl);
  ssl->server = opt_bool(L, 2, "server", 0);
  ssl->hs_timeout = (long)opt_int(L, 2, "timeout", DEFAULT_HANDSHAKE_MS);
  ssl->max_sessions = (int)opt_int(L, 2, "sessions", DEFAULT_SESSIONS);
  luaL_argcheck(L, ssl->hs_timeout > 0, 2, "timeout must be positive");
  luaL_setmetatable(L, SSL_MT);
  lua_createtable(L, 0, 5);
  lua_pushvalue(L, 1); lua_setfield(L, -2, "ca");
  lua_pushvalue(L, 2); lua_setfield(L, -2, "opts");
  lua_newtable(L); lua_setfield(L, -2, "certs");
  lua_newtable(L); lua_setfield(L, -2, "derived");
  lua_newtable(L); lua_setfield(L, -2, "sessions");
  lua_setiuservalue(L, 3, 1);
  int err;
  ssl->cfg = build_config(L, 3, ssl, NULL, &err);
  if (!ssl->cfg) return rm_push_error(L, tls_errstr(err));
  return 1;
}

/* ssl:addcert(sharkcert): servers serve the first certificate by default and
 * choose among all of them by the client's SNI name. */
static int ssl_addcert(lua_State *L) {
  ltls_ssl *ssl = check_ssl(L, 1);
  luaL_checkudata(L, 2, CERT_MT);
  if (!ssl->server) return luaL_error(L, "addcert: client certificates are not supported");
  if (ssl->used) return rm_push_error(L, "incorrectuse");   /* add certificates before serving */
  lua_getiuservalue(L, 2, 1);
  lua_getiuservalue(L, 2, 2);
  lua_getiuservalue(L, 2, 3);
  int err = rm_tls_config_add_cert(ssl->cfg, lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
  if (err != RM_OK) return rm_push_error(L, tls_errstr(err));
  lua_getiuservalue(L, 1, 1);
  lua_getfield(L, -1, "certs");
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int ssl_gc(lua_State *L) {
  ltls_ssl *ssl = check_ssl(L, 1);
  if (ssl->cfg) rm_tls_config_unref(ssl->cfg);
  ssl->cfg = NULL;
  lua_getiuservalue(L, 1, 1);
  if (lua_getfield(L, -1, "derived") == LUA_TTABLE) {
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) rm_tls_config_unref(lua_touserdata(L, -1));
  }
  return 0;
}

/* The config of the sharkssl at idx for one connection: the sharkssl's own,
 * or, for another ALPN list, one derived from it once and kept. Marks the
 * sharkssl used (no more certificates). Raises on a wrong role. */
static rm_tls_config *ssl_config(lua_State *L, int idx, int server, const char *alpn, ltls_ssl **out) {
  idx = lua_absindex(L, idx);
  ltls_ssl *ssl = check_ssl(L, idx);
  if (ssl->server != server)
    luaL_error(L, "a %s TLS object is needed here (sharkssl{server=%s})", server ? "server" : "client",
               server ? "true" : "false");
  ssl->used = 1;
  if (out) *out = ssl;
  if (!alpn) return ssl->cfg;
  lua_getiuservalue(L, idx, 1);
  lua_getfield(L, -1, "derived");
  rm_tls_config *cfg = lua_getfield(L, -1, alpn) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  if (!cfg) {
    int err;
    if (!(cfg = build_config(L, idx, ssl, alpn, &err))) { lua_pop(L, 2); return NULL; }
    lua_pushlightuserdata(L, cfg);
    lua_setfield(L, -2, alpn);
  }
  lua_pop(L, 2);
  return cfg;
}

/* ---- ba.create.sharkcert and ba.create.certstore ---- */

/* Barracuda passes an io first; remora takes plain paths too. An io with a
 * realpath method maps names through it. Returns the index of the first name. */
static int skip_io(lua_State *L, int nnames) {
  if (lua_type(L, 1) == LUA_TSTRING) return 1;
  int indexable = lua_istable(L, 1) || (luaL_getmetafield(L, 1, "__index") != LUA_TNIL && (lua_pop(L, 1), 1));
  if (indexable && lua_getfield(L, 1, "realpath") == LUA_TFUNCTION) {
    for (int i = 2; i < 2 + nnames && lua_type(L, i) == LUA_TSTRING; i++) {
      lua_pushvalue(L, -1);
      lua_pushvalue(L, 1);
      lua_pushvalue(L, i);
      lua_call(L, 2, 1);
      if (lua_isstring(L, -1)) lua_replace(L, i); else lua_pop(L, 1);
    }
  }
  if (indexable) lua_pop(L, 1);
  return 2;
}

/* ba.create.sharkcert([io,] certfile, keyfile [, password]): checked now by
 * loading it, so a wrong file or password is reported here. */
static int create_sharkcert(lua_State *L) {
  int first = skip_io(L, 2);
  const char *cert = luaL_checkstring(L, first), *key = luaL_checkstring(L, first + 1);
  const char *pw = luaL_optstring(L, first + 2, NULL);
  int err;
  rm_tls_config *probe = rm_tls_server_new(NULL, &err);
  if (!probe) return rm_push_error(L, tls_errstr(err));
  err = rm_tls_config_add_cert(probe, cert, key, pw);
  rm_tls_config_unref(probe);
  if (err != RM_OK) return rm_push_error(L, err == RM_ENOMEM ? "malloc" : "sslcryptoerr");
  lua_newuserdatauv(L, 0, 3);
  luaL_setmetatable(L, CERT_MT);
  for (int i = 0; i < 3; i++) {
    lua_pushvalue(L, first + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  return 1;
}

static int create_certstore(lua_State *L) {
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, STORE_MT);
  lua_pushliteral(L, "");
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* store:addcert([io,] name): a PEM file of one or more CA certificates, or
 * the PEM text itself. */
static int store_addcert(lua_State *L) {
  luaL_checkudata(L, 1, STORE_MT);
  int store = lua_gettop(L);
  lua_rotate(L, 1, -1);   /* the store last: the arguments look like sharkcert's */
  int i = skip_io(L, 1);
  const char *name = luaL_checkstring(L, i);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (strstr(name, "-----BEGIN")) {
    luaL_addstring(&b, name);
  } else {
    FILE *f = fopen(name, "rb");
    if (!f) return rm_push_error(L, "cannotopen");
    size_t n;
    char *p;
    while ((n = fread(p = luaL_prepbuffer(&b), 1, LUAL_BUFFERSIZE, f)) > 0) luaL_addsize(&b, n);
    fclose(f);
  }
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  if (!strstr(lua_tostring(L, -1), "-----BEGIN CERTIFICATE-----")) return rm_push_error(L, "nocertificate");
  lua_getiuservalue(L, store, 1);
  lua_rotate(L, -2, 1);
  lua_concat(L, 2);
  lua_setiuservalue(L, store, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- TLS sockets ---- */

/* The extension state of a TLS socket (and of a TLS listener). */
typedef struct tls_sock {
  int err;                 /* the TLS failure seen when the connection closed */
  long hs_timeout;         /* ms a handshake may take */
  char host[HOST_MAX];     /* the name checked at the handshake (client) */
} tls_sock;

static tls_sock *sock_state(rm_sock *s) { return s->ext_state; }
static rm_tls_stream *sock_stream(rm_sock *s) { return s->kind == RM_SK_TCP ? rm_tls_of(s->conn) : NULL; }

/* The connection is closing: keep the stream's failure for the message. */
static void tls_close(rm_sock *s) {
  rm_tls_stream *st = sock_stream(s);
  if (st && rm_tls_stream_error(st)) sock_state(s)->err = rm_tls_stream_error(st);
}

static void tls_gc(rm_sock *s) {
  if (s->tls) rm_tls_config_unref(s->tls);
  s->tls = NULL;
  rm_loop_free_mem(s->rt->loop, s->ext_state, sizeof(tls_sock));
  s->ext_state = NULL;
}

static int tls_read(lua_State *L, rm_sock *s);
static int tls_write(lua_State *L, rm_sock *s);
static const rm_sock_ext tls_ext = {.name = "tls", .read = tls_read, .write = tls_write, .close = tls_close, .gc = tls_gc};
/* Installed while a call is forwarded to the plain method. */
static const rm_sock_ext tls_passthru = {.name = "tls", .close = tls_close, .gc = tls_gc};
/* A listener: accepted sockets get TLS from s->tls. */
static const rm_sock_ext tls_listen_ext = {.name = "tls", .gc = tls_gc};

static tls_sock *new_state(rm_sock *s, const rm_sock_ext *ext, long hs_timeout) {
  tls_sock *t = rm_loop_alloc(s->rt->loop, sizeof *t);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->hs_timeout = hs_timeout;
  s->ext = ext;
  s->ext_state = t;
  return t;
}

/* TLS on the socket's live connection; host: the client's peer name. */
static int attach(rm_sock *s, rm_tls_config *cfg, const char *host, long hs_timeout) {
  if (s->ext) return RM_EINVAL;   /* already TLS, or another protocol */
  int err = rm_tls_attach(s->conn, cfg, host, NULL, 0);
  if (err != RM_OK) return err;
  tls_sock *t = new_state(s, &tls_ext, hs_timeout);
  if (!t) return RM_ENOMEM;   /* the filter stays; the socket is closed by the caller */
  if (host) snprintf(t->host, sizeof t->host, "%s", host);
  return RM_OK;
}

/* ---- forwarding to the plain methods ---- */

static int forward_k(lua_State *L, int status, lua_KContext ctx) {
  rm_sock *s = rm_sock_check(L, 1);   /* still at 1: the results follow the arguments */
  int nargs = (int)ctx, nres = lua_gettop(L) - nargs;
  if (s->ext == &tls_passthru) s->ext = &tls_ext;
  int err = sock_state(s)->err;
  if (nres >= 2 && lua_isnil(L, nargs + 1) && err && rm_tls_errstr(err) && lua_type(L, nargs + 2) == LUA_TSTRING) {
    lua_pushstring(L, rm_tls_errstr(err));   /* "socketreadfailed" says less than "sslcryptoerr" */
    lua_replace(L, nargs + 2);
  }
  return nres;
}

/* Calls the plain method with the same arguments and returns its results. */
static int forward(lua_State *L, rm_sock *s, const char *method) {
  int nargs = lua_gettop(L);
  luaL_getmetafield(L, 1, "__index");
  lua_getfield(L, -1, method);
  lua_remove(L, -2);
  for (int i = 1; i <= nargs; i++) lua_pushvalue(L, i);
  s->ext = &tls_passthru;
  lua_callk(L, nargs, LUA_MULTRET, nargs, forward_k);
  return forward_k(L, LUA_OK, nargs);
}

/* ---- the handshake in a coroutine ---- */

/* What a finished handshake returns: the socket (connect), true (upgrade),
 * or the read it ran for. The context packs that, whether a timeout closes
 * the connection, and the deadline. */
enum { THEN_SOCKET, THEN_TRUE, THEN_READ };
enum { HS_KEEP_ON_TIMEOUT = 4 };
#define HS_CTX(then, flags, deadline) ((lua_KContext)(((deadline) << 3) | (flags) | (then)))

static void log_failure(rm_sock *s, const char *what, const char *msg) {
  char detail[256] = "", ip[64] = "?";
  int port = 0;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  rm_tls_stream *st = sock_stream(s);
  if (st) rm_tls_stream_detail(st, detail, sizeof detail);
  if (getpeername(rm_conn_fd(s->conn), (struct sockaddr *)&ss, &len) == 0)
    rm_addr_format((struct sockaddr *)&ss, ip, sizeof ip, &port);
  rm_loop_log(s->rt->loop, RM_LOG_INFO, "tls: %s with %s:%d failed: %s%s%s", what, ip, port, msg,
              detail[0] ? ": " : "", detail);
}

/* The handshake failed: the connection goes, the caller hears why. */
static int hs_fail(lua_State *L, rm_sock *s, int err) {
  char detail[256] = "";
  rm_tls_stream *st = sock_stream(s);
  const char *msg = rm_tls_errstr(err) ? rm_tls_errstr(err) : err == RM_ETIMEDOUT ? "timeout" : "sslhandshake";
  if (st) rm_tls_stream_detail(st, detail, sizeof detail);
  log_failure(s, "handshake", msg);
  rm_sock_close(s);
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, detail);
  return 3;
}

/* A client keeps its session to resume the next connection to the same
 * place. The stack is [sock, sharkssl, key] then. */
static void save_session(lua_State *L, rm_sock *s) {
  ltls_ssl *ssl = lua_touserdata(L, 2);
  unsigned char buf[4096];
  size_t len;
  if (!ssl || ssl->server || ssl->max_sessions <= 0 || lua_type(L, 3) != LUA_TSTRING) return;
  if (rm_tls_session_save(sock_stream(s), buf, sizeof buf, &len) != RM_OK) return;
  lua_getiuservalue(L, 2, 1);
  lua_getfield(L, -1, "sessions");
  if (ssl->nsessions >= ssl->max_sessions) {   /* bounded: start over rather than track ages */
    lua_newtable(L);
    lua_replace(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "sessions");
    ssl->nsessions = 0;
  }
  lua_pushvalue(L, 3);
  if (lua_rawget(L, -2) == LUA_TNIL) ssl->nsessions++;
  lua_pop(L, 1);
  lua_pushvalue(L, 3);
  lua_pushlstring(L, (const char *)buf, len);
  lua_rawset(L, -3);
  lua_pop(L, 2);
}

static void offer_session(lua_State *L, rm_sock *s) {
  ltls_ssl *ssl = lua_touserdata(L, 2);
  if (!ssl || ssl->server || lua_type(L, 3) != LUA_TSTRING) return;
  lua_getiuservalue(L, 2, 1);
  lua_getfield(L, -1, "sessions");
  lua_pushvalue(L, 3);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    size_t len;
    const char *p = lua_tolstring(L, -1, &len);
    rm_tls_session_resume(sock_stream(s), p, len);   /* a stale session just means a full handshake */
  }
  lua_pop(L, 3);
}

static int hs_k(lua_State *L, int status, lua_KContext ctx);

static int hs_step(lua_State *L, rm_sock *s, lua_KContext ctx) {
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  int rc = rm_tls_handshake(s->conn);
  if (rc == RM_EAGAIN) {
    rm_rt *rt = s->rt;
    rm_loop_update_time(rt->loop);
    long left = (long)((int64_t)(ctx >> 3) - (int64_t)rm_loop_now(rt->loop));
    return rm_sock_wait_io(L, rm_sock_waiter(L, "the TLS handshake"), s, 0, left < 0 ? 0 : left, hs_k, ctx);
  }
  if (rc != RM_OK) return hs_fail(L, s, rc);
  switch (ctx & 3) {
  case THEN_SOCKET: save_session(L, s); lua_settop(L, 1); return 1;
  case THEN_TRUE: save_session(L, s); lua_pushboolean(L, 1); return 1;
  default: return forward(L, s, "read");
  }
}

static int hs_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  rm_sock *s = rm_sock_check(L, 1);
  if (co->wake == RM_WAKE_READY) return hs_step(L, s, ctx);
  if (co->wake == RM_WAKE_TIMEOUT && (ctx & HS_KEEP_ON_TIMEOUT)) return rm_push_error(L, "timeout");
  if (co->wake == RM_WAKE_TIMEOUT) return hs_fail(L, s, RM_ETIMEDOUT);
  return rm_sock_wake_result(L, co);
}

/* Runs the handshake of the socket at index 1 in the calling coroutine. */
static int hs_start(lua_State *L, rm_sock *s, int then, int flags, long timeout) {
  rm_loop_update_time(s->rt->loop);
  lua_Integer deadline = (lua_Integer)rm_loop_now(s->rt->loop) + timeout;
  return hs_step(L, s, HS_CTX(then, flags, deadline));
}

/* A TLS socket's read runs the handshake first: its failure is reported by
 * name, and a peer that stalls is dropped after the handshake timeout (or
 * the read's own timeout, which leaves the connection open). */
static int tls_read(lua_State *L, rm_sock *s) {
  rm_tls_stream *st = sock_stream(s);
  if (!st || rm_tls_stream_established(st) || rm_tls_stream_error(st)) return forward(L, s, "read");
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  if (ms >= 0) return hs_start(L, s, THEN_READ, HS_KEEP_ON_TIMEOUT, (long)ms);
  return hs_start(L, s, THEN_READ, 0, sock_state(s)->hs_timeout);
}

/* Writes queue plaintext; the filter drives the handshake from them. */
static int tls_write(lua_State *L, rm_sock *s) { return forward(L, s, "write"); }

/* ---- the hooks lsocket.c calls ---- */

/* bind(port, {shark=server}): the listener keeps the config for accepted sockets. */
int rm__sock_tls_listen(lua_State *L, rm_sock *s, int idx) {
  ltls_ssl *ssl;
  rm_tls_config *cfg = ssl_config(L, idx, 1, NULL, &ssl);
  if (!new_state(s, &tls_listen_ext, ssl->hs_timeout)) return RM_ENOMEM;
  rm_tls_config_ref(cfg);
  s->tls = cfg;
  return RM_OK;
}

/* An accepted socket of a TLS listener: TLS goes on before anything is read. */
int rm__sock_tls_accept(rm_sock *ls, rm_sock *ns) {
  return attach(ns, ls->tls, NULL, sock_state(ls)->hs_timeout);
}

/* connect(host, port, {shark=, alpn=}) checks its options with this before
 * connecting: 1 when they ask for TLS. */
int rm__sock_tls_wanted(lua_State *L, int opts) {
  if (!lua_istable(L, opts) || lua_getfield(L, opts, "shark") == LUA_TNIL) {
    if (lua_istable(L, opts)) lua_pop(L, 1);
    return 0;
  }
  check_ssl(L, -1);
  if (lua_getfield(L, opts, "alpn") != LUA_TNIL) luaL_checkstring(L, -1);
  lua_pop(L, 2);
  return 1;
}

/* After the TCP connect of connect(host, port, opts) (stack: host, port,
 * opts, sock): TLS and its handshake, within what is left of the timeout. */
int rm__sock_tls_connect(lua_State *L, rm_sock *s, long deadline) {
  const char *host = lua_tostring(L, 1);
  lua_getfield(L, 3, "alpn");
  lua_getfield(L, 3, "shark");
  ltls_ssl *ssl;
  rm_tls_config *cfg = ssl_config(L, -1, 0, lua_tostring(L, -2), &ssl);
  int err = cfg ? attach(s, cfg, host, ssl->hs_timeout) : RM_EINVAL;
  if (err != RM_OK) { rm_sock_close(s); return rm_push_error(L, tls_errstr(err)); }
  lua_pushfstring(L, "%s:%d", host, (int)lua_tointeger(L, 2));
  lua_replace(L, 3);
  lua_replace(L, 2);
  lua_pop(L, 1);
  lua_replace(L, 1);   /* [sock, sharkssl, key] for the handshake */
  offer_session(L, s);
  rm_loop_update_time(s->rt->loop);
  return hs_step(L, s, HS_CTX(THEN_SOCKET, 0, (lua_Integer)deadline));
}

/* ---- socket methods ---- */

/* sock:upgrade(sharkssl [, alpn [, host]]): TLS on a live plain connection,
 * as a server when sharkssl is one, else as a client checking host (when
 * given). Suspends until the handshake is over: true, or nil, reason. */
static int sock_upgrade(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  ltls_ssl *ssl = check_ssl(L, 2);
  const char *alpn = luaL_optstring(L, 3, NULL), *host = luaL_optstring(L, 4, NULL);
  if (s->kind != RM_SK_TCP) return rm_push_error(L, "socketclosed");
  if (s->ext) return rm_push_error(L, "incorrectuse");
  if (!rm_loop_on_thread(s->rt->loop)) return rm_rt_delegate_co(L, sock_upgrade, lua_gettop(L));   /* a worker */
  rm_sock_waiter(L, "upgrade");
  rm_tls_config *cfg = ssl_config(L, 2, ssl->server, alpn, NULL);
  int err = cfg ? attach(s, cfg, host, ssl->hs_timeout) : RM_EINVAL;
  if (err != RM_OK) { rm_sock_close(s); return rm_push_error(L, tls_errstr(err)); }
  lua_settop(L, 2);
  if (host) {   /* the session key: where we went */
    char ip[64];
    int port = 0;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(rm_conn_fd(s->conn), (struct sockaddr *)&ss, &len) == 0)
      rm_addr_format((struct sockaddr *)&ss, ip, sizeof ip, &port);
    lua_pushfstring(L, "%s:%d", host, port);
    offer_session(L, s);
  }
  return hs_start(L, s, THEN_TRUE, 0, ssl->hs_timeout);
}

/* What the handshake settled, or nil, reason. */
static int info_of(lua_State *L, rm_sock *s, rm_tls_info *info) {
  rm_tls_stream *st = sock_stream(s);
  if (!st) return rm_push_error(L, s->kind == RM_SK_TCP ? "sslnotenabled" : "socketclosed");
  if (rm_tls_stream_info(st, info) != RM_OK) return rm_push_error(L, "sslhandshake");
  return 0;
}

#define TLS_INFO(L, s, info) \
  rm_tls_info info; \
  int nerr_ = info_of(L, s, &info); \
  if (nerr_) return nerr_

/* sock:certificate(): the peer's certificate as a table, or nil when it sent none. */
static int sock_certificate(lua_State *L) {
  TLS_INFO(L, rm_sock_check(L, 1), info);
  if (!info.has_peer_cert) return 0;
  lua_createtable(L, 0, 7);
  lua_pushstring(L, info.subject); lua_setfield(L, -2, "subject");
  lua_pushstring(L, info.issuer); lua_setfield(L, -2, "issuer");
  lua_pushstring(L, info.not_before); lua_setfield(L, -2, "notbefore");
  lua_pushstring(L, info.not_after); lua_setfield(L, -2, "notafter");
  lua_pushstring(L, info.fingerprint); lua_setfield(L, -2, "sha256");
  lua_pushboolean(L, info.verified); lua_setfield(L, -2, "trusted");
  lua_pushstring(L, info.verify_reason); lua_setfield(L, -2, "reason");
  return 1;
}

/* sock:cipher(): the suite, and the protocol version. */
static int sock_cipher(lua_State *L) {
  TLS_INFO(L, rm_sock_check(L, 1), info);
  lua_pushstring(L, info.cipher);
  lua_pushstring(L, info.version);
  return 2;
}

/* sock:alpn(): the protocol agreed by ALPN, or nil. */
static int sock_alpn(lua_State *L) {
  TLS_INFO(L, rm_sock_check(L, 1), info);
  if (!info.alpn) return 0;
  lua_pushstring(L, info.alpn);
  return 1;
}

static int sock_isresumed(lua_State *L) {
  TLS_INFO(L, rm_sock_check(L, 1), info);
  lua_pushboolean(L, info.resumed);
  return 1;
}

/* Does a certificate subject's CN name host (one-label wildcards)? */
static int cn_names(const char *subject, const char *host) {
  const char *cn = strstr(subject, "CN=");
  if (!cn) return 0;
  cn += 3;
  size_t len = strcspn(cn, ",");
  if (len > 2 && cn[0] == '*' && cn[1] == '.') {
    const char *dot = strchr(host, '.');
    return dot && dot != host && strlen(dot + 1) == len - 2 && strncasecmp(dot + 1, cn + 2, len - 2) == 0;
  }
  return strlen(host) == len && strncasecmp(host, cn, len) == 0;
}

/* sock:trusted([host]): was the peer's chain verified against the trusted
 * CAs, and (with host) does the certificate name host? Without host, the
 * name given when connecting counts. */
static int sock_trusted(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  const char *host = luaL_optstring(L, 2, NULL);
  TLS_INFO(L, s, info);
  static const char name_only[] = "The certificate Common Name (CN) does not match with the expected CN";
  int chain = info.verified || (info.has_peer_cert && strcmp(info.verify_reason, name_only) == 0);
  int named = !host || strcasecmp(host, sock_state(s)->host) == 0 ? info.verified : chain && cn_names(info.subject, host);
  lua_pushboolean(L, named);
  return 1;
}

/* ---- registration ---- */

static const luaL_Reg tls_methods[] = {
  {"upgrade", sock_upgrade}, {"certificate", sock_certificate}, {"cipher", sock_cipher},
  {"alpn", sock_alpn}, {"isresumed", sock_isresumed}, {"trusted", sock_trusted}, {NULL, NULL}
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  if (gc) { lua_pushcfunction(L, gc); lua_setfield(L, -2, "__gc"); }
  lua_pop(L, 1);
}

/* ba.create, and the TLS methods added to the socket's (after rm_open_socket). */
int rm_open_tls(lua_State *L) {
  static const luaL_Reg ssl_methods[] = {{"addcert", ssl_addcert}, {NULL, NULL}};
  static const luaL_Reg store_methods[] = {{"addcert", store_addcert}, {NULL, NULL}};
  static const luaL_Reg none[] = {{NULL, NULL}};
  static const luaL_Reg create[] = {
    {"sharkssl", create_sharkssl}, {"sharkcert", create_sharkcert}, {"certstore", create_certstore}, {NULL, NULL}
  };
  new_class(L, SSL_MT, ssl_methods, ssl_gc);
  new_class(L, CERT_MT, none, NULL);
  new_class(L, STORE_MT, store_methods, NULL);
  luaL_getmetatable(L, RM_SOCKET_MT);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, tls_methods, 0);
  lua_pop(L, 2);
  luaL_newlib(L, create);
  return 1;
}
