/* remora: the command line.
 *
 *   remora SCRIPT.lua [ARGS...]      runs a Lua script on the dispatcher
 *   remora [OPTIONS] -l ADDR DIR...  serves directory apps over HTTP(S)
 *   remora [OPTIONS] -c CONFIG.lua   the same, described in a Lua file
 *
 * Either way it runs until nothing is left to do, or until SIGINT/SIGTERM,
 * when every suspended coroutine is resumed with nil, "sysshutdown", apps
 * hear onunload(), and the process ends cleanly.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lualib.h>
#include "remora/lua.h"
#include "screen/screen.h"
#include "remora/tls.h"
#include "lua/lhttp.h"

enum { SHUTDOWN_GRACE_MS = 1000, MAX_APPS = 16, MAX_LISTENERS = 32 };

static int signal_pipe[2] = {-1, -1};   /* the handler's only way to reach the loop */

static void on_signal(int sig) {
  char c = (char)sig;
  ssize_t r = write(signal_pipe[1], &c, 1);
  (void)r;
}

typedef struct listener_spec {
  char host[256];
  int port, tls, app;
} listener_spec;

/* Everything the command line (or the config file) asked for. */
typedef struct options {
  const char *apps[MAX_APPS];
  int napps;
  listener_spec lst[MAX_LISTENERS];
  int nlst;
  rm_http_server_config http;   /* template for every server */
  const char *access_log, *cert, *key, *state, *config;
  int dev, threads, pool;
} options;

typedef struct runner {
  rm_loop *loop;
  rm_lua *lua;
  int signals;
  rm_app *apps[MAX_APPS];
  rm_http_server *servers[MAX_LISTENERS];
  rm_tls_config *tls;
  lua_State *config;   /* the config file's state: its strings live as long */
} runner;

static void grace_over(rm_timer *t, void *ud) { rm_loop_stop(ud); }

static void on_signal_pipe(rm_loop *loop, int fd, int events, void *ud) {
  runner *a = ud;
  char c;
  while (read(fd, &c, 1) > 0) a->signals++;
  if (a->signals > 1) { fprintf(stderr, "remora: second signal, exiting now\n"); _exit(1); }
  rm_loop_log(loop, RM_LOG_INFO, "signal %d: shutting down", c);
  /* Every waiting coroutine hears "sysshutdown" and runs to its end now;
   * then main() closes the state, which closes the sockets. */
  rm_lua_lock(a->lua);
  rm_lua_shutdown(a->lua);
  rm_lua_unlock(a->lua);
  rm_loop_stop(loop);
}

static void usage(FILE *f) {
  fprintf(f,
    "usage: remora SCRIPT.lua [ARGS...]\n"
    "       remora [OPTIONS] -l ADDR:PORT DIR [-l ADDR:PORT DIR ...]\n"
    "       remora [OPTIONS] -c CONFIG.lua\n"
    "\n"
    "The first form runs SCRIPT with Barracuda's ba.* API until no socket, timer\n"
    "or coroutine is left. The others serve directory apps: static files, Lua\n"
    "Server Pages (.lsp), the app's .preload (run once at start) and .lua/ modules.\n"
    "All run until SIGINT/SIGTERM.\n"
    "\n"
    "  -l, --listen ADDR:PORT DIR  serve DIR on ADDR:PORT (\"8080\" means 127.0.0.1:8080)\n"
    "  --tls-listen ADDR:PORT      serve the app of the last -l over HTTPS as well\n"
    "  --cert FILE --key FILE      the HTTPS certificate chain and key (PEM); without\n"
    "                              them a self-signed ECDSA P-256 pair is made once in\n"
    "                              the state directory and its SHA-256 printed\n"
    "  --state DIR                 state directory (default $REMORA_STATE or ./.remora-state)\n"
    "  -c, --config FILE           read the setup from a Lua file (see docs/lua-api.md)\n"
    "  --dev                       development mode: Lua tracebacks in 500 answers\n"
    "  --access-log FILE           Common Log Format lines to FILE (\"-\": standard output)\n"
    "  --max-conns N               open connections per listener (default 1024; more: 503)\n"
    "  --max-body BYTES            request body limit (default 8 MiB; more: 413)\n"
    "  --max-upload BYTES          a body a page streams with rawrdr() (default 1 GiB)\n"
    "  --max-head BYTES            header section limit (default 16 KiB; more: 431)\n"
    "  --max-uri BYTES             request line limit (default 8 KiB; more: 414)\n"
    "  --header-timeout MS         time to send a request head (default 10000)\n"
    "  --idle-timeout MS           keep-alive wait for the next request (default 15000)\n"
    "  --body-timeout MS           silence allowed while a body arrives (default 30000)\n"
    "  --no-gzip                   never compress files on the fly\n"
    "  --gzip-max BYTES            compress files up to this size on the fly (default 8 MiB)\n"
    "  --threads N                 worker threads for ba.thread (default: per CPU)\n"
    "  --pages-on-pool             run pages on the worker pool instead of the dispatcher\n"
    "  -h, --help                  this text\n"
    "Environment: REMORA_BACKEND=epoll|poll, REMORA_STATE=DIR.\n");
}

