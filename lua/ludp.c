/* ba.socket.udpcon: UDP sockets. Reads suspend the calling coroutine until a
 * datagram arrives; sends never block (a full buffer drops, as UDP does). */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "lua/lsocket.h"

enum { DGRAM_MAX = 65536 };

static void udp_io(rm_loop *loop, int fd, int events, void *ud) {
  rm_sock *s = ud;
  rm_rt *rt = s->rt;   /* s may be collected while coroutines run */
  rm_rt_enter(rt);
  if (s->reader) rm_co_wake(s->reader, RM_WAKE_READY);
  else rm_loop_unwatch(loop, fd);
  rm_rt_leave_ready(rt);
}

static int udp_read_k(lua_State *L, int status, lua_KContext ctx) {
  rm_co *co = rm_co_current(L);
  if (co->wake != RM_WAKE_READY) return rm_sock_wake_result(L, co);
  return rm_udp_read(L, rm_sock_check(L, 1));
}

/* read([timeout [, true]]): data, or with true data, ip, port, isIPv6. */
int rm_udp_read(lua_State *L, rm_sock *s) {
  char buf[DGRAM_MAX];
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  ssize_t n = recvfrom(s->fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &len);
  if (n >= 0) {
    lua_pushlstring(L, buf, (size_t)n);
    if (!lua_toboolean(L, 3)) return 1;
    return 1 + rm_push_addr(L, (struct sockaddr *)&ss);
  }
  if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    return rm_push_error(L, "socketreadfailed");   /* e.g. ICMP unreachable on a connected socket */
  rm_co *co = rm_sock_waiter(L, "read");
  if (s->reader && s->reader != co) return luaL_error(L, "read: another coroutine is already reading this socket");
  s->reader = co;
  co->on_wake = rm_sock_unlink_reader;
  rm_loop_watch(s->rt->loop, s->fd, RM_READ, udp_io, s);
  lua_Integer ms = luaL_optinteger(L, 2, -1);
  return rm_co_suspend(L, co, RM_WAIT_READ, s, ms < 0 ? -1 : (long)ms, udp_read_k, 0);
}

int rm_udp_write(lua_State *L, rm_sock *s, const char *p, size_t n) {
  if (!s->udp_connected) return luaL_error(L, "write: the UDP socket is not connected (use sendto)");
  if (send(s->fd, p, n, 0) < 0) return rm_push_error(L, "socketwritefailed");
  lua_pushboolean(L, 1);
  return 1;
}

/* sock:sendto(data, host, port): host is a numeric address. */
int rm_udp_sendto(lua_State *L) {
  rm_sock *s = rm_sock_check(L, 1);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  const char *host = luaL_checkstring(L, 3);
  int port = (int)luaL_checkinteger(L, 4);
  if (s->kind != RM_SK_UDP) return luaL_error(L, "sendto: not a UDP socket");
  struct sockaddr_storage ss;
  socklen_t len;
  if (strcmp(host, "localhost") == 0) host = s->ipv6 ? "::1" : "127.0.0.1";
  if (rm_addr_parse(host, port, s->ipv6 ? AF_INET6 : AF_INET, &ss, &len) != RM_OK)
    return rm_push_error(L, "cannotresolve");
  if (sendto(s->fd, p, n, 0, (struct sockaddr *)&ss, len) < 0) return rm_push_error(L, "socketwritefailed");
  lua_pushboolean(L, 1);
  return 1;
}

/* broadcast and ip-membership; the common options are handled by setoption. */
int rm_udp_setoption(lua_State *L, rm_sock *s, const char *name) {
  int rc;
  if (strcmp(name, "broadcast") == 0) {
    int on = lua_toboolean(L, 3);
    rc = setsockopt(s->fd, SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
  } else if (strcmp(name, "ip-membership") == 0) {
    struct ip_mreq m = {0};
    if (inet_pton(AF_INET, luaL_checkstring(L, 3), &m.imr_multiaddr) != 1) return luaL_argerror(L, 3, "IPv4 group address");
    if (inet_pton(AF_INET, luaL_optstring(L, 4, "0.0.0.0"), &m.imr_interface) != 1) return luaL_argerror(L, 4, "interface address");
    int leave = lua_isboolean(L, 5) && !lua_toboolean(L, 5);
    rc = setsockopt(s->fd, IPPROTO_IP, leave ? IP_DROP_MEMBERSHIP : IP_ADD_MEMBERSHIP, &m, sizeof m);
  } else {
    return luaL_argerror(L, 2, "unknown option (tcp-nodelay, keepalive, dontroute, broadcast, ip-membership)");
  }
  if (rc != 0) return rm_push_error(L, strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* udpcon() / udpcon(localport) / udpcon(host, port [, {port=, intf=, ipv6=}]) */
int rm_udp_new(lua_State *L) {
  rm_rt *rt = rm_rt_get(L);
  RM_ON_LOOP(L, rt, rm_udp_new);
  const char *host = NULL, *intf = NULL;
  int port = 0, local = 0, ipv6 = 0, opts = 0;
  if (lua_type(L, 1) == LUA_TSTRING) {
    host = lua_tostring(L, 1);
    port = (int)luaL_checkinteger(L, 2);
    opts = 3;
  } else if (lua_isinteger(L, 1)) {
    local = (int)lua_tointeger(L, 1);
    opts = 2;
  } else {
    opts = 1;
  }
  if (lua_istable(L, opts)) {
    if (lua_getfield(L, opts, "port") != LUA_TNIL) local = (int)luaL_checkinteger(L, -1);
    if (lua_getfield(L, opts, "intf") != LUA_TNIL) intf = luaL_checkstring(L, -1);
    if (lua_getfield(L, opts, "ipv6") != LUA_TNIL) ipv6 = lua_toboolean(L, -1);
    lua_pop(L, 3);
  }
  struct sockaddr_storage peer;
  socklen_t plen = 0;
  if (host) {
    if (strcmp(host, "localhost") == 0) host = ipv6 ? "::1" : "127.0.0.1";
    if (rm_addr_parse(host, port, ipv6 ? AF_INET6 : AF_UNSPEC, &peer, &plen) != RM_OK)
      return rm_push_error(L, "cannotresolve");
    ipv6 = peer.ss_family == AF_INET6;
  }
  int fd;
  if (rm_udp_open(intf, local, ipv6, &fd) != RM_OK) return rm_push_error(L, "bind");
  if (host && connect(fd, (struct sockaddr *)&peer, plen) != 0) {
    close(fd);
    return rm_push_error(L, "cannotconnect");
  }
  rm_sock *s = rm_sock_push(L, rt, RM_SK_UDP);
  s->fd = fd;
  s->ipv6 = ipv6;
  s->udp_connected = host != NULL;
  rt->nudp++;
  return 1;
}
