/* Unit tests for dispatcher/: timers, posted work, connections and their
 * write queue, over real loopback sockets. Runs on $REMORA_BACKEND. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "remora/conn.h"
#include "check.h"

/* ---- timers ---- */

static int order[8], norder;
static void record(rm_timer *t, void *ud) { order[norder++] = (int)(intptr_t)ud; }

static void timers_fire_in_order(void) {
  rm_loop *loop = rm_loop_new(NULL);
  rm_timer *a = rm_timer_new(loop, record, (void *)1);
  rm_timer *b = rm_timer_new(loop, record, (void *)2);
  rm_timer *c = rm_timer_new(loop, record, (void *)3);
  norder = 0;
  rm_timer_start(a, 30, 0);
  rm_timer_start(b, 10, 0);
  rm_timer_start(c, 10, 0);   /* same deadline as b: started later, fires later */
  rm_loop_run(loop);
  CHECK_EQ(norder, 3);
  CHECK_EQ(order[0], 2);
  CHECK_EQ(order[1], 3);
  CHECK_EQ(order[2], 1);
  rm_timer_free(a); rm_timer_free(b); rm_timer_free(c);
  rm_loop_free(loop);
}

static int repeats;
static void repeat_cb(rm_timer *t, void *ud) { if (++repeats == 5) rm_timer_stop(t); }
static void cancelled_cb(rm_timer *t, void *ud) { repeats = 1000; }

static void timers_repeat_and_cancel(void) {
  rm_loop *loop = rm_loop_new(NULL);
  rm_timer *r = rm_timer_new(loop, repeat_cb, NULL);
  rm_timer *x = rm_timer_new(loop, cancelled_cb, NULL);
  repeats = 0;
  rm_timer_start(r, 1, 2);
  rm_timer_start(x, 5, 0);
  rm_timer_stop(x);
  CHECK(!rm_timer_active(x));
  rm_loop_run(loop);   /* returns once the repeating timer stops itself */
  CHECK_EQ(repeats, 5);
  rm_timer_free(r); rm_timer_free(x);
  rm_loop_free(loop);
}

static void many_timers_heap(void) {
  rm_loop *loop = rm_loop_new(NULL);
  enum { N = 500 };
  rm_timer *t[N];
  norder = 0;
  for (int i = 0; i < N; i++) { t[i] = rm_timer_new(loop, repeat_cb, NULL); rm_timer_start(t[i], (i * 7) % 13, 0); }
  for (int i = 0; i < N; i += 3) rm_timer_stop(t[i]);
  repeats = 0;
  rm_loop_run(loop);
  CHECK_EQ(repeats, N - (N + 2) / 3);
  for (int i = 0; i < N; i++) rm_timer_free(t[i]);
  rm_loop_free(loop);
}

/* ---- posted work ---- */

static int posted_sum, posted_last;
static int posted_in_order = 1;
static void posted(void *arg) {
  int v = (int)(intptr_t)arg;
  if (v % 1000 != 0 && v != posted_last + 1) posted_in_order = 0;
  posted_last = v;
  posted_sum++;
}
static void *poster(void *arg) {
  rm_loop *loop = arg;
  for (int i = 0; i < 1000; i++) rm_loop_post(loop, posted, (void *)(intptr_t)i);
  return NULL;
}
static void stop_when_done(rm_timer *t, void *ud) { if (posted_sum == 1000) rm_loop_stop(ud); }

static void post_from_thread(void) {
  rm_loop *loop = rm_loop_new(NULL);
  rm_timer *t = rm_timer_new(loop, stop_when_done, loop);
  rm_timer_start(t, 1, 1);
  pthread_t th;
  posted_sum = 0; posted_last = -1;
  pthread_create(&th, NULL, poster, loop);
  rm_loop_run(loop);
  pthread_join(th, NULL);
  CHECK_EQ(posted_sum, 1000);
  CHECK(posted_in_order);
  rm_timer_free(t);
  rm_loop_free(loop);
}

