/* Addresses: numeric parsing and formatting, name resolution on a helper
 * thread (getaddrinfo blocks, the loop must not), and UDP sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "dispatcher/internal.h"
#include "remora/conn.h"

struct rm_resolve {
  rm_loop *loop;
  rm_resolve_cb cb;
  void *ud;
  int port, family, err, cancelled;
  struct sockaddr_storage addr;
  socklen_t len;
  char host[256];
};

int rm_addr_parse(const char *host, int port, int family, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  if (family != AF_INET6 && inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return RM_OK;
  }
  if (family != AF_INET && inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    *len = sizeof(*s6);
    return RM_OK;
  }
  return RM_ERESOLVE;
}

int rm_addr_format(const struct sockaddr *sa, char *ip, size_t iplen, int *port) {
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (ip) inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
    if (port) *port = ntohs(s6->sin6_port);
    return 1;
  }
  const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
  if (ip) inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
  if (port) *port = ntohs(s4->sin_port);
  return 0;
}

static void deliver(void *arg) {
  rm_resolve *r = arg;
  if (!r->cancelled) r->cb(r->ud, r->err, r->err ? NULL : (struct sockaddr *)&r->addr, r->len);
  rm_loop_unref(r->loop);
  RM__FREE(r->loop, r);
}

static void *lookup(void *arg) {
  rm_resolve *r = arg;
  struct addrinfo hints = {.ai_family = r->family, .ai_socktype = SOCK_STREAM}, *res = NULL;
  char port[16];
  snprintf(port, sizeof port, "%d", r->port);
  r->err = getaddrinfo(r->host, port, &hints, &res) == 0 && res ? RM_OK : RM_ERESOLVE;
  if (!r->err) {
    memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
    r->len = res->ai_addrlen;
  }
  if (res) freeaddrinfo(res);
  rm_loop *loop = r->loop;
  rm_loop_post(loop, deliver, r);
  pthread_mutex_lock(&loop->post_mu);
  if (--loop->resolvers == 0) pthread_cond_broadcast(&loop->post_cv);
  pthread_mutex_unlock(&loop->post_mu);
  return NULL;
}

int rm_resolve_start(rm_loop *loop, const char *host, int port, int family,
                     rm_resolve_cb cb, void *ud, rm_resolve **out) {
  if (!host || strlen(host) >= sizeof(((rm_resolve *)0)->host)) return RM_EINVAL;
  rm_resolve *r = RM__NEW(loop, rm_resolve);
  if (!r) return RM_ENOMEM;
  memset(r, 0, sizeof(*r));
  *r = (rm_resolve){.loop = loop, .cb = cb, .ud = ud, .port = port, .family = family};
  strcpy(r->host, host);
  rm_loop_ref(loop);
  if (out) *out = r;
  /* A numeric address needs no lookup; it is still answered from the loop so
   * that every caller sees the callback after rm_resolve_start returns. */
  if (rm_addr_parse(host, port, family, &r->addr, &r->len) == RM_OK) return rm_loop_post(loop, deliver, r);
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock(&loop->post_mu);
  loop->resolvers++;
  pthread_mutex_unlock(&loop->post_mu);
  int rc = pthread_create(&th, &attr, lookup, r);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    pthread_mutex_lock(&loop->post_mu);
    loop->resolvers--;
    pthread_mutex_unlock(&loop->post_mu);
    r->err = RM_ERESOLVE;
    return rm_loop_post(loop, deliver, r);
  }
  return RM_OK;
}

void rm_resolve_cancel(rm_resolve *r) { r->cancelled = 1; }

int rm_udp_open(const char *host, int port, int ipv6, int *fd_out) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (!host || !*host) host = ipv6 ? "::" : "0.0.0.0";
  if (rm_addr_parse(host, port, ipv6 ? AF_INET6 : AF_UNSPEC, &ss, &len) != RM_OK) return RM_ERESOLVE;
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno == EMFILE || errno == ENFILE ? RM_ELIMIT : RM_EIO;
  if (bind(fd, (struct sockaddr *)&ss, len) != 0) { close(fd); return RM_EIO; }
  *fd_out = fd;
  return RM_OK;
}
