/* The poll backend: portable POSIX, for hosts without epoll. Keeps a dense
 * pollfd array and, per fd, its index in that array. */
#include <poll.h>
#include <string.h>
#include "dispatcher/internal.h"

typedef struct {
  struct pollfd *pfd;
  int n, cap;
  int *index;  /* fd -> position in pfd, or -1 */
  int nindex;
} poll_state;

static void *pl_create(rm_loop *loop) {
  poll_state *s = RM__NEW(loop, poll_state);
  if (s) memset(s, 0, sizeof(*s));
  return s;
}

static void pl_destroy(rm_loop *loop, void *state) {
  poll_state *s = state;
  rm_loop_free_mem(loop, s->pfd, sizeof(struct pollfd) * s->cap);
  rm_loop_free_mem(loop, s->index, sizeof(int) * s->nindex);
  RM__FREE(loop, s);
}

/* Every watched fd is below nindex, so a pfd array as long as the index never
 * fills up: once fd has room in the index, set() on it allocates nothing. */
static int grow(rm_loop *loop, poll_state *s, int fd) {
  int n = s->nindex ? s->nindex : 64;
  while (n <= fd) n *= 2;
  if (n > s->nindex) {
    int *ix = rm_loop_realloc(loop, s->index, sizeof(int) * s->nindex, sizeof(int) * n);
    if (!ix) return RM_ENOMEM;
    for (int i = s->nindex; i < n; i++) ix[i] = -1;
    s->index = ix;
    s->nindex = n;
  }
  if (s->cap < s->nindex) {   /* also retries a pfd grow that failed before */
    struct pollfd *p = rm_loop_realloc(loop, s->pfd, sizeof(*p) * s->cap, sizeof(*p) * s->nindex);
    if (!p) return RM_ENOMEM;
    s->pfd = p;
    s->cap = s->nindex;
  }
  return RM_OK;
}

static int pl_reserve(rm_loop *loop, void *state, int fd) { return grow(loop, state, fd); }

static int pl_set(rm_loop *loop, void *state, int fd, int old_events, int new_events) {
  poll_state *s = state;
  int i = fd < s->nindex ? s->index[fd] : -1;
  if (!new_events) {
    if (i < 0) return RM_OK;
    s->pfd[i] = s->pfd[--s->n];   /* move the last entry into the hole */
    if (i < s->n) s->index[s->pfd[i].fd] = i;
    s->index[fd] = -1;
    return RM_OK;
  }
  if (i < 0) {
    if (grow(loop, s, fd) != RM_OK) return RM_ENOMEM;
    i = s->index[fd] = s->n++;
    s->pfd[i].fd = fd;
  }
  s->pfd[i].events = ((new_events & RM_READ) ? POLLIN : 0) | ((new_events & RM_WRITE) ? POLLOUT : 0);
  s->pfd[i].revents = 0;
  return RM_OK;
}

static int pl_wait(rm_loop *loop, void *state, int timeout_ms, rm__fired *out, int max) {
  poll_state *s = state;
  int n = poll(s->pfd, s->n, timeout_ms), k = 0;
  for (int i = 0; i < s->n && k < max && n > 0; i++) {
    short r = s->pfd[i].revents;
    if (!r) continue;
    n--;
    out[k].fd = s->pfd[i].fd;
    out[k].events = ((r & POLLIN) ? RM_READ : 0) | ((r & POLLOUT) ? RM_WRITE : 0) |
                    ((r & (POLLERR | POLLHUP | POLLNVAL)) ? RM_ERROR : 0);
    k++;
  }
  return k;
}

/* poll has no descriptor of its own: a host integrating this backend polls
 * with rm_loop_timeout() instead. */
static int pl_fd(const void *state) { return -1; }

const rm__backend rm__backend_poll = {"poll", pl_create, pl_destroy, pl_set, pl_wait, pl_fd, pl_reserve,
                                     NULL /* closing: forgotten like any unwatched fd */};