/* "host:port", "[v6]:port" or "port". */
static int parse_addr(const char *s, listener_spec *l) {
  const char *colon = strrchr(s, ':');
  const char *host = "127.0.0.1";
  size_t hl = strlen(host);
  if (colon) {
    host = s;
    hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { host++; hl -= 2; }
    s = colon + 1;
  }
  char *end;
  long port = strtol(s, &end, 10);
  if (*s == '\0' || *end || port < 0 || port > 65535 || hl >= sizeof l->host) return -1;
  memcpy(l->host, host, hl);
  l->host[hl] = '\0';
  l->port = (int)port;
  return 0;
}

static int add_listener(options *o, const char *addr, int tls, int app) {
  if (o->nlst == MAX_LISTENERS) { fprintf(stderr, "remora: too many listeners\n"); return -1; }
  listener_spec *l = &o->lst[o->nlst];
  if (parse_addr(addr, l) != 0) { fprintf(stderr, "remora: bad address '%s' (want HOST:PORT)\n", addr); return -1; }
  l->tls = tls;
  l->app = app;
  o->nlst++;
  return 0;
}

static int add_app(options *o, const char *dir) {
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) { fprintf(stderr, "remora: %s is not a directory\n", dir); return -1; }
  if (o->napps == MAX_APPS) { fprintf(stderr, "remora: too many apps\n"); return -1; }
  o->apps[o->napps] = dir;
  return o->napps++;
}

/* ---- the config file ---- */

