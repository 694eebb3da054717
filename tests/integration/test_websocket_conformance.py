"""WebSocket conformance, table-driven after the Autobahn TestSuite case groups
(1 framing, 2 pings/pongs, 3 reserved bits, 4 opcodes, 5 fragmentation,
6 UTF-8, 7 close, 9 limits, 12/13 permessage-deflate).

The remora echo server (examples/wschat/ws-echo.lua) is driven by an
independent client: raw frames from this file for the protocol violations,
Python's websockets for the rest. Then the remora client (wsconnect) is run
against an independent server (Python's websockets). docs/websocket.md lists
the groups and their results."""
import asyncio
import base64
import os
import select
import socket
import struct
import time
import zlib

import websockets

from lib import Remora, case, check, done, free_port, run, ROOT

ECHO = os.path.join(ROOT, "examples", "wschat", "ws-echo.lua")
TIMEOUT = 10


# ---- a raw client: exact bytes on the wire ----

class Raw:
    """A WebSocket client that sends whatever frames a case asks for."""

    def __init__(self, port, extensions=None, path="/"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        head = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, key))
        if extensions:
            head += "Sec-WebSocket-Extensions: %s\r\n" % extensions
        self.s.sendall((head + "\r\n").encode())
        self.buf = b""
        self.inflater = zlib.decompressobj(-15)   # the server's context, kept across messages
        while b"\r\n\r\n" not in self.buf:
            d = self.s.recv(4096)
            if not d:
                raise AssertionError("no answer to the upgrade")
            self.buf += d
        end = self.buf.index(b"\r\n\r\n")
        self.head, self.buf = self.buf[:end].decode(), self.buf[end + 4:]
        check(self.head.startswith("HTTP/1.1 101"), "upgrade refused: " + self.head.split("\r\n")[0])
        self.headers = {}
        for line in self.head.split("\r\n")[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()

    def send(self, *args, **kw):
        try:
            self.s.sendall(self.encode(*args, **kw))
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server may close first, as a violation asks

    @staticmethod
    def encode(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
        """The bytes of one frame."""
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload) if length is None else length
        if n < 126:
            h = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            h = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            h = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            h += key
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload)) if len(payload) < 4096 else \
                _mask_fast(payload, key)
        return h + payload

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(1 << 16)
            if not d:
                raise EOFError
            self.buf += d

    def frame(self):
        """The next frame: (fin, rsv, opcode, payload); EOFError at the end."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        check(not b1 & 0x80, "the server masked a frame")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        p, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, p

    def message(self):
        """The next data message (pongs are skipped): (opcode, payload, compressed)."""
        op, data, comp = None, b"", False
        while True:
            fin, rsv, o, p = self.frame()
            if o == 0xA:
                continue
            if o == 0x8:
                raise AssertionError("closed with %s instead of a message" % close_code(p))
            if op is None:
                op, comp = o, bool(rsv & 4)
            data += p
            if fin:
                if comp:
                    data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
                return op, data, comp

    def close_code(self):
        """Reads until the server's close frame and the end of the stream:
        the close code (None for an empty close, "eof" when none came)."""
        code = "eof"
        try:
            while True:
                fin, rsv, o, p = self.frame()
                if o == 0x8:
                    code = close_code(p)
                    break
        except (EOFError, ConnectionResetError):
            return code
        try:   # then the server ends the TCP connection
            while self.s.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
        return code

    def close(self):
        self.s.close()


def _mask_fast(payload, key):
    k = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(len(payload), "big")


def close_code(p):
    return struct.unpack("!H", p[:2])[0] if len(p) >= 2 else None


def deflate(data, z=None):
    z = z or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


# ---- the table ----
# Each row: group, name, steps. A step is ("send", opcode, payload, options),
# ("echo", opcode, payload) expecting that message back, ("pong", payload),
# or ("close", code) expecting the server's close code (and the end).

TEXT, BIN, PING, PONG, CLOSE, CONT = 1, 2, 9, 10, 8, 0
utf8 = "κόσμε-😀-€".encode()

ROWS = [
    # 1 framing
    ("1", "text_0", [("send", TEXT, b""), ("echo", TEXT, b"")]),
    ("1", "text_125", [("send", TEXT, b"*" * 125), ("echo", TEXT, b"*" * 125)]),
    ("1", "text_126", [("send", TEXT, b"*" * 126), ("echo", TEXT, b"*" * 126)]),
    ("1", "text_65535", [("send", TEXT, b"*" * 65535), ("echo", TEXT, b"*" * 65535)]),
    ("1", "text_65536", [("send", TEXT, b"*" * 65536), ("echo", TEXT, b"*" * 65536)]),
    ("1", "binary_0", [("send", BIN, b""), ("echo", BIN, b"")]),
    ("1", "binary_65536", [("send", BIN, bytes(range(256)) * 256), ("echo", BIN, bytes(range(256)) * 256)]),
    ("1", "unmasked_frame", [("send", TEXT, b"hi", {"mask": False}), ("close", 1002)]),
    # a 16-bit length for a short payload: accepted, as Autobahn expects
    ("1", "length_not_minimal", [("raw", b"\x81\xfe\x00\x05" + b"\x00" * 4 + b"hello"), ("echo", TEXT, b"hello")]),
    # 2 pings and pongs
    ("2", "ping_empty", [("send", PING, b""), ("pong", b"")]),
    ("2", "ping_125", [("send", PING, b"\xfe" * 125), ("pong", b"\xfe" * 125)]),
    ("2", "ping_126_too_long", [("send", PING, b"x" * 126), ("close", 1002)]),
    ("2", "unsolicited_pong", [("send", PONG, b"hey"), ("send", TEXT, b"after"), ("echo", TEXT, b"after")]),
    ("2", "ping_fragmented", [("send", PING, b"a", {"fin": False}), ("close", 1002)]),
    ("2", "ten_pings", [("send", PING, b"%d" % i) for i in range(10)] + [("pong", b"%d" % i) for i in range(10)]),
    # 3 reserved bits
    ("3", "rsv1_without_deflate", [("send", TEXT, b"x", {"rsv": 4}), ("close", 1002)]),
    ("3", "rsv2_text", [("send", TEXT, b"x", {"rsv": 2}), ("close", 1002)]),
    ("3", "rsv3_binary", [("send", BIN, b"x", {"rsv": 1}), ("close", 1002)]),
    ("3", "rsv_all_ping", [("send", PING, b"x", {"rsv": 7}), ("close", 1002)]),
    # 4 opcodes
    ] + [("4", "reserved_data_opcode_%d" % o, [("send", o, b"x"), ("close", 1002)]) for o in (3, 4, 5, 6, 7)] + [
    ] + [("4", "reserved_control_opcode_%X" % o, [("send", o, b""), ("close", 1002)]) for o in (0xB, 0xC, 0xD, 0xE, 0xF)] + [
    # 5 fragmentation
    ("5", "text_two_fragments", [("send", TEXT, b"frag", {"fin": False}), ("send", CONT, b"ment"),
                                 ("echo", TEXT, b"fragment")]),
    ("5", "binary_many_fragments", [("send", BIN, b"0", {"fin": False})] +
     [("send", CONT, b"%d" % i, {"fin": False}) for i in range(1, 9)] + [("send", CONT, b"9"),
                                                                          ("echo", BIN, b"0123456789")]),
    ("5", "ping_between_fragments", [("send", TEXT, b"a", {"fin": False}), ("send", PING, b"p"), ("pong", b"p"),
                                     ("send", CONT, b"b"), ("echo", TEXT, b"ab")]),
    ("5", "continuation_without_start", [("send", CONT, b"x"), ("close", 1002)]),
    ("5", "text_inside_fragmented", [("send", TEXT, b"a", {"fin": False}), ("send", TEXT, b"b"), ("close", 1002)]),
    ("5", "empty_fragments", [("send", TEXT, b"", {"fin": False}), ("send", CONT, b"", {"fin": False}),
                              ("send", CONT, b""), ("echo", TEXT, b"")]),
    # 6 UTF-8
    ("6", "valid_multibyte", [("send", TEXT, utf8), ("echo", TEXT, utf8)]),
    ("6", "valid_split_in_codepoints", [("send", TEXT, utf8[:1], {"fin": False}), ("send", CONT, utf8[1:5], {"fin": False}),
                                        ("send", CONT, utf8[5:]), ("echo", TEXT, utf8)]),
    ("6", "invalid_byte", [("send", TEXT, b"ok\xffok"), ("close", 1007)]),
    ("6", "overlong_nul", [("send", TEXT, b"\xc0\x80"), ("close", 1007)]),
    ("6", "surrogate", [("send", TEXT, b"\xed\xa0\x80"), ("close", 1007)]),
    ("6", "above_u10ffff", [("send", TEXT, b"\xf4\x90\x80\x80"), ("close", 1007)]),
    ("6", "truncated_at_end", [("send", TEXT, b"abc\xe2\x82"), ("close", 1007)]),
    ("6", "invalid_in_later_fragment", [("send", TEXT, b"abc", {"fin": False}), ("send", CONT, b"\xff", {"fin": False}),
                                        ("close", 1007)]),
    # 7 close
    ("7", "close_1000", [("send", CLOSE, struct.pack("!H", 1000)), ("close", 1000)]),
    ("7", "close_empty", [("send", CLOSE, b""), ("close", None)]),
    ("7", "close_with_reason", [("send", CLOSE, struct.pack("!H", 1001) + b"bye " * 30), ("close", 1001)]),
    ("7", "close_3000_and_4999", [("send", CLOSE, struct.pack("!H", 4999)), ("close", 4999)]),
    ("7", "close_one_byte", [("send", CLOSE, b"\x03"), ("close", 1002)]),
    ] + [("7", "close_code_%d" % c, [("send", CLOSE, struct.pack("!H", c)), ("close", 1002)])
         for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)] + [
    ("7", "close_reason_not_utf8", [("send", CLOSE, struct.pack("!H", 1000) + b"\xff"), ("close", 1007)]),
    ("7", "data_after_close_ignored", [("send", CLOSE, struct.pack("!H", 1000)), ("send", TEXT, b"late"),
                                       ("close", 1000)]),
    ("7", "close_between_fragments", [("send", TEXT, b"a", {"fin": False}), ("send", CLOSE, struct.pack("!H", 1000)),
                                      ("close", 1000)]),
]


def run_row(port, steps, extensions=None):
    c = Raw(port, extensions)
    try:
        for st in steps:
            kind = st[0]
            if kind == "send":
                opts = st[3] if len(st) > 3 else {}
                c.send(st[1], st[2], **opts)
            elif kind == "raw":
                c.s.sendall(st[1])
            elif kind == "echo":
                op, data, _ = c.message()
                check((op, data) == (st[1], st[2]), "echo differs: opcode %d, %d bytes" % (op, len(data)))
            elif kind == "pong":
                fin, rsv, op, p = c.frame()
                check(op == PONG and p == st[1], "expected pong %r, got opcode %d %r" % (st[1], op, p[:20]))
            elif kind == "close":
                code = c.close_code()
                check(code == st[1], "expected close %s, got %s" % (st[1], code))
    finally:
        c.close()


def run_table(port, rows):
    """Every row of a group; returns the failures (group, name, why)."""
    bad = []
    for group, name, steps in rows:
        try:
            run_row(port, steps)
        except Exception as e:
            bad.append("%s.%s: %s" % (group, name, e))
    return bad


echo_port = free_port()
server = Remora(path=ECHO, args=[echo_port], port=echo_port)
server.__enter__()


def group_case(group):
    def fn():
        rows = [r for r in ROWS if r[0] == group]
        bad = run_table(echo_port, rows)
        check(not bad, "%d of %d failed: %s" % (len(bad), len(rows), "; ".join(bad)))
        check(server.alive(), "the server died")
    fn.__name__ = "group_%s_%d_cases" % (group, len([r for r in ROWS if r[0] == group]))
    return fn


for g in ("1", "2", "3", "4", "5", "6", "7"):
    case(group_case(g))


@case
def group_5_and_6_in_fragment_mode():
    """The same rows against a server reading in fragment mode."""
    port = free_port()
    rows = [r for r in ROWS if r[0] in ("1", "5", "6")]
    with Remora(path=ECHO, args=[port, "fragment"], port=port) as r:
        bad = run_table(port, rows)
        check(not bad, "%d of %d failed: %s" % (len(bad), len(rows), "; ".join(bad)))
        check(r.alive(), "the server died")


# ---- 9: limits and volume ----

@case
def group_9_limits_message_and_frame_size():
    port = free_port()
    with Remora(path=ECHO, args=[port, "max_message=65536", "max_frame=65536"], port=port) as r:
        run_row(port, [("send", BIN, b"x" * 65536), ("echo", BIN, b"x" * 65536)])
        run_row(port, [("send", BIN, b"x" * 65537), ("close", 1009)])
        # a frame header announcing more than the limit is refused before any payload
        run_row(port, [("send", BIN, b"", {"length": 1 << 40}), ("close", 1009)])
        # fragments adding up past the limit
        run_row(port, [("send", TEXT, b"a" * 40000, {"fin": False}), ("send", CONT, b"a" * 40000), ("close", 1009)])
        check("closing with 1009" in r.log(), "no log line for the refused message:\n" + r.log())
        check(r.alive(), "the server died")


@case
def group_9_volume_1mib_and_1000_messages():
    async def main():
        async with websockets.connect("ws://127.0.0.1:%d/" % echo_port, max_size=1 << 24, compression=None) as ws:
            big = os.urandom(1 << 20)
            await ws.send(big)
            check(await asyncio.wait_for(ws.recv(), TIMEOUT) == big, "1 MiB binary differs")
            text = "é" * (1 << 19)
            await ws.send(text)
            check(await asyncio.wait_for(ws.recv(), TIMEOUT) == text, "1 MiB text differs")
            for i in range(1000):
                await ws.send("m%d" % i)
            for i in range(1000):
                check(await asyncio.wait_for(ws.recv(), TIMEOUT) == "m%d" % i, "message %d out of order" % i)
    asyncio.run(main())


# ---- 12/13: permessage-deflate ----

@case
def group_12_deflate_echo_with_websockets():
    async def main():
        async with websockets.connect("ws://127.0.0.1:%d/" % echo_port, max_size=1 << 24) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
            check(ext.startswith("permessage-deflate"), "deflate not negotiated: %r" % ext)
            for n in (0, 1, 64, 125, 126, 4096, 65535, 65536, 1 << 20):
                text = ("lorem ipsum %d " % n * (n // 10 + 1))[:n]
                await ws.send(text)
                check(await asyncio.wait_for(ws.recv(), TIMEOUT) == text, "text of %d differs" % n)
                data = os.urandom(n)
                await ws.send(data)
                check(await asyncio.wait_for(ws.recv(), TIMEOUT) == data, "random %d differs" % n)
    asyncio.run(main())


OFFERS = [
    ("permessage-deflate", None),
    ("permessage-deflate; client_no_context_takeover", "client_no_context_takeover"),
    ("permessage-deflate; server_no_context_takeover", "server_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=9", "server_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits", None),
    ("permessage-deflate; client_max_window_bits=10", "client_max_window_bits=10"),
]


@case
def group_13_deflate_parameters_honoured():
    """Raw offers; each answer must carry what was asked, and compressed
    messages (with and without context takeover) must echo."""
    for offer, must in OFFERS:
        c = Raw(echo_port, offer)
        try:
            ext = c.headers.get("sec-websocket-extensions", "")
            check(ext.startswith("permessage-deflate"), "offer %r declined" % offer)
            if must:
                check(must in ext, "offer %r answered %r" % (offer, ext))
            bits = 10 if "client_max_window_bits=10" in offer else 15   # our window, as agreed
            z = zlib.compressobj(6, zlib.DEFLATED, -bits)
            for i in range(3):
                msg = b"hello hello hello %d" % i
                if "client_no_context_takeover" in offer:   # we promised to start afresh
                    z = zlib.compressobj(6, zlib.DEFLATED, -bits)
                c.send(TEXT, deflate(msg, z), rsv=4)
                try:
                    op, data, comp = c.message()
                except AssertionError as e:
                    raise AssertionError("%s, offer %r, answer %r, message %d" % (e, offer, ext, i))
                check(data == msg, "compressed echo differs for %r" % offer)
                check(comp, "the server did not compress its answer for %r" % offer)
        finally:
            c.close()


@case
def group_13_deflate_declined_offers():
    for offer in ("permessage-deflate; server_max_window_bits=7", "permessage-deflate; unknown=1", "x-webkit-deflate-frame"):
        c = Raw(echo_port, offer)
        try:
            check("sec-websocket-extensions" not in c.headers, "offer %r accepted" % offer)
        finally:
            c.close()


@case
def deflate_pipelined_in_fragment_mode():
    """Compressed messages sent back to back, so that one read holds several,
    to a server in fragment mode: each inflates in many pieces while the
    bytes of the next ones wait behind it in the same input buffer."""
    port = free_port()
    with Remora(path=ECHO, args=[port, "fragment"], port=port) as r:
        c = Raw(port, "permessage-deflate")
        try:
            z = zlib.compressobj(6, zlib.DEFLATED, -15)
            msgs = [(b"%d " % i) * (9000 * (i + 1)) for i in range(5)]
            msgs = [m for big in msgs for m in (big, b"small")]
            c.s.sendall(b"".join(Raw.encode(BIN, deflate(m, z), rsv=4) for m in msgs))
            for i, m in enumerate(msgs):
                op, data, comp = c.message()
                check((op, data) == (BIN, m), "message %d differs (%d bytes, wanted %d)" % (i, len(data), len(m)))
        finally:
            c.close()
        check(r.alive(), "the server died")


@case
def group_12_deflate_bomb_corrupt_and_rsv1_on_control():
    port = free_port()
    with Remora(path=ECHO, args=[port, "max_message=1000000"], port=port) as r:
        bomb = deflate(b"\x00" * (64 << 20))   # 64 MiB of zeros in ~64 KiB
        check(len(bomb) < 100000, "the bomb is not small")
        pmd = "permessage-deflate"
        run_row(port, [("send", BIN, bomb, {"rsv": 4}), ("close", 1009)], pmd)
        run_row(port, [("send", BIN, b"\xff\xff\xff\xff garbage", {"rsv": 4}), ("close", 1007)], pmd)
        run_row(port, [("send", PING, b"", {"rsv": 4}), ("close", 1002)], pmd)
        run_row(port, [("send", TEXT, b"a", {"fin": False}), ("send", CONT, b"b", {"rsv": 4}), ("close", 1002)], pmd)
        check(r.alive() and r.rss_kb() < 200000, "the bomb cost memory: %d kB" % r.rss_kb())


# ---- the handshake ----

@case
def handshake_refusals_origin_version_and_bad_key():
    port = free_port()
    with Remora(path=ECHO, args=[port, "origin=http://good.example"], port=port) as r:
        def ask(extra, key="dGhlIHNhbXBsZSBub25jZQ==", version="13"):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n%s\r\n" % (key, version, extra)).encode())
            d = s.recv(4096).decode()
            s.close()
            return d.split("\r\n")[0], d
        status, d = ask("Origin: http://good.example\r\n")
        check(status == "HTTP/1.1 101 Switching Protocols", status)
        check("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in d, "RFC 6455 sample accept missing")
        check(ask("Origin: http://evil.example\r\n")[0].startswith("HTTP/1.1 403"), "evil origin not refused")
        check(ask("")[0].startswith("HTTP/1.1 101"), "a client without Origin (not a browser) refused")
        status, d = ask("", version="8")
        check(status.startswith("HTTP/1.1 426") and "Sec-WebSocket-Version: 13" in d, status)
        check(ask("", key="short")[0].startswith("HTTP/1.1 400"), "bad key not refused")
        check("origin not allowed" in r.log(), "no log line for the refused origin")


@case
def handshake_subprotocol_choice():
    async def main():
        async with websockets.connect("ws://127.0.0.1:%d/" % echo_port, subprotocols=["nope", "echo"]) as ws:
            check(ws.subprotocol == "echo", "subprotocol %r" % ws.subprotocol)
        async with websockets.connect("ws://127.0.0.1:%d/" % echo_port, subprotocols=["nope"]) as ws:
            check(ws.subprotocol is None, "an unsupported subprotocol was chosen")
    asyncio.run(main())


@case
def first_frame_in_the_handshake_packet():
    """A client that sends its first frame with the request: the bytes read
    past the head must not be lost."""
    s = socket.create_connection(("127.0.0.1", echo_port), timeout=TIMEOUT)
    frame = b"\x81\x82" + b"\x00\x00\x00\x00" + b"hi"
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame)
    buf = b""
    while not buf.endswith(b"\x81\x02hi"):
        d = s.recv(4096)
        check(d, "closed before the echo: %r" % buf)
        buf += d
    s.close()


# ---- the remora client against Python's websockets server ----

CLIENT = r"""
local url = arg[1]
ba.socket.event(function()
  local ws, err, status = ba.socket.wsconnect(url, {protocols = {"chat", "superchat"}, origin = "http://me.example",
                                                  headers = {["X-Token"] = "t0k"}})
  if not ws then print("connect failed", err, status) return end
  local info = ws:wsinfo()
  print("protocol", info.protocol, "deflate", info.deflate, "websocket", ws:websocket())
  ws:write("héllo", true)
  print("echo1", ws:read())
  local big = string.rep("0123456789", 100000)
  ws:write(big)
  local d, isText = ws:read()
  print("echo2", #d, d == big, isText)
  print("ping", ws:ping("abc"))
  ws:write("close-me", true)   -- the server closes with 4000
  print("after", ws:read())
  print("again", ws:read())
end)
"""

@case
def client_against_python_server():
    seen = {}

    async def handler(ws):
        seen["origin"] = ws.request_headers.get("Origin")
        seen["token"] = ws.request_headers.get("X-Token")
        seen["ext"] = ws.request_headers.get("Sec-WebSocket-Extensions")
        seen["key"] = ws.request_headers.get("Sec-WebSocket-Key")
        async for m in ws:
            if m == "close-me":
                await ws.close(4000, "done")
                return
            await ws.send(m)

    async def main():
        port = free_port()
        async with websockets.serve(handler, "127.0.0.1", port, subprotocols=["superchat"], max_size=1 << 24):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: run(CLIENT, args=["ws://127.0.0.1:%d/chat?x=1" % port]))
    code, out = asyncio.run(main())
    check(code == 0, "client exit %s:\n%s" % (code, out))
    check("protocol\tsuperchat\tdeflate\ttrue\twebsocket\ttrue" in out, out)
    check("echo1\théllo\ttrue" in out, out)
    check("echo2\t1000000\ttrue\tfalse" in out, out)
    check("ping\ttrue" in out, out)
    check("after\tnil\tsocketclosed\t4000" in out, out)
    check("again\tnil\tsocketclosed\t4000" in out, out)
    check(seen.get("origin") == "http://me.example" and seen.get("token") == "t0k", str(seen))
    check((seen.get("ext") or "").startswith("permessage-deflate"), str(seen))
    check(len(base64.b64decode(seen["key"])) == 16, "bad key %r" % seen.get("key"))


@case
def client_fresh_key_and_mask_and_refusal():
    """Two connections use different keys; masks differ per frame (checked on
    a raw server); a refused upgrade is nil, reason, status."""
    keys, masks = [], []

    def serve_raw(lst, refuse_second):
        for i in range(2):
            c, _ = lst.accept()
            c.settimeout(TIMEOUT)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(4096)
            key = [l.split(b":", 1)[1].strip() for l in buf.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
            keys.append(key)
            if refuse_second and i == 1:
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                c.close()
                continue
            import hashlib
            acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
            got = b""
            while len(masks) < 3:
                got += c.recv(4096)
                while len(got) >= 6 and len(got) >= 6 + (got[1] & 0x7F):
                    check(got[1] & 0x80, "client frame not masked")
                    n = got[1] & 0x7F
                    masks.append(got[2:6])
                    got = got[6 + n:]
            c.sendall(b"\x88\x02\x03\xe8")
            c.close()

    import threading
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    port = lst.getsockname()[1]
    t = threading.Thread(target=serve_raw, args=(lst, True), daemon=True)
    t.start()
    code, out = run(r"""
ba.socket.event(function()
  local ws = assert(ba.socket.wsconnect("ws://127.0.0.1:%d/", {deflate = false}))
  for i = 1, 3 do ws:write("same", true) end
  print("read", ws:read())
  print("second", ba.socket.wsconnect("ws://127.0.0.1:%d/"))
  print("badurl", ba.socket.wsconnect("http://x/"))
end)
""" % (port, port))
    t.join(TIMEOUT)
    lst.close()
    check(len(keys) == 2 and keys[0] != keys[1], "keys %r" % keys)
    check(len(set(masks)) == 3, "masks repeat: %r" % masks)
    check("read\tnil\tsocketclosed\t1000" in out, out)
    check("second\tnil\tthe server refused the upgrade\t403" in out, out)
    check("badurl\tnil\tinvalidurl" in out, out)


@case
def client_fragment_mode_and_automatic_pong():
    async def handler(ws):
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        await ws.send(["part1-", "part2-", "end"])   # one fragmented text message
        await ws.wait_closed()

    async def main():
        port = free_port()
        async with websockets.serve(handler, "127.0.0.1", port, compression=None):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: run(r"""
ba.socket.event(function()
  local ws = assert(ba.socket.wsconnect("ws://127.0.0.1:%d/", {fragment = true}))
  repeat
    local d, isText, got, len, last = ws:read()
    print("piece", d, isText, got, len, last)
  until last
  ws:close()
  print("closed", ws:read())
end)
""" % port))
    code, out = asyncio.run(main())
    check("piece\tpart1-\ttrue\t6\t6\tfalse" in out, out)
    check("piece\tend\ttrue\t3\t3\tfalse" in out, out)
    check("piece\t\ttrue\t0\t0\ttrue" in out, out)   # websockets ends with an empty frame
    check("closed\tnil\tsocketclosed\t1000" in out, out)


# ---- sending a message in pieces: write(data, isText, more) ----

FRAG_SERVER = r"""
local port = tonumber(arg[1])
local function read_request(s)
  local buf = ""
  repeat
    local d = s:read(10000)
    if not d then return nil end
    buf = buf .. d
  until buf:find("\r\n\r\n", 1, true)
  local e = buf:find("\r\n\r\n", 1, true)
  local headers = {}
  for name, value in buf:sub(1, e + 1):gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]-)[ \t]*\r") do headers[name] = value end
  return headers, buf:sub(e + 4)
