/* remora/lua.h: Lua 5.4 on a remora loop, with Barracuda's ba.* API.
 *
 * One Lua state per runtime, guarded by one lock (the "Lua lock"): the loop's
 * thread takes it for each callback that runs Lua and releases it while it
 * waits, so worker threads can run Lua in between. A host that calls into the
 * state itself (rm_lua_state) must hold the lock: rm_lua_lock/rm_lua_unlock. */
#ifndef REMORA_LUA_H
#define REMORA_LUA_H

#include <lua.h>
#include "remora/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rm_rt rm_lua;

typedef struct rm_lua_config {
  size_t queuelen;   /* default write queue bound of new sockets (0: 16 KiB) */
  int threads;       /* worker threads for ba.thread (-1: one per CPU, min 2; 0: none) */
  int dev;           /* development mode: error details in page bodies */
  size_t max_memory; /* Lua heap limit in bytes (0: $REMORA_LUA_MEMORY, else none); a
                      * coroutine that would pass it fails with "not enough memory" */
} rm_lua_config;

rm_lua *rm_lua_new(rm_loop *loop, const rm_lua_config *cfg);
/* Runs a script file (or chunk) as a coroutine on the loop: blocking-style
 * calls in it suspend only it. argv becomes the global `arg`. Returns 0, or
 * -1 when it could not be loaded (the error is logged). */
int rm_lua_run_file(rm_lua *rt, const char *path, int argc, char **argv);
int rm_lua_run_string(rm_lua *rt, const char *chunk, const char *name);
/* Resumes every suspended coroutine with nil, "sysshutdown". */
void rm_lua_shutdown(rm_lua *rt);
/* Closes the state (sockets close, queued data is still delivered by the loop). */
void rm_lua_free(rm_lua *rt);
lua_State *rm_lua_state(rm_lua *rt);
void rm_lua_lock(rm_lua *rt);
void rm_lua_unlock(rm_lua *rt);
/* Adds a C module that `require` finds by name (e.g. "screen"). */
void rm_lua_preload(rm_lua *rt, const char *name, lua_CFunction open);

#ifdef __cplusplus
}
#endif
#endif
