/* remora/ws.h: the WebSocket codec (RFC 6455) with permessage-deflate (RFC 7692).
 *
 * Pure functions over buffers: no sockets, no event loop, no Lua. The HTTP
 * layer parses headers and hands their values here as strings; a connection
 * owner feeds received bytes to a decoder (or the message reader built on it)
 * and builds outgoing frames with the encoder.
 *
 * Layers, bottom up:
 *   handshake   Sec-WebSocket-Accept, client keys, subprotocols, and the
 *               permessage-deflate offer/response.
 *   utf8        an incremental validator for text messages.
 *   decoder     bytes in, frame headers and payload pieces out; enforces every
 *               framing rule of RFC 6455 section 5.
 *   reader      the decoder plus inflate and UTF-8 checks: whole messages, or
 *               pieces of them ("fragment mode").
 *   encoder     frame headers into a caller buffer, masking, compression.
 *
 * Protocol failures come back as negative codes; rm_ws_close_code() turns any
 * of them into the close code to send before closing the connection.
 */
#ifndef REMORA_WS_H
#define REMORA_WS_H

#include <stddef.h>
#include <stdint.h>
#include "remora/loop.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Errors beyond loop.h's. A configured bound that would be exceeded (frame or
 * message too big, compression bomb) is RM_EFULL. */
enum {
  RM_WS_EPROTOCOL = -1002, /* the peer broke RFC 6455/7692: close with 1002 */
  RM_WS_EBADDATA = -1007   /* invalid UTF-8 or corrupt compressed data: 1007 */
};
/* The close code that answers err: 1002, 1007, 1009 (RM_EFULL) or 1011. */
int rm_ws_close_code(int err);

/* Opcodes. */
enum {
  RM_WS_OP_CONT = 0x0, RM_WS_OP_TEXT = 0x1, RM_WS_OP_BINARY = 0x2,
  RM_WS_OP_CLOSE = 0x8, RM_WS_OP_PING = 0x9, RM_WS_OP_PONG = 0xA
};

/* Close codes (RFC 6455 section 7.4.1). */
enum {
  RM_WS_CLOSE_NORMAL = 1000, RM_WS_CLOSE_GOING_AWAY = 1001,
  RM_WS_CLOSE_PROTOCOL = 1002, RM_WS_CLOSE_UNSUPPORTED = 1003,
  RM_WS_CLOSE_NO_STATUS = 1005, /* never sent: "the close frame had no code" */
  RM_WS_CLOSE_ABNORMAL = 1006,  /* never sent: "no close frame at all" */
  RM_WS_CLOSE_BAD_DATA = 1007, RM_WS_CLOSE_POLICY = 1008,
  RM_WS_CLOSE_TOO_BIG = 1009, RM_WS_CLOSE_EXTENSION = 1010,
  RM_WS_CLOSE_INTERNAL = 1011
};

#define RM_WS_MAX_HEADER 14   /* 2 + 8 (64-bit length) + 4 (mask) */
#define RM_WS_MAX_CONTROL 125 /* control frame payload */
#define RM_WS_DEFAULT_LIMIT (16u << 20)

/* ---- Opening handshake ------------------------------------------------- */

#define RM_WS_KEY_LEN 24    /* base64 of 16 random bytes */
#define RM_WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* Server: the Sec-WebSocket-Accept value for a client's Sec-WebSocket-Key.
 * RM_EINVAL unless the key is base64 of exactly 16 bytes. */
int rm_ws_accept_key(const char *key, char out[RM_WS_ACCEPT_LEN + 1]);
/* Client: a fresh random Sec-WebSocket-Key. */
int rm_ws_client_key(char out[RM_WS_KEY_LEN + 1]);
/* Client: RM_OK when the server's Sec-WebSocket-Accept answers key, else
 * RM_WS_EPROTOCOL. */
int rm_ws_check_accept(const char *key, const char *accept);
/* Server: the first name in the comma-separated list `supported` that the
 * client's Sec-WebSocket-Protocol value `offered` also names (exact match).
 * Returns 1 and points *name and *len into supported, or 0 when none matches. */
int rm_ws_select_protocol(const char *offered, const char *supported,
                          const char **name, size_t *len);

/* ---- permessage-deflate negotiation (RFC 7692 section 7) --------------- */

/* Both what one side wants and what the two sides agreed. Window bits are
 * 8..15; 0 reads as 15 (the 32 KiB maximum). */
typedef struct rm_ws_deflate_params {
  int server_no_context_takeover; /* the server resets its compressor per message */
  int client_no_context_takeover; /* the client does */
  int server_max_window_bits;     /* the server's LZ77 window */
  int client_max_window_bits;     /* the client's */
} rm_ws_deflate_params;

#define RM_WS_EXTENSION_MAX 160 /* room for any offer or response built here */

/* Server: picks the first acceptable permessage-deflate offer in the client's
 * Sec-WebSocket-Extensions value (several header lines joined with ", "),
 * invalid offers being declined as RFC 7692 asks. `want` (NULL: defaults) is
 * what the server would like. Returns 1 with *agreed and the response header
 * value in out, 0 when no offer is acceptable, RM_EINVAL when out is too small. */