end

local commands = {}
function commands.stream(ws, n, size, kind)
  local text = kind == "text"
  for i = 1, n do
    local piece = string.rep(string.char(97 + i % 26), size)
    assert(ws:write(piece, text, i < n))
  end
end
function commands.race(ws)
  assert(ws:write("A1", true, true))
  ba.timer(function() ws:write("B", true) end):set(10, true)
  ba.sleep(60)
  ws:ping("mid")
  assert(ws:write("A2", false, true))   -- the type of a later piece is the first's
  ba.sleep(20)
  assert(ws:write("A3"))
end
function commands.thread(ws)   -- a worker thread's pieces: never suspended, the same thread each time
  ba.thread.run(function()
    for i = 1, 3 do assert(ws:write("T" .. i, true, i < 3)) end
  end)
end
function commands.utf8(ws)
  assert(ws:write("\xc3", true, true))
  assert(ws:write("\xa9", true))
  assert(ws:write("abc\xe2", true, true))
  local ok, err = pcall(ws.write, ws, "", true)
  assert(ws:write("\x82\xac", true))
  ws:write("caught " .. tostring(not ok and err:match("UTF%-8") ~= nil), true)
end

local function serve(s)
  local headers, rest = read_request(s)
  if not headers then return end
  local ws = ba.socket.wsupgrade(s, headers, {}, rest)
  if not ws then return end
  while true do
    local cmd = ws:read()
    if not cmd then break end
    local name, a, b, c = cmd:match("^(%w+) ?(%d*) ?(%d*) ?(%w*)")
    commands[name](ws, tonumber(a), tonumber(b), c)
  end
