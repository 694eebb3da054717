/* lua/lsocket.h: the socket object behind ba.socket, shared by the files
 * that implement its kinds (TCP and listeners in lsocket.c, UDP in ludp.c). */
#ifndef REMORA_LUA_LSOCKET_H
#define REMORA_LUA_LSOCKET_H

#include "lua/rt.h"

#define RM_SOCKET_MT "ba.socket"

enum { RM_SK_NEW, RM_SK_TCP, RM_SK_LISTEN, RM_SK_UDP, RM_SK_CLOSED };
enum { RM_PENDING_MAX = 8 };   /* accepted connections waiting for accept() */

/* A protocol layered on a TCP socket (WebSocket): when set, read, write and
 * close go through it. ext is its state; gc frees it with the socket. */
typedef struct rm_sock_ext {
  const char *name;                                  /* for __tostring */
  int (*read)(lua_State *L, rm_sock *s);             /* a Lua C function body */
  int (*write)(lua_State *L, rm_sock *s);
  void (*close)(rm_sock *s);                         /* before the connection closes */
  void (*gc)(rm_sock *s);
  int (*lclose)(lua_State *L, rm_sock *s);           /* close() from Lua, with its arguments */
} rm_sock_ext;

/* One per socket, for as long as Lua holds it (19,000 idle WebSockets hold
 * 19,000): the small fields share words. Every field is read and written
 * under the Lua lock. */
struct rm_sock {
  rm_rt *rt;
  unsigned char kind, mode; /* mode: 0, 'r' (asynchronous) or 's' (cosocket) */
  unsigned char npending;   /* accepted connections in pending */
  unsigned udp_connected : 1, ipv6 : 1, disabled : 1;
  unsigned halfclose : 1;   /* setoption("halfclose"): end of stream leaves writing open */
  unsigned close_pending : 1;   /* see xusers */
  short connect_err;        /* an RM_E* code */
  /* Worker threads (lblocking.c): how many wait on the fd now (a close is
   * deferred until they are gone: close_pending), and the queue size the
   * dispatcher last saw, which workers read under the Lua lock. */
  unsigned short xusers;
  size_t xqueued;
  int fd;                   /* UDP */
  int anchor;               /* registry reference while owned */
  int *pending;             /* a listener's: RM_PENDING_MAX fds (an allocation of its own), else NULL */
  rm_conn *conn;
  rm_listener *lst;
  rm_co *owner;             /* the coroutine bound by event() */
  rm_co *reader;            /* waiting in read() or accept() */
  rm_co *wq_head, *wq_tail; /* writers waiting, FIFO */
  size_t queuelen;
  rm_resolve *resolve;      /* connect in progress */
  const rm_sock_ext *ext;   /* a protocol on top (WebSocket), or NULL */
  void *ext_state;
  void *tls;                /* TLS configuration for a listener's accepted sockets */
};

rm_sock *rm_sock_check(lua_State *L, int idx);
/* Wraps an open connection (from the HTTP server: req2sock) as a TCP socket
 * object, pushed on L. */
rm_sock *rm_sock_from_conn(lua_State *L, rm_rt *rt, rm_conn *c);
/* Takes the connection back out of a socket (sock2req): the socket becomes
 * closed without closing the connection. */
rm_conn *rm_sock_detach(rm_sock *s);
/* Suspends co until s's connection is readable or writable (events), for
 * protocol steps such as a TLS handshake; k runs then, or on timeout. */
int rm_sock_wait_io(lua_State *L, rm_co *co, rm_sock *s, int events, long timeout,
                    lua_KFunction k, lua_KContext ctx);
/* The cosocket write of a protocol's frame by the running coroutine: the
 * strings at index 2 (header) and 3 (payload) leave in one writev once it is
 * the writer's turn in the socket's FIFO. */
int rm_sock_write_frame(lua_State *L, rm_sock *s);
rm_sock *rm_sock_push(lua_State *L, rm_rt *rt, int kind);
void rm_sock_close(rm_sock *s);
/* The on_wake of a coroutine waiting as s's reader: s forgets it. */
void rm_sock_unlink_reader(rm_co *co);
/* Wakes every coroutine waiting on s with reason. */
void rm_sock_wake_all(rm_sock *s, int reason);
/* The coroutine that may wait on s here, or a Lua error naming the rule. */
rm_co *rm_sock_waiter(lua_State *L, const char *what);
int rm_sock_wake_result(lua_State *L, rm_co *co);   /* nil, reason for a failed wait */

/* sock:close() and sock:write() as Lua C functions (for delegation). */
int rm_sock_lclose(lua_State *L);
int rm_sock_lwrite(lua_State *L);

/* Blocking mode: socket calls made on a worker thread (lblocking.c). */
int rm_sock_worker_read(lua_State *L, rm_sock *s);
int rm_sock_worker_write(lua_State *L, rm_sock *s);
int rm_sock_worker_connect(lua_State *L);
int rm_sock_adopt_fd(lua_State *L);   /* on the dispatcher: the fd of the socket at 1 */
void rm_sock_gc_elsewhere(rm_sock *s);

int rm_sock_pipe(lua_State *L);     /* ba.socket.pipe (lpipe.c) */
int rm_udp_new(lua_State *L);        /* ba.socket.udpcon */
int rm_udp_read(lua_State *L, rm_sock *s);
int rm_udp_write(lua_State *L, rm_sock *s, const char *p, size_t n);
int rm_udp_sendto(lua_State *L);
int rm_udp_setoption(lua_State *L, rm_sock *s, const char *name);

/* WebSocket (lws.c). rm_ws_open registers the handshake req2sock runs on
 * an upgrade request (registry["remora.websocket.upgrade"]). */
void rm_ws_open(lua_State *L);
int rm_ws_upgrade_lua(lua_State *L);   /* ba.socket.wsupgrade */
int rm_ws_connect(lua_State *L);       /* ba.socket.wsconnect */
int rm_ws_ping(lua_State *L);          /* sock:ping */
int rm_ws_info(lua_State *L);          /* sock:wsinfo */

#endif