static lua_Integer cfg_int(lua_State *L, int t, const char *name, lua_Integer dflt) {
  lua_getfield(L, t, name);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static const char *cfg_str(lua_State *L, int t, const char *name, const char *dflt) {
  lua_getfield(L, t, name);
  const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : dflt;
  lua_pop(L, 1);   /* the string stays referenced by the table */
  return v;
}

/* listen = "addr" or {"addr", ...} in an app entry. */
static int cfg_listen(lua_State *L, options *o, int t, const char *field, int tls, int app) {
  lua_getfield(L, t, field);
  int rc = 0;
  if (lua_type(L, -1) == LUA_TSTRING) rc = add_listener(o, lua_tostring(L, -1), tls, app);
  else if (lua_istable(L, -1))
    for (lua_Integer i = 1; rc == 0 && lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
      rc = add_listener(o, lua_tostring(L, -1), tls, app);
      lua_pop(L, 1);
    }
  lua_settop(L, t);
  return rc;
}

static int read_config(runner *r, options *o, const char *file) {
  lua_State *L = r->config = luaL_newstate();
  luaL_openlibs(L);
  lua_newtable(L);   /* the file's globals */
  int g = lua_gettop(L);
  if (luaL_loadfile(L, file) != LUA_OK) { fprintf(stderr, "remora: %s\n", lua_tostring(L, -1)); return -1; }
  lua_pushvalue(L, g);
  lua_setupvalue(L, -2, 1);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) { fprintf(stderr, "remora: %s\n", lua_tostring(L, -1)); return -1; }
  lua_getfield(L, g, "dev");
  o->dev = o->dev || lua_toboolean(L, -1);
  lua_settop(L, g);
  o->threads = (int)cfg_int(L, g, "threads", o->threads);
  o->access_log = cfg_str(L, g, "access_log", o->access_log);
  o->state = cfg_str(L, g, "state", o->state);
  o->cert = cfg_str(L, g, "cert", o->cert);
  o->key = cfg_str(L, g, "key", o->key);
  lua_getfield(L, g, "pages_on_pool");
  o->pool = o->pool || lua_toboolean(L, -1);
  lua_settop(L, g);
  if (lua_getfield(L, g, "limits") == LUA_TTABLE) {
    int t = lua_gettop(L);
    rm_http_server_config *h = &o->http;
    h->max_conns = (int)cfg_int(L, t, "max_conns", h->max_conns);
    h->limits.max_body = (uint64_t)cfg_int(L, t, "max_body", (lua_Integer)h->limits.max_body);
    h->max_upload = (uint64_t)cfg_int(L, t, "max_upload", (lua_Integer)h->max_upload);
    h->limits.max_head = (size_t)cfg_int(L, t, "max_head", (lua_Integer)h->limits.max_head);
    h->limits.max_headers = (size_t)cfg_int(L, t, "max_headers", (lua_Integer)h->limits.max_headers);
    h->limits.max_request_line = (size_t)cfg_int(L, t, "max_uri", (lua_Integer)h->limits.max_request_line);
    h->header_timeout_ms = (unsigned)cfg_int(L, t, "header_timeout", h->header_timeout_ms);
    h->idle_timeout_ms = (unsigned)cfg_int(L, t, "idle_timeout", h->idle_timeout_ms);
    h->body_timeout_ms = (unsigned)cfg_int(L, t, "body_timeout", h->body_timeout_ms);
  }
  lua_settop(L, g);
  if (lua_getfield(L, g, "apps") != LUA_TTABLE) { fprintf(stderr, "remora: %s: no apps = {...}\n", file); return -1; }
  int apps = lua_gettop(L);
  for (lua_Integer i = 1; lua_rawgeti(L, apps, i) == LUA_TTABLE; i++) {
    int t = lua_gettop(L);
    const char *dir = cfg_str(L, t, "dir", NULL);
    int app = dir ? add_app(o, dir) : -1;
    if (app < 0 || cfg_listen(L, o, t, "listen", 0, app) || cfg_listen(L, o, t, "tls_listen", 1, app)) {
      if (!dir) fprintf(stderr, "remora: %s: app %d has no dir\n", file, (int)i);
      return -1;
    }
    lua_settop(L, apps);
  }
  lua_settop(L, g);
  return 0;
}

/* ---- the command line ---- */