end

ba.socket.bind(port, {intf = "127.0.0.1"}):event(function(l)
  while true do
    local c = l:accept()
    if not c then break end
    c:event(serve, "s")
  end
end)
print("ready")
"""


def frames_until_fin(c, count_fin=1):
    """Frames up to the count_fin-th that ends a data message: (fin, rsv, opcode, payload)."""
    got = []
    while count_fin:
        f = c.frame()
        got.append(f)
        if f[0] and f[2] in (TEXT, BIN, CONT):
            count_fin -= 1
    return got


@case
def sending_in_pieces_continuation_frames_and_no_interleaving():
    """Raw client: one message written in 3 pieces is TEXT + CONT + CONT, FIN on
    the last only; another coroutine's message waits for the end of the one in
    progress, while a ping may go between its frames; a worker thread writes
    pieces too; UTF-8 may be split
    across pieces; with deflate, RSV1 on the first frame only and one
    compressor stream across the frames."""
    port = free_port()
    with Remora(script=FRAG_SERVER, args=[port], port=port) as r:
        c = Raw(port)
        c.send(TEXT, b"stream 3 4 text")
        got = frames_until_fin(c)
        check(got == [(False, 0, TEXT, b"bbbb"), (False, 0, CONT, b"cccc"), (True, 0, CONT, b"dddd")], repr(got))
        c.send(TEXT, b"race")
        got = frames_until_fin(c, 2)
        check(got == [(False, 0, TEXT, b"A1"), (True, 0, PING, b"mid"), (False, 0, CONT, b"A2"),
                      (True, 0, CONT, b"A3"), (True, 0, TEXT, b"B")], repr(got))
        c.send(TEXT, b"thread")
        got = frames_until_fin(c)
        check(got == [(False, 0, TEXT, b"T1"), (False, 0, CONT, b"T2"), (True, 0, CONT, b"T3")], repr(got))
        c.send(TEXT, b"utf8")
        got = [c.message()[1] for _ in range(3)]
        check(got == ["é".encode(), "abc€".encode(), b"caught true"], repr(got))
        c.close()
        c = Raw(port, extensions="permessage-deflate")
        c.send(TEXT, b"stream 3 1000 bin")
        got = frames_until_fin(c)
        check([(f[0], f[1], f[2]) for f in got] == [(False, 4, BIN), (False, 0, CONT), (True, 0, CONT)],
              repr([(f[0], f[1], f[2], len(f[3])) for f in got]))
        data = zlib.decompressobj(-15).decompress(b"".join(f[3] for f in got) + b"\x00\x00\xff\xff")
        check(data == b"b" * 1000 + b"c" * 1000 + b"d" * 1000, "inflated %d bytes" % len(data))
        c.close()
        check(r.alive(), "the server died")


@case
def sending_in_pieces_to_websockets_and_from_the_client():
    """Python's websockets reassembles the server's pieces (deflate negotiated),
    and a websockets server echoes what remora's client wrote in pieces."""
    port = free_port()
    with Remora(script=FRAG_SERVER, args=[port], port=port):
        async def main():
            async with websockets.connect("ws://127.0.0.1:%d/" % port, max_size=1 << 24) as ws:
                ext = ws.response_headers.get("Sec-WebSocket-Extensions", "")
                check(ext.startswith("permessage-deflate"), "deflate not negotiated: %r" % ext)
                await ws.send("stream 5 3 text")
                check(await asyncio.wait_for(ws.recv(), TIMEOUT) == "bbbcccdddeeefff", "5 pieces")
                await ws.send("race")
                got = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(2)]
                check(got == ["A1A2A3", "B"], repr(got))
                await ws.send("stream 16 65536 bin")
                m = await asyncio.wait_for(ws.recv(), TIMEOUT)
                check(m == b"".join(bytes([97 + i % 26]) * 65536 for i in range(1, 17)), "1 MiB in 16 pieces")
        asyncio.run(main())

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    async def serve():
        port = free_port()
        async with websockets.serve(echo, "127.0.0.1", port, max_size=1 << 24):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, lambda: run(r"""
ba.socket.event(function()
  for _, deflate in ipairs({true, false}) do
    local ws = assert(ba.socket.wsconnect("ws://127.0.0.1:%d/", {deflate = deflate}))
    for i = 1, 4 do assert(ws:write(string.rep("é", 1000) .. i, true, i < 4)) end
    local d, isText = ws:read()
    print("echo", deflate, ws:wsinfo().deflate, #d, isText, d:sub(-1))
    ws:close()
  end
end)
""" % port))
    code, out = asyncio.run(serve())
    check("echo\ttrue\ttrue\t8004\ttrue\t4" in out, out)
    check("echo\tfalse\tfalse\t8004\ttrue\t4" in out, out)


