/* lua/lhttp.h: the HTTP layer's Lua side, shared by its files: pages
 * (lhttp.c: request/response objects and the page runner), the LSP compiler
 * (lsp.c), directory apps (lapp.c) and the runner (main.c). */
#ifndef REMORA_LUA_LHTTP_H
#define REMORA_LUA_LHTTP_H

#include "remora/server.h"
#include "lua/rt.h"

/* What the HTTP layer keeps per runtime (in the registry). in_lua counts
 * calls into the server made from Lua: a page the server starts meanwhile
 * (the next pipelined request) is deferred to the loop, not nested. */
typedef struct rm_lhttp {
  int in_lua;
  rm_http_server *default_server;
  char *spare_buf;   /* a finished page's answer buffer, for the next page */
} rm_lhttp;
rm_lhttp *rm_lhttp_get(lua_State *L);

/* A directory application: its environment, and how its pages run. */
typedef struct rm_app {
  rm_rt *rt;
  rm_lhttp *h;
  char *dir;
  int env;            /* registry reference of the app's environment table */
  int envmt;          /* ... and of {__index = env}, the metatable of page environments */
  int dev;            /* development mode: tracebacks in 500 bodies */
  int pool;           /* pages run on the worker pool instead of the dispatcher */
  size_t max_queue;   /* a page writing past this many queued bytes waits */
  struct rm_app *next;
} rm_app;

/* Creates the app for dir (its environment, its `require` for .lua/) and runs
 * its .preload. NULL on failure (logged). */
rm_app *rm_app_new(rm_rt *rt, const char *dir, int dev, int pool);
/* Calls onunload() (if the app defined one) and releases the app. */
void rm_app_free(rm_app *a);

/* The handler to give rm_http_server_config (handler_ud: the app). */
extern const rm_http_handler rm_lhttp_handler;
extern const rm_http_handler rm_lhttp_pool_handler;   /* --pages-on-pool */

/* The first server, for sock2req on sockets that did not come from a request. */
void rm_lhttp_set_default_server(rm_rt *rt, rm_http_server *s);

/* Compiles LSP source into a Lua chunk whose single argument is the page's
 * environment (its `page` is the chunk's upvalue, see lsp.c); pushes the
 * function, or returns an error message (pushed). */
int rm_lsp_compile(lua_State *L, const char *src, size_t len, const char *chunkname);
/* Pushes the compiled page for file, bound to its persistent `page` table
 * (recompiled when the file changed). Returns 0, or pushes an error message
 * and returns -1. */
int rm_lsp_load(lua_State *L, const char *file);
/* The same with the file's stat already taken (st NULL: takes it). */
int rm_lsp_load_stat(lua_State *L, const char *file, const struct stat *st);

/* Registers the request object's metatable (once per state). */
void rm__lhttp_open(lua_State *L);
/* lsession.c: adds request:session() to the request methods at the top of
 * the stack; push gives the ba.session table. */
void rm__lsession_open(lua_State *L);
void rm__lsession_push(lua_State *L);

/* With `ba` on top: ba.socket.req2sock and sock2req, the request object,
 * and require "httpc". */
void rm_open_http(lua_State *L);
int rm_lhttp_req2sock(lua_State *L);
int rm_lhttp_sock2req(lua_State *L);
/* require "httpc" */
int rm_open_httpc(lua_State *L);

#endif
