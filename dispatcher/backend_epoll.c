/* The epoll backend: the default on Linux. */
#include <sys/epoll.h>
#include <unistd.h>
#include <errno.h>
#include "dispatcher/internal.h"

typedef struct { int epfd; struct epoll_event *ev; int nev; } epoll_state;

static void *ep_create(rm_loop *loop) {
  epoll_state *s = RM__NEW(loop, epoll_state);
  if (!s) return NULL;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  s->nev = 256;
  s->ev = rm_loop_alloc(loop, sizeof(struct epoll_event) * s->nev);
  if (s->epfd < 0 || !s->ev) {
    if (s->epfd >= 0) close(s->epfd);
    rm_loop_free_mem(loop, s->ev, sizeof(struct epoll_event) * s->nev);
    RM__FREE(loop, s);
    return NULL;
  }
  return s;
}

static void ep_destroy(rm_loop *loop, void *state) {
  epoll_state *s = state;
  close(s->epfd);
  rm_loop_free_mem(loop, s->ev, sizeof(struct epoll_event) * s->nev);
  RM__FREE(loop, s);
}

static int ep_set(rm_loop *loop, void *state, int fd, int old_events, int new_events) {
  epoll_state *s = state;
  struct epoll_event ev = {0};
  int op = !old_events ? EPOLL_CTL_ADD : !new_events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (new_events & RM_READ) ev.events |= EPOLLIN | EPOLLRDHUP;
  if (new_events & RM_WRITE) ev.events |= EPOLLOUT;
  ev.data.fd = fd;
  if (epoll_ctl(s->epfd, op, fd, &ev) == 0) return RM_OK;
  /* A closed fd leaves the set by itself; forgetting it is not an error. */
  return (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT)) ? RM_OK : RM_EIO;
}

static int ep_wait(rm_loop *loop, void *state, int timeout_ms, rm__fired *out, int max) {
  epoll_state *s = state;
  int n = epoll_wait(s->epfd, s->ev, max < s->nev ? max : s->nev, timeout_ms);
  for (int i = 0; i < n; i++) {
    uint32_t e = s->ev[i].events;
    out[i].fd = s->ev[i].data.fd;
    out[i].events = ((e & (EPOLLIN | EPOLLRDHUP)) ? RM_READ : 0) | ((e & EPOLLOUT) ? RM_WRITE : 0) |
                    ((e & (EPOLLERR | EPOLLHUP)) ? RM_ERROR : 0);
  }
  return n < 0 ? 0 : n;
}

static int ep_fd(const void *state) { return ((const epoll_state *)state)->epfd; }

/* Closing the fd removes it from the set (no fd is shared: every one is
 * close-on-exec and never duplicated), so EPOLL_CTL_DEL would be a wasted call. */
static int ep_closing(rm_loop *loop, void *state, int fd) { return RM_OK; }

const rm__backend rm__backend_epoll = {"epoll", ep_create, ep_destroy, ep_set, ep_wait, ep_fd,
                                     NULL /* the kernel holds the set */, ep_closing};