# ---- keep-alive: a peer that answers nothing is closed ----

@case
def keepalive_silent_peer_closed_with_1001_answering_peers_stay():
    """ping=200: a ping after 200 ms without a byte from the peer; ping_timeout=300:
    a peer still silent 300 ms later is closed with 1001. One client answers pings,
    one never does but sends messages, one does neither."""
    port = free_port()
    with Remora(path=ECHO, args=[port, "ping=200", "ping_timeout=300"], port=port) as r:
        silent, answering, chatty = Raw(port), Raw(port), Raw(port)
        pings = {answering: 0, chatty: 0}
        deadline = time.monotonic() + 1.5
        next_msg = 0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_msg:
                chatty.send(TEXT, b"tick")
                next_msg = time.monotonic() + 0.15
            for c in select.select([answering.s, chatty.s], [], [], 0.05)[0]:
                c = answering if c is answering.s else chatty
                fin, rsv, op, p = c.frame()
                check(op != CLOSE, "a live peer was closed: %s" % close_code(p))
                if op == PING:
                    pings[c] += 1
                    if c is answering:
                        c.send(PONG, p)
        check(pings[answering] >= 2, "%d pings in 1.5 s of a quiet peer" % pings[answering])
        for c in (answering, chatty):
            c.send(TEXT, b"still here")
            while True:
                fin, rsv, op, p = c.frame()
                if op == TEXT and p == b"still here":
                    break
                check(op in (PING, PONG, TEXT), "unexpected frame %d" % op)
        code = "none"
        while time.monotonic() < deadline + 5 and code == "none":   # pings, then the close
            fin, rsv, op, p = silent.frame()
            code = close_code(p) if op == CLOSE else code
        check(code == 1001, "the silent peer's close code: %s" % code)
        check("no answer to a ping in 300 ms; closing with 1001" in r.log(), r.log())
        check(r.log().count("no answer to a ping") == 1, r.log())
        for c in (silent, answering, chatty):
            c.close()


server.__exit__(None, None, None)
done()