int rm_ws_deflate_accept(const char *offers, const rm_ws_deflate_params *want,
                         rm_ws_deflate_params *agreed, char *out, size_t size);
/* Client: the Sec-WebSocket-Extensions value that offers `want` (NULL: defaults). */
int rm_ws_deflate_offer(const rm_ws_deflate_params *want, char *out, size_t size);
/* Client: checks the server's Sec-WebSocket-Extensions value (NULL or "" when
 * absent) against what was offered. Returns 1 with *agreed when deflate is on,
 * 0 when the server declined it, RM_WS_EPROTOCOL when the response is invalid
 * (the client must then fail the connection). */
int rm_ws_deflate_confirm(const char *response, const rm_ws_deflate_params *offered,
                          rm_ws_deflate_params *agreed);

/* ---- Configuration shared by the decoder, reader and compressors ------- */

typedef struct rm_ws_config {
  int is_server;         /* server: received frames must be masked; client: not */
  int fragment_mode;     /* reader: deliver pieces, not whole messages */
  const rm_ws_deflate_params *deflate; /* agreed parameters, copied at creation;
                                          NULL: no permessage-deflate */
  uint64_t max_frame;    /* payload bytes in one frame; 0: 16 MiB */
  uint64_t max_message;  /* bytes in one message, after inflating; 0: 16 MiB */
  size_t inflate_chunk;  /* bytes of inflated output per piece; 0: 16 KiB */
  int deflate_level;     /* zlib level 1..9; 0: zlib's default */
  rm_alloc_fn alloc;     /* NULL: realloc/free */
  void *alloc_ud;
} rm_ws_config;

/* ---- UTF-8 -------------------------------------------------------------- */

#define RM_WS_UTF8_ACCEPT 0u
/* Validates the next bytes of a text; *state starts at RM_WS_UTF8_ACCEPT and
 * carries a sequence split across calls. Returns RM_WS_EBADDATA at the first
 * byte that makes the text invalid, else RM_OK. The text is valid when its
 * last call leaves *state == RM_WS_UTF8_ACCEPT. */
int rm_ws_utf8_validate(uint32_t *state, const uint8_t *p, size_t n);

/* ---- Events ------------------------------------------------------------- */

enum {
  RM_WS_NEED_MORE = 0, /* all input consumed, nothing to report */
  RM_WS_EV_HEADER,     /* decoder: a data frame begins */
  RM_WS_EV_DATA,       /* a piece of payload (decoder) or of a message (reader) */
  RM_WS_EV_FRAME_END,  /* decoder: the data frame's payload is complete */
  RM_WS_EV_MESSAGE,    /* reader: a whole message */
  RM_WS_EV_PING, RM_WS_EV_PONG, RM_WS_EV_CLOSE /* a whole, checked control frame */
};

typedef struct rm_ws_event {
  int opcode;          /* TEXT or BINARY for data (a continuation frame reports
                          its message's), else the control opcode */
  int fin;             /* HEADER/FRAME_END: this frame ends its message */
  int compressed;      /* the message was sent with RSV1 (permessage-deflate) */
  int last;            /* reader DATA: the final piece of the message */
  uint64_t frame_len;  /* payload length of the current frame on the wire */
  uint64_t frame_pos;  /* its payload bytes consumed so far (Barracuda's bytesRead) */
  const uint8_t *data; /* payload: into the caller's buffer or an internal one */
  size_t len;
  int close_code;      /* CLOSE: the code, RM_WS_CLOSE_NO_STATUS when absent */
  const char *reason;  /* CLOSE: valid UTF-8, not NUL-terminated */
  size_t reason_len;
} rm_ws_event;

/* ---- Decoder: frames ---------------------------------------------------- */

typedef struct rm_ws_decoder rm_ws_decoder;

rm_ws_decoder *rm_ws_decoder_new(const rm_ws_config *cfg);
void rm_ws_decoder_free(rm_ws_decoder *d);
/* Consumes bytes from buf[0..n) and reports the next event; *used says how
 * many were consumed. Call again with the rest until RM_WS_NEED_MORE, which
 * means everything was consumed. Payload is unmasked in place, so buf must be
 * writable; DATA points into it. Any byte count per call works, one included.
 * On a protocol error it returns the error code, and keeps returning it. After
 * a CLOSE event further bytes are RM_ECLOSED. */
int rm_ws_decode(rm_ws_decoder *d, uint8_t *buf, size_t n, size_t *used, rm_ws_event *ev);
/* Why the last error happened, for logs; NULL when there was none. */
const char *rm_ws_decoder_why(const rm_ws_decoder *d);

/* ---- Reader: messages --------------------------------------------------- */

typedef struct rm_ws_reader rm_ws_reader;