static int parse_args(runner *r, options *o, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED(n) do { if (i + (n) >= argc) { fprintf(stderr, "remora: %s needs a value\n", a); return -1; } } while (0)
    if (!strcmp(a, "-l") || !strcmp(a, "--listen")) {
      NEED(2);
      int app = add_app(o, argv[i + 2]);
      if (app < 0 || add_listener(o, v, 0, app) != 0) return -1;
      i += 2;
    } else if (!strcmp(a, "--tls-listen")) {
      NEED(1);
      if (o->napps == 0) { fprintf(stderr, "remora: --tls-listen follows an -l ADDR DIR\n"); return -1; }
      if (add_listener(o, v, 1, o->napps - 1) != 0) return -1;
      i++;
    } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
      NEED(1);
      if (read_config(r, o, v) != 0) return -1;
      i++;
    } else if (!strcmp(a, "--dev")) {
      o->dev = 1;
    } else if (!strcmp(a, "--gzip-max")) { NEED(1); o->http.gzip_max = strtoull(argv[++i], NULL, 10);
    } else if (!strcmp(a, "--no-gzip")) {
      o->http.no_gzip = 1;
    } else if (!strcmp(a, "--pages-on-pool")) {
      o->pool = 1;
    } else if (!strcmp(a, "--cert")) { NEED(1); o->cert = argv[++i];
    } else if (!strcmp(a, "--key")) { NEED(1); o->key = argv[++i];
    } else if (!strcmp(a, "--state")) { NEED(1); o->state = argv[++i];
    } else if (!strcmp(a, "--access-log")) { NEED(1); o->access_log = argv[++i];
    } else if (!strcmp(a, "--threads")) { NEED(1); o->threads = atoi(argv[++i]);
    } else if (!strcmp(a, "--max-conns")) { NEED(1); o->http.max_conns = atoi(argv[++i]);
    } else if (!strcmp(a, "--max-upload")) { NEED(1); o->http.max_upload = strtoull(argv[++i], NULL, 10);
    } else if (!strcmp(a, "--max-body")) { NEED(1); o->http.limits.max_body = strtoull(argv[++i], NULL, 10);
    } else if (!strcmp(a, "--max-head")) { NEED(1); o->http.limits.max_head = strtoul(argv[++i], NULL, 10);
    } else if (!strcmp(a, "--max-uri")) { NEED(1); o->http.limits.max_request_line = strtoul(argv[++i], NULL, 10);
    } else if (!strcmp(a, "--header-timeout")) { NEED(1); o->http.header_timeout_ms = (unsigned)atoi(argv[++i]);
    } else if (!strcmp(a, "--idle-timeout")) { NEED(1); o->http.idle_timeout_ms = (unsigned)atoi(argv[++i]);
    } else if (!strcmp(a, "--body-timeout")) { NEED(1); o->http.body_timeout_ms = (unsigned)atoi(argv[++i]);
    } else {
      fprintf(stderr, "remora: unknown option '%s' (try --help)\n", a);
      return -1;
    }
#undef NEED
  }
  if (o->nlst == 0) { fprintf(stderr, "remora: nothing to serve (try --help)\n"); return -1; }
  return 0;
}

/* ---- start and stop ---- */

static int tls_accept(rm_conn *c, void *ud) { return rm_tls_attach(c, ud, NULL, NULL, 0); }

static int make_tls(runner *r, options *o) {
  static const char *const alpn[] = {"http/1.1", NULL};
  rm_tls_options topt = {.alpn = alpn};
  int err;
  if (!(r->tls = rm_tls_server_new(&topt, &err))) { fprintf(stderr, "remora: TLS: %s\n", rm_strerror(err)); return -1; }
  char cert[4096], key[4096];
  if (!o->cert) {
    const char *dir = o->state ? o->state : getenv("REMORA_STATE") ? getenv("REMORA_STATE") : ".remora-state";
    char fp[65];
    mkdir(dir, 0700);
    if ((err = rm_tls_selfsigned(dir, fp)) != RM_OK) {
      fprintf(stderr, "remora: cannot create a self-signed certificate in %s: %s\n", dir, rm_strerror(err));
      return -1;
    }
    snprintf(cert, sizeof cert, "%s/%s", dir, RM_TLS_SELF_CERT);
    snprintf(key, sizeof key, "%s/%s", dir, RM_TLS_SELF_KEY);
    fprintf(stderr, "remora: self-signed certificate %s, SHA-256 %s\n", cert, fp);
    o->cert = cert;
    o->key = key;
  }
  err = rm_tls_config_add_cert(r->tls, o->cert, o->key ? o->key : o->cert, NULL);
  if (err != RM_OK) { fprintf(stderr, "remora: certificate %s: %s\n", o->cert, rm_strerror(err)); return -1; }
  return 0;
}