/* ---- connections ---- */

typedef struct {
  rm_loop *loop;
  rm_conn *server;     /* accepted side */
  rm_conn *client;
  size_t received;
  unsigned char expect;
  int bad, errors, connected;
} pair;

static void srv_readable(rm_conn *c, void *ud) {
  pair *p = ud;
  unsigned char buf[65536];
  long n;
  while ((n = rm_conn_read(c, buf, sizeof buf)) > 0) {
    for (long i = 0; i < n; i++) if (buf[i] != p->expect++) p->bad++;
    p->received += (size_t)n;
  }
  if (n == 0 || (n < 0 && n != RM_EAGAIN)) { rm_conn_close(c); p->server = NULL; rm_loop_stop(p->loop); }
}
static const rm_conn_handler srv_handler = {.on_readable = srv_readable};

static void on_accept(rm_listener *l, int fd, void *ud) {
  pair *p = ud;
  p->server = rm_conn_new(p->loop, fd, &srv_handler, p);
  rm_conn_want_read(p->server, 1);
}

static void cli_connect(rm_conn *c, int err, void *ud) { ((pair *)ud)->connected = err == RM_OK ? 1 : -1; }
static void cli_error(rm_conn *c, int err, void *ud) { ((pair *)ud)->errors++; }
static const rm_conn_handler cli_handler = {.on_connect = cli_connect, .on_error = cli_error};

static rm_listener *open_pair(pair *p) {
  memset(p, 0, sizeof(*p));
  p->loop = rm_loop_new(NULL);
  rm_listener *l;
  CHECK_EQ(rm_listen(p->loop, "127.0.0.1", 0, 0, 16, on_accept, p, &l), RM_OK);
  struct sockaddr_storage ss;
  socklen_t len;
  rm_addr_parse("127.0.0.1", rm_listener_port(l), AF_INET, &ss, &len);
  CHECK_EQ(rm_conn_connect(p->loop, (struct sockaddr *)&ss, len, NULL, 0, &cli_handler, p, &p->client), RM_OK);
  while (!p->connected || !p->server) rm_loop_run_once(p->loop, 100);
  CHECK_EQ(p->connected, 1);
  return l;
}

/* A write queue much larger than the socket buffers, then close(): every
 * byte arrives in order before the connection ends. */
static void close_delivers_queued_data(void) {
  pair p;
  rm_listener *l = open_pair(&p);
  enum { TOTAL = 8 << 20 };
  static unsigned char block[TOTAL];
  for (size_t i = 0; i < TOTAL; i++) block[i] = (unsigned char)i;
  for (size_t off = 0; off < TOTAL; off += 100000) {
    size_t n = TOTAL - off < 100000 ? TOTAL - off : 100000;
    CHECK_EQ(rm_conn_write(p.client, block + off, n), RM_OK);
  }
  CHECK(rm_conn_queued(p.client) > 0);
  rm_conn_close(p.client);
  rm_loop_run(p.loop);
  CHECK_EQ(p.received, TOTAL);
  CHECK_EQ(p.bad, 0);
  rm_listener_close(l);
  rm_loop_run(p.loop);
  CHECK_EQ(rm_conn_count(p.loop), 0);
  rm_loop_free(p.loop);
}

/* The hard bound refuses a write whole and keeps earlier data intact. */
static void queue_bound_refuses_whole_writes(void) {
  pair p;
  rm_listener *l = open_pair(&p);
  rm_conn_want_read(p.server, 0);          /* the peer stops reading */
  rm_conn_set_limits(p.client, 64 * 1024, 0);
  static unsigned char block[16384];
  int full = 0;
  size_t accepted = 0;
  for (int i = 0; i < 10000 && !full; i++) {
    for (size_t j = 0; j < sizeof block; j++) block[j] = (unsigned char)(accepted + j);
    int rc = rm_conn_write(p.client, block, sizeof block);
    if (rc == RM_EFULL) full = 1; else { CHECK_EQ(rc, RM_OK); accepted += sizeof block; }
    rm_loop_run_once(p.loop, 0);
  }
  CHECK(full);
  CHECK(rm_conn_queued(p.client) <= 64 * 1024);
  rm_conn_want_read(p.server, 1);
  rm_conn_close(p.client);
  rm_loop_run(p.loop);
  CHECK_EQ(p.received, accepted);
  CHECK_EQ(p.bad, 0);
  rm_listener_close(l);
  rm_loop_run(p.loop);
  CHECK_EQ(rm_conn_count(p.loop), 0);
  rm_loop_free(p.loop);
}

