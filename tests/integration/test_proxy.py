"""The cosocket proxy (examples/proxy/proxy.lua) in its three modes: relayed
in Lua, ba.socket.pipe with splice(2), and ba.socket.pipe with a buffer.
Byte-exact duplex transfers with a slow reader and bounded memory, 500
proxied connections at once, an upstream that is down, resets on either side
mid-stream; and examples/http-raw.lua, the static server on bare sockets.

REMORA_PROXY_BIG=bytes sets the big transfer's size (default 2 GiB, both
directions together, for the Lua and splice modes; a quarter of it for the
buffer mode, whose path the others already cover); 256 MiB under a sanitizer,
where the RSS bound is not checked."""
import asyncio
import hashlib
import os
import random
import socket
import struct
import subprocess
import tempfile
import threading
import time

from lib import Remora, case, check, done, free_port, recv_all, run, ROOT

PROXY = os.path.join(ROOT, "examples", "proxy", "proxy.lua")
HTTP_RAW = os.path.join(ROOT, "examples", "http-raw.lua")
SANITIZER = os.environ.get("REMORA_SANITIZER")   # its allocator keeps freed memory: no RSS bound then
BIG = int(os.environ.get("REMORA_PROXY_BIG", (256 << 20) if SANITIZER else (2 << 30)))
MODES = ("lua", "pipe", "buffer")
POOL = random.Random(7).randbytes(4 << 20)   # what senders take random slices of


def send_random(sock, n, seed, h):
    """Sends n bytes in random chunk sizes (1 byte to 256 KiB), hashing them."""
    rng = random.Random(seed)
    view = memoryview(POOL)
    while n > 0:
        size = min(n, rng.choice((rng.randint(1, 1500), rng.randint(1, 256 << 10))))
        off = rng.randint(0, len(POOL) - size)
        chunk = view[off:off + size]
        sock.sendall(chunk)
        h.update(chunk)
        n -= size