rm_ws_reader *rm_ws_reader_new(const rm_ws_config *cfg);
void rm_ws_reader_free(rm_ws_reader *r);
/* Like rm_ws_decode(), but reports MESSAGE (whole mode) or DATA pieces
 * (fragment mode: frame_pos/frame_len are the wire frame's, `last` ends the
 * message and its piece may be empty), and PING/PONG/CLOSE as soon as they
 * arrive, between fragments too. Text is checked as UTF-8 and compressed
 * messages are inflated on the way. Event data stays valid, and the part of
 * buf already passed must stay unchanged, until the next call. */
int rm_ws_read(rm_ws_reader *r, uint8_t *buf, size_t n, size_t *used, rm_ws_event *ev);
const char *rm_ws_reader_why(const rm_ws_reader *r);
/* Does the reader still refer to bytes of an earlier call's buf (fragment
 * mode: a compressed piece not inflated whole yet)? While it does, that part
 * of buf must stay; otherwise buf may be reused once every byte was passed. */
int rm_ws_reader_busy(const rm_ws_reader *r);
/* The reader's own copy of the configuration it was made with (deflate
 * points to its copy of the agreed parameters): what the same connection's
 * compressor can be made from, without a copy of its own. */
const rm_ws_config *rm_ws_reader_config(const rm_ws_reader *r);
/* Is the reader between two messages with nothing to carry over (no byte
 * of the next frame taken, no inflater context kept)? Then it may be freed,
 * or reset for another connection, and a new one would read on the same. */
int rm_ws_reader_idle(const rm_ws_reader *r);
/* Makes an idle reader as rm_ws_reader_new(cfg) would (same allocator), but
 * keeps its message buffer when that is small: a connection that is idle
 * gives its reader back, and the next one to read takes it. */
void rm_ws_reader_reset(rm_ws_reader *r, const rm_ws_config *cfg);

/* ---- Encoder ------------------------------------------------------------ */

enum { RM_WS_FIN = 1, RM_WS_RSV1 = 2 };

/* Writes a frame header; flags is RM_WS_FIN | RM_WS_RSV1 as wanted. mask is
 * NULL for an unmasked (server) frame, else the client's 4-byte key, which the
 * payload must then be masked with (rm_ws_mask at pos 0). Returns the header
 * length, or RM_EINVAL for an unknown opcode or a control frame that is
 * fragmented, compressed or longer than 125 bytes. */
int rm_ws_encode_header(uint8_t out[RM_WS_MAX_HEADER], int opcode, int flags,
                        uint64_t len, const uint8_t mask[4]);
/* A fresh random masking key for the next client frame. */
int rm_ws_new_mask(uint8_t mask[4]);
/* dst[i] = src[i] ^ key[(pos + i) % 4]; dst may equal src. pos lets a payload
 * be masked in several pieces. */
void rm_ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t pos);

/* Close frames: the payload for code and reason (code 0: an empty payload).
 * Returns its length, or RM_EINVAL for a code that may not be sent, a reason
 * over 123 bytes or not UTF-8. */
int rm_ws_close_payload(uint8_t out[RM_WS_MAX_CONTROL], int code, const char *reason, size_t reason_len);
/* Parses a received close payload as the decoder does: RM_OK,
 * RM_WS_EPROTOCOL (1 byte, forbidden code) or RM_WS_EBADDATA (reason). */
int rm_ws_close_parse(const uint8_t *p, size_t n, int *code, const char **reason, size_t *reason_len);

/* ---- permessage-deflate compressors ------------------------------------- */

/* Sending side: compresses messages as cfg->is_server's side of cfg->deflate. */
typedef struct rm_ws_deflater rm_ws_deflater;
rm_ws_deflater *rm_ws_deflater_new(const rm_ws_config *cfg);
void rm_ws_deflater_free(rm_ws_deflater *z);
/* Compresses the next piece of a message; fin ends the message (the payload
 * then lacks the final 00 00 ff ff, as RFC 7692 wants). Each piece's output
 * can be sent as one frame of a fragmented message. *out stays valid until
 * the next call. */
int rm_ws_deflate(rm_ws_deflater *z, const void *in, size_t n, int fin,
                  const uint8_t **out, size_t *out_len);

/* Receiving side: inflates in bounded chunks, never more than max_message
 * bytes per message (RM_EFULL beyond: a bomb costs one chunk of memory). */
typedef struct rm_ws_inflater rm_ws_inflater;
rm_ws_inflater *rm_ws_inflater_new(const rm_ws_config *cfg);
void rm_ws_inflater_free(rm_ws_inflater *z);
/* Hands over the next compressed piece of a message (kept by pointer until
 * rm_ws_inflate_next() reports it drained); fin marks the message's last. */
void rm_ws_inflate_input(rm_ws_inflater *z, const uint8_t *in, size_t n, int fin);
/* The next chunk of output: returns its length (> 0, or 0 with nothing left)
 * or an error. *drained says the input is used up and nothing is pending;
 * after a fin input that ends the message. */
long rm_ws_inflate_next(rm_ws_inflater *z, const uint8_t **out, int *drained);

#ifdef __cplusplus
}
#endif
#endif
