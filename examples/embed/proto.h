/* The tiny binary protocol both example hosts serve from C.
 *
 * A request is a 2-byte big-endian length, then that many bytes: an opcode
 * byte and its argument. A response is the same framing around a status byte
 * (0 ok, 1 error) and a body. Opcodes: 'E' echoes its argument, 'S' answers
 * the host's statistics as "key=value" text. A request longer than max_frame
 * gets an error response and the connection is closed after it. */
#ifndef EMBED_PROTO_H
#define EMBED_PROTO_H

#include "remora/conn.h"

typedef struct proto_server proto_server;

typedef struct proto_config {
  int port;            /* 0: any free port (see proto_port) */
  size_t max_frame;    /* largest request body (0: 1024); each connection holds a buffer this big */
  size_t max_queue;    /* response bytes queued per connection before reading pauses (0: 16 KiB) */
  /* Writes the host's statistics into buf as text; returns the length. */
  size_t (*stats)(void *ud, char *buf, size_t cap);
  void *ud;
} proto_config;

/* Listens on 127.0.0.1. NULL when the port cannot be had or memory is short. */
proto_server *proto_listen(rm_loop *loop, const proto_config *cfg);
int proto_port(const proto_server *ps);
/* Connections the host could not give memory to (they were closed at once). */
unsigned long proto_refused(const proto_server *ps);
/* Stops listening and closes every connection (queued responses still go). */
void proto_close(proto_server *ps);

#endif