static int start_servers(runner *r, options *o) {
  FILE *log = NULL;
  if (o->access_log) {
    log = strcmp(o->access_log, "-") == 0 ? stdout : fopen(o->access_log, "a");
    if (!log) { fprintf(stderr, "remora: cannot open %s\n", o->access_log); return -1; }
  }
  for (int i = 0; i < o->nlst; i++)
    if (o->lst[i].tls && !r->tls && make_tls(r, o) != 0) return -1;
  rm_lua_lock(r->lua);
  rm_rt *rt = (rm_rt *)r->lua;
  for (int i = 0; i < o->napps; i++)
    if (!(r->apps[i] = rm_app_new(rt, o->apps[i], o->dev, o->pool))) { rm_lua_unlock(r->lua); return -1; }
  rm_lua_unlock(r->lua);
  for (int i = 0; i < o->nlst; i++) {
    listener_spec *l = &o->lst[i];
    rm_http_server_config c = o->http;
    c.root = o->apps[l->app];
    c.page_ext = ".lsp";
    c.access_log = log;
    c.handler = o->pool ? &rm_lhttp_pool_handler : &rm_lhttp_handler;
    c.handler_ud = r->apps[l->app];
    if (l->tls) { c.secure = 1; c.on_accept = tls_accept; c.accept_ud = r->tls; }
    int rc = rm_http_server_new(r->loop, l->host, l->port, &c, &r->servers[i]);
    if (rc != RM_OK) {
      fprintf(stderr, "remora: cannot listen on %s:%d: %s\n", l->host, l->port, rm_strerror(rc));
      return -1;
    }
    rm_lua_lock(r->lua);
    rm_lhttp_set_default_server(rt, r->servers[i]);
    rm_lua_unlock(r->lua);
    fprintf(stderr, "remora: serving %s on %s://%s:%d/\n", c.root, l->tls ? "https" : "http", l->host,
            rm_http_server_port(r->servers[i]));
  }
  return 0;
}

static void stop_servers(runner *r) {
  for (int i = 0; i < MAX_LISTENERS; i++)
    if (r->servers[i]) rm_http_server_free(r->servers[i]);
  rm_lua_lock(r->lua);
  /* Pages on the pool may still be running: they end (and their answers'
   * ends run on the loop) before the apps they belong to go. */
  rm_thread_shutdown((rm_rt *)r->lua);
  for (int i = 0; i < MAX_APPS; i++)
    if (r->apps[i]) rm_app_free(r->apps[i]);
  rm_lua_unlock(r->lua);
}

static void install_signals(runner *a) {
  if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return;
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  rm_loop_watch(a->loop, signal_pipe[0], RM_READ, on_signal_pipe, a);
}

static int is_script(int argc, char **argv) {
  size_t n = strlen(argv[1]);
  return argv[1][0] != '-' && !(n > 0 && argv[1][n - 1] == '/');
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  runner r = {0};
  options o = {.threads = -1};
  int script = is_script(argc, argv);
  if (!script && parse_args(&r, &o, argc, argv) != 0) return 2;
  r.loop = rm_loop_new(NULL);
  if (!r.loop) { fprintf(stderr, "remora: cannot create the event loop (REMORA_BACKEND?)\n"); return 1; }
  rm_lua_config lc = {.threads = o.threads, .dev = o.dev};
  r.lua = rm_lua_new(r.loop, &lc);
  if (!r.lua) { fprintf(stderr, "remora: cannot create the Lua state\n"); return 1; }
  rm_lua_preload(r.lua, "screen", luaopen_screen);   /* require "screen" (examples/screenshare) */
  install_signals(&r);
  int rc;
  if (script) {
    rm_lua_lock(r.lua);
    rc = rm_lua_run_file(r.lua, argv[1], argc - 2, argv + 2);
    rm_lua_unlock(r.lua);
  } else {
    rc = start_servers(&r, &o);
  }
  if (rc == 0) rm_loop_run(r.loop);
  stop_servers(&r);
  rm_lua_lock(r.lua);
  rm_lua_free(r.lua);
  if (r.config) lua_close(r.config);
  if (r.tls) rm_tls_config_unref(r.tls);
  /* Closed sockets may still be delivering what they were given. */
  rm_loop_unwatch(r.loop, signal_pipe[0]);
  rm_timer *t = rm_timer_new(r.loop, grace_over, r.loop);
  rm_timer_unref(t);
  rm_timer_start(t, SHUTDOWN_GRACE_MS, 0);
  rm_loop_run(r.loop);
  rm_timer_free(t);
  rm_loop_free(r.loop);
  return rc == 0 ? 0 : 1;
}
