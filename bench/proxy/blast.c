/* blast: the load for the proxy benchmark. It listens on SINK_PORT (the
 * upstream the proxy forwards to), connects to TARGET_PORT (the proxy, or
 * SINK_PORT itself for plain loopback), sends BYTES in 1 MiB writes and
 * half-closes; the sink reads until end of stream. Prints the bytes that
 * arrived and the rate from the first write to the last byte read.
 * With "http", a request head is sent first and is not counted: a proxy
 * that lives in an HTTP server (nginx's Lua module) needs a request before
 * it can take the connection over as a raw socket.
 *   blast SINK_PORT TARGET_PORT BYTES [http] */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BUF = 1 << 20 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static void *sink(void *arg) {
  int lfd = *(int *)arg, fd = accept(lfd, NULL, NULL);
  static char buf[BUF];
  long long got = 0;
  ssize_t n;
  if (fd < 0) { perror("accept"); exit(1); }
  while ((n = read(fd, buf, sizeof buf)) > 0) got += n;
  close(fd);
  long long *out = malloc(sizeof *out);
  *out = got;
  return out;
}

int main(int argc, char **argv) {
  if (argc != 4 && (argc != 5 || strcmp(argv[4], "http") != 0)) {
    fprintf(stderr, "usage: blast SINK_PORT TARGET_PORT BYTES [http]\n");
    return 2;
  }
  int sink_port = atoi(argv[1]), target = atoi(argv[2]);
  long long total = atoll(argv[3]);
  int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = loopback(sink_port);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 16) != 0) { perror("sink"); return 1; }
  pthread_t t;
  pthread_create(&t, NULL, sink, &lfd);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  a = loopback(target);
  for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a) != 0; tries++) {
    if (tries == 50) { perror("connect"); return 1; }
    usleep(100000);
  }
  static const char head[] = "GET / HTTP/1.1\r\nHost: proxy\r\n\r\n";
  if (argc == 5 && write(fd, head, sizeof head - 1) != (ssize_t)(sizeof head - 1)) { perror("head"); return 1; }
  char *buf = malloc(BUF);
  memset(buf, 'x', BUF);
  double start = now();
  for (long long left = total; left > 0;) {
    ssize_t w = write(fd, buf, left < BUF ? (size_t)left : BUF);
    if (w <= 0) { perror("write"); return 1; }
    left -= w;
  }
  shutdown(fd, SHUT_WR);
  void *got;
  pthread_join(t, &got);
  double secs = now() - start;
  printf("%lld bytes in %.3f s: %.3f GB/s\n", *(long long *)got, secs, *(long long *)got / secs / 1e9);
  return *(long long *)got == total ? 0 : 1;
}