def recv_hash(sock, h, slow_until=0):
    """Reads to end of stream, hashing; pauses now and then while fewer than
    slow_until bytes have arrived, so queues behind this reader fill up."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    got, next_pause = 0, 16 << 20
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return got
        h.update(view[:n])
        got += n
        if got < slow_until and got >= next_pause:
            time.sleep(0.15)
            next_pause += 32 << 20


class Upstream:
    """The server behind the proxy, one thread per connection. The first byte
    a client sends picks what it does:
      E  echo until end of stream, then close
      D  duplex: 16 bytes (count, seed) follow; send count random bytes and read
         to end of stream at once, both hashed; results in self.duplex
      R  read 256 KiB, answer 64 KiB, then reset the connection
      W  read until the connection ends; how it ended goes to self.ended"""

    def __init__(self, port=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.duplex, self.ended = [], []
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            c.settimeout(60)
            getattr(self, "do_" + recv_all(c, 1).decode())(c)
        except (OSError, UnicodeDecodeError, AttributeError):
            pass
        finally:
            with self.lock:
                self.active -= 1
            c.close()

    def do_E(self, c):
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)

    def do_D(self, c):
        count, seed = struct.unpack("!QQ", recv_all(c, 16))
        out, inc = hashlib.sha256(), hashlib.sha256()
        t = threading.Thread(target=lambda: (send_random(c, count, seed, out), c.shutdown(socket.SHUT_WR)))
        t.start()
        n = recv_hash(c, inc, slow_until=count // 4)
        t.join()
        self.duplex.append((n, inc.hexdigest(), out.hexdigest()))

    def do_R(self, c):
        recv_all(c, 256 << 10)
        c.sendall(POOL[:64 << 10])
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def do_W(self, c):
        try:
            recv_all(c, None, timeout=30)
            how = "eof"
        except ConnectionResetError:
            how = "reset"
        self.ended.append(how)

    def close(self):
        self.sock.close()


def proxy(mode, upstream_port, queuelen=65536, extra=()):
    port = free_port()
    r = Remora(path=PROXY, args=[port, "127.0.0.1", upstream_port, "mode=" + mode, "queuelen=%d" % queuelen]
               + list(extra), ready="proxy on")
    r.port = port
    return r


def ends_within(sock, seconds=10):
    """Reads until the connection ends (end of stream or reset) or time runs out."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def big_duplex(mode, total):
    """total bytes through the proxy, half each way at once, random chunk
    sizes, slow readers on both ends; SHA-256 on both sides; the proxy's RSS
    sampled throughout."""
    up = Upstream()
    queuelen = 1 << 20
    half = total // 2
    with proxy(mode, up.port, queuelen) as r:
        base = r.rss_kb()
        peak, stop = [base], threading.Event()

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], r.rss_kb())
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.time()
        s = socket.create_connection(("127.0.0.1", r.port))
        s.sendall(b"D" + struct.pack("!QQ", half, 99))
        sent = hashlib.sha256()

        def upload():
            send_random(s, half, 5, sent)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=upload)
        t.start()
        got = hashlib.sha256()
        n = recv_hash(s, got, slow_until=half // 4)
        t.join()
        s.close()
        stop.set()
        sampler.join()
        deadline = time.time() + 10
        while not up.duplex and time.time() < deadline:
            time.sleep(0.02)
        check(up.duplex, "upstream never finished")
        up_n, up_in, up_out = up.duplex[0]
        check(up_n == half and up_in == sent.hexdigest(), "client to upstream: %d of %d bytes, hash %s" % (
            up_n, half, "equal" if up_in == sent.hexdigest() else "differs"))
        check(n == half and got.hexdigest() == up_out, "upstream to client: %d of %d bytes, hash %s" % (
            n, half, "equal" if got.hexdigest() == up_out else "differs"))
        # Two directions, each at most its bound in flight plus one read chunk,
        # plus a constant for the allocator and Lua's garbage.
        growth = (peak[0] - base) * 1024
        allowed = 2 * (queuelen + 65536) + (8 << 20)
        print("# %s: %d MiB each way in %.1f s, RSS grew %d KiB (allowed %d KiB)" % (
            mode, half >> 20, time.time() - started, growth >> 10, allowed >> 10), flush=True)
        check(SANITIZER or growth <= allowed, "RSS grew %d KiB, allowed %d KiB" % (growth >> 10, allowed >> 10))
        check(r.alive(), "proxy died")
    up.close()


def big_lua():
    big_duplex("lua", BIG)


def big_pipe():
    big_duplex("pipe", BIG)


def big_buffer():
    big_duplex("buffer", BIG // 4)


for fn in (big_lua, big_pipe, big_buffer):
    fn.__name__ = "duplex_%dMiB_slow_readers_sha256_bounded_rss_%s" % (
        (BIG if fn is not big_buffer else BIG // 4) >> 20, fn.__name__[4:])
    case(fn)


def concurrent_500(mode):
    up = Upstream()
    with proxy(mode, up.port) as r:
        async def main():
            conns = []
            for i in range(500):
                reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
                writer.write(b"E")
                conns.append((reader, writer))
            deadline = time.time() + 20
            while up.active < 500 and time.time() < deadline:   # every pair is open at once
                await asyncio.sleep(0.02)

            async def one(i, reader, writer):
                payload = random.Random(i).randbytes(1 + (i * 7919) % 65536)
                writer.write(payload)
                writer.write_eof()   # the echo server answers everything, then ends
                got = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                return got == payload
            return await asyncio.gather(*(one(i, rd, wr) for i, (rd, wr) in enumerate(conns)))
        results = asyncio.run(main())
        check(up.peak >= 500, "only %d upstream connections were open at once" % up.peak)
        check(all(results), "%d of 500 echoes differ" % results.count(False))
        check(r.alive(), "proxy died")
    up.close()


def upstream_down(mode):
    port = free_port()   # nothing listens there yet
    with proxy(mode, port) as r:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", r.port))
            check(ends_within(s), "client not closed while the upstream is down")
            s.close()
        check("cannotconnect" in r.log(), "no log line for the refused upstream")
        up = Upstream(port)   # once it is up, the same proxy serves
        s = socket.create_connection(("127.0.0.1", r.port))
        s.sendall(b"Ehello")
        s.shutdown(socket.SHUT_WR)
        check(recv_all(s) == b"hello", "no echo once the upstream is up")
        s.close()
        check(r.alive(), "proxy died")
        up.close()


def with_bystander(r, fn):
    """Runs fn while another proxied connection streams an echo; that one must
    come through byte-exact."""
    s = socket.create_connection(("127.0.0.1", r.port))
    s.sendall(b"E")
    payload = random.Random(3).randbytes(8 << 20)
    got = []
    t = threading.Thread(target=lambda: got.append(recv_all(s, len(payload) + 1, timeout=30)))
    t.start()
    s.sendall(payload[:4 << 20])
    fn()
    s.sendall(payload[4 << 20:])
    s.shutdown(socket.SHUT_WR)
    t.join()
    s.close()
    check(got and got[0] == payload, "the other connection was harmed")


def upstream_reset(mode):
    up = Upstream()
    with proxy(mode, up.port) as r:
        def reset_one():
            s = socket.create_connection(("127.0.0.1", r.port))
            s.sendall(b"R" + POOL[:256 << 10])
            check(ends_within(s), "client not closed after the upstream reset")
            s.close()
        with_bystander(r, reset_one)
        check(r.alive(), "proxy died")
    up.close()


def client_reset(mode):
    up = Upstream()
    with proxy(mode, up.port) as r:
        def reset_one():
            s = socket.create_connection(("127.0.0.1", r.port))
            s.sendall(b"W" + POOL[:1 << 20])
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            deadline = time.time() + 10
            while not up.ended and time.time() < deadline:
                time.sleep(0.02)
            check(up.ended, "the upstream side stayed open after the client reset")
        with_bystander(r, reset_one)
        check(r.alive(), "proxy died")
    up.close()


PIPE_API = r"""
local l = assert(ba.socket.bind(0, {intf = "127.0.0.1"}))
local _, port = l:sockname()
ba.socket.event(function(a1)
  ba.socket.connect("127.0.0.1", port)
  local a2 = l:accept()
  local b1 = ba.socket.connect("127.0.0.1", port)
  local b2 = l:accept()
  print("self", pcall(ba.socket.pipe, a2, a2))
  local c = ba.socket.connect("127.0.0.1", port)
  l:accept():close()
  c:close()
  print("closed", ba.socket.pipe(c, a2))
  a2:write("queued first ")   -- before the pipe: it must arrive first
  ba.socket.event(function() print("counts", ba.socket.pipe(a2, b2, {splice = arg[1] == "pipe"})) end)
  print("state", a2:state(), a2:read(10))
  a1:write("hello")
  print("b1", b1:read(2000))
  b1:write("world")
  print("a1", a1:read(2000), a1:read(2000))
  a1:shutdown()
  print("b1 end", b1:read(2000))
  l:close()
end)
"""


@case
def pipe_api_counts_half_closes_and_misuse():
    for mode in ("pipe", "buffer"):
        code, out = run(PIPE_API, args=[mode])
        check(code == 0, "exit %s: %s" % (code, out))
        lines = [ln for ln in out.splitlines() if " remora " not in ln]
        expect = ["self\tfalse", "closed\tnil\tsocketclosed", "state\tterminated\tnil\tsocketclosed",
                  "b1\thello", "a1\tqueued first \tworld", "b1 end\tnil\tsocketclosed", "counts\t5\t5"]
        for want, got in zip(expect, lines):
            check(got.startswith(want), "%s: expected %r, got %r\n%s" % (mode, want, got, out))
        check(len(lines) == len(expect), "%s: output %r" % (mode, out))


@case
def http_raw_serves_files_and_refuses_the_rest():
    with tempfile.TemporaryDirectory() as d:
        big = random.Random(11).randbytes(5 << 20)
        os.mkdir(os.path.join(d, "sub"))
        for name, data in (("index.html", b"<h1>hi</h1>"), ("big.bin", big), (".secret", b"no"),
                           ("sub/a b.txt", b"spaced"), ("empty.txt", b"")):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        with open(os.path.join(os.path.dirname(d), "outside-%d.txt" % os.getpid()), "wb") as f:
            outside = f.name
            f.write(b"outside")
        port = free_port()
        try:
            with Remora(path=HTTP_RAW, args=[port, d], ready="http-raw on") as r:
                base = "http://127.0.0.1:%d" % port

                def curl(*args):
                    out = subprocess.run(["curl", "-s", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}",
                                          "--path-as-is"] + list(args), capture_output=True, timeout=30).stdout
                    body, _, code = out.rpartition(b"\n")
                    return int(code), body
                check(curl(base + "/") == (200, b"<h1>hi</h1>"), "index")
                check(curl(base + "/sub/a%20b.txt") == (200, b"spaced"), "percent-decoded name")
                check(curl(base + "/empty.txt") == (200, b""), "empty file")
                for bad in ("/nope", "/.secret", "/sub", "/../" + os.path.basename(outside),
                            "/%2e%2e/" + os.path.basename(outside), "/sub/%2E%2E/.secret"):
                    check(curl(base + bad)[0] == 404, "%s was not refused" % bad)
                check(curl("-X", "POST", base + "/index.html")[0] == 405, "POST")
                head = subprocess.run(["curl", "-sI", base + "/big.bin"], capture_output=True, timeout=30).stdout
                check(b"Content-Length: %d" % len(big) in head, "HEAD length")
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"nonsense\r\n\r\n")
                check(recv_all(s).startswith(b"HTTP/1.1 400 "), "garbage request line")
                s.close()
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /" + b"x" * 20000)
                check(recv_all(s).startswith(b"HTTP/1.1 431 "), "oversized head")
                s.close()
                procs = [subprocess.Popen(["curl", "-s", "--max-time", "30", base + "/big.bin"],
                                          stdout=subprocess.PIPE) for _ in range(20)]
                bodies = [p.communicate(timeout=60)[0] for p in procs]
                check(all(b == big for b in bodies), "%d of 20 concurrent downloads differ" %
                      sum(b != big for b in bodies))
                check(r.alive(), "server died")
        finally:
            os.unlink(outside)


def idle(mode):
    """idle=400: a pair silent both ways is closed; one that trickles past
    that time in one direction only is not."""
    up = Upstream()
    with proxy(mode, up.port, extra=["idle=400"]) as r:
        quiet = socket.create_connection(("127.0.0.1", r.port))
        quiet.sendall(b"Eping")
        check(recv_all(quiet, 4) == b"ping", "no echo")
        busy = socket.create_connection(("127.0.0.1", r.port))
        busy.sendall(b"W")
        for _ in range(12):   # 1.2 s of one byte per 100 ms, upstream silent
            busy.sendall(b".")
            time.sleep(0.1)
        check(ends_within(quiet, 5), "the silent pair stayed open")
        quiet.close()
        busy.settimeout(0.2)
        try:
            check(busy.recv(1) != b"", "the trickling pair was closed")
        except socket.timeout:
            pass
        busy.close()
        check(r.alive(), "proxy died")
    up.close()


for test in (concurrent_500, upstream_down, upstream_reset, client_reset, idle):
    for mode in MODES:
        def run_mode(test=test, mode=mode):
            test(mode)
        run_mode.__name__ = "%s_%s" % (test.__name__, mode)
        case(run_mode)


done()
