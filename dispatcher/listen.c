/* Listening sockets. Accepts in batches; when the process runs out of file
 * descriptors it pauses the listener briefly instead of spinning on EMFILE.
 * At the loop's connection cap it accepts and closes at once, so a peer hears
 * "no" right away instead of waiting in the backlog. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "dispatcher/internal.h"
#include "remora/conn.h"

enum { ACCEPT_BATCH = 64, EMFILE_PAUSE_MS = 100 };

struct rm_listener {
  rm_loop *loop;
  int fd, port, paused;
  rm_accept_cb cb;
  void *ud;
  rm_timer *retry;
  int warned;
  int refusing;      /* peers turned away since the cap was reached */
  int busy, closed;  /* the accept callback may close its own listener */
};

static void listener_io(rm_loop *loop, int fd, int events, void *ud);
static void accept_batch(rm_loop *loop, rm_listener *l);

static void listener_watch(rm_listener *l) {
  if (l->closed) return;
  rm_loop_watch(l->loop, l->fd, l->paused || rm_timer_active(l->retry) ? 0 : RM_READ, listener_io, l);
}

static void retry_accept(rm_timer *t, void *ud) { listener_watch(ud); }

static void listener_free(rm_listener *l) {
  rm_loop *loop = l->loop;
  rm_timer_free(l->retry);
  rm_loop_unref(loop);
  RM__FREE(loop, l);
}

static void listener_io(rm_loop *loop, int fd, int events, void *ud) {
  rm_listener *l = ud;
  l->busy++;
  accept_batch(loop, l);
  if (--l->busy == 0 && l->closed) listener_free(l);
}

static void accept_batch(rm_loop *loop, rm_listener *l) {
  for (int i = 0; i < ACCEPT_BATCH && !l->paused && !l->closed; i++) {
    int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd >= 0) {
      if (cfd >= loop->max_fds) {   /* the loop could not watch it */
        close(cfd);
        continue;
      }
      if (!rm__loop_conn_room(loop)) {   /* a clean end of stream beats a full backlog */
        if (!l->refusing++)
          rm_loop_log(loop, RM_LOG_WARN, "listener port %d: %d connections, the cap; refusing new ones",
                      l->port, loop->nconns);
        close(cfd);
        continue;
      }
      if (l->refusing)
        rm_loop_log(loop, RM_LOG_INFO, "listener port %d: accepting again (%d refused)", l->port, l->refusing);
      l->refusing = 0;
      l->warned = 0;
      l->cb(l, cfd, l->ud);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      if (!l->warned++)
        rm_loop_log(loop, RM_LOG_WARN, "listener port %d: %s; accepting paused", l->port, strerror(errno));
      rm_timer_start(l->retry, EMFILE_PAUSE_MS, 0);
      listener_watch(l);
    }
    break;  /* EAGAIN: nothing more to accept */
  }
}

int rm_listen(rm_loop *loop, const char *host, int port, int flags, int backlog,
              rm_accept_cb cb, void *ud, rm_listener **out) {
  struct sockaddr_storage ss;
  socklen_t len;
  int family = (flags & RM_LISTEN_IPV6) ? AF_INET6 : AF_INET;
  if (!host || !*host) host = family == AF_INET6 ? "::" : "0.0.0.0";
  if (rm_addr_parse(host, port, AF_UNSPEC, &ss, &len) != RM_OK) return RM_ERESOLVE;
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return RM_EIO;
  int one = 1, v6only = (flags & RM_LISTEN_V6ONLY) != 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* inherited by accepted sockets */
  if (flags & RM_LISTEN_REUSEPORT) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog > 0 ? backlog : 511) != 0) {
    close(fd);
    return RM_EIO;
  }
  rm_listener *l = RM__NEW(loop, rm_listener);
  rm_timer *retry = l ? rm_timer_new(loop, retry_accept, l) : NULL;
  if (!retry) {
    if (l) RM__FREE(loop, l);
    close(fd);
    return RM_ENOMEM;
  }
  rm_timer_unref(retry);
  *l = (rm_listener){.loop = loop, .fd = fd, .cb = cb, .ud = ud, .retry = retry};
  getsockname(fd, (struct sockaddr *)&ss, &len);
  rm_addr_format((struct sockaddr *)&ss, NULL, 0, &l->port);
  rm_loop_ref(loop);
  listener_watch(l);
  *out = l;
  return RM_OK;
}

int rm_listener_fd(const rm_listener *l) { return l->fd; }
int rm_listener_port(const rm_listener *l) { return l->port; }

void rm_listener_pause(rm_listener *l, int paused) {
  l->paused = paused != 0;
  listener_watch(l);
}

void rm_listener_close(rm_listener *l) {
  if (l->closed) return;
  l->closed = 1;
  rm_loop_unwatch(l->loop, l->fd);
  close(l->fd);
  rm_timer_stop(l->retry);
  if (!l->busy) listener_free(l);
}