/* The peer resets while data is queued: the writer hears on_error, later
 * writes fail, nothing crashes. */
static void peer_reset_reports_error(void) {
  pair p;
  rm_listener *l = open_pair(&p);
  rm_conn_want_read(p.server, 0);
  static unsigned char block[1 << 20];
  while (rm_conn_queued(p.client) == 0) rm_conn_write(p.client, block, sizeof block);
  rm_conn_abort(p.server);
  p.server = NULL;
  for (int i = 0; i < 200 && !p.errors && !rm_conn_is_broken(p.client); i++) {
    rm_conn_write(p.client, block, 1000);
    rm_loop_run_once(p.loop, 10);
  }
  CHECK(p.errors > 0 || rm_conn_is_broken(p.client));
  CHECK(rm_conn_write(p.client, block, 10) < 0);
  rm_conn_close(p.client);
  rm_listener_close(l);
  rm_loop_run(p.loop);
  CHECK_EQ(rm_conn_count(p.loop), 0);
  rm_loop_free(p.loop);
}

static int resolved;
static void on_resolved(void *ud, int err, const struct sockaddr *sa, socklen_t len) {
  int port = 0;
  if (!err) rm_addr_format(sa, NULL, 0, &port);
  resolved = err ? -1 : port;
}

static void resolve_numeric_and_name(void) {
  rm_loop *loop = rm_loop_new(NULL);
  resolved = 0;
  CHECK_EQ(rm_resolve_start(loop, "127.0.0.1", 80, AF_UNSPEC, on_resolved, NULL, NULL), RM_OK);
  CHECK_EQ(resolved, 0);   /* never from inside the call */
  rm_loop_run(loop);
  CHECK_EQ(resolved, 80);
  resolved = 0;
  rm_resolve_start(loop, "localhost", 81, AF_INET, on_resolved, NULL, NULL);
  rm_loop_run(loop);
  CHECK_EQ(resolved, 81);
  resolved = 0;
  rm_resolve *r;
  rm_resolve_start(loop, "localhost", 82, AF_INET, on_resolved, NULL, &r);
  rm_resolve_cancel(r);
  rm_loop_run(loop);
  CHECK_EQ(resolved, 0);
  rm_loop_free(loop);
}

static void connect_refused(void) {
  rm_loop *loop = rm_loop_new(NULL);
  pair p = {.loop = loop};
  /* A port just released by a listener has nobody behind it. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  bind(fd, (struct sockaddr *)&a, len);
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  rm_conn *c;
  CHECK_EQ(rm_conn_connect(loop, (struct sockaddr *)&a, len, NULL, 0, &cli_handler, &p, &c), RM_OK);
  while (!p.connected) rm_loop_run_once(loop, 100);
  CHECK_EQ(p.connected, -1);
  rm_conn_close(c);
  rm_loop_run(loop);
  rm_loop_free(loop);
}

int main(void) {
  printf("# backend %s\n", getenv("REMORA_BACKEND") ? getenv("REMORA_BACKEND") : "default");
  RUN(timers_fire_in_order);
  RUN(timers_repeat_and_cancel);
  RUN(many_timers_heap);
  RUN(post_from_thread);
  RUN(close_delivers_queued_data);
  RUN(queue_bound_refuses_whole_writes);
  RUN(peer_reset_reports_error);
  RUN(resolve_numeric_and_name);
  RUN(connect_refused);
  return CHECK_DONE();
}
