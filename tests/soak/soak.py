"""The soak run (make soak SOAK_SECONDS=N): one remora serving HTTP (static
files and a page), WebSocket echo, and a cosocket proxy in front of an echo
server, all on loopback, while clients of every kind run for N seconds:

  - keep-alive HTTP clients fetching a file and a page, bodies checked;
  - WebSocket clients sending random messages, each echo checked byte for byte;
  - proxy clients pushing random streams through the proxy, SHA-256 checked;
  - slow clients dribbling request heads (cut at the header timeout) and
    slow readers of a big file (read to the end, checked);
  - every few seconds a client that vanishes mid-request (reset).

Each client counts what it checked; any mismatch, any unexpected error, or
remora dying ends the run with status 1. At the end the clients stop, the
server idles, and its RSS must come back to within 10% (+4 MiB) of what it was
after warm-up. Prints one line of totals.
"""
import asyncio
import hashlib
import os
import random
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lib import Remora, free_port  # noqa: E402

import websockets  # noqa: E402  (python3-websockets)

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
ROOT = os.environ.get("REMORA_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# The site: a static file, a big one, a page, and a WebSocket echo page.
BIG = os.urandom(2 << 20)
SITE = {
    "a.txt": b"alpha\n" * 100,
    "big.bin": BIG,
    "hello.lsp": b"<?lsp print('hello ' .. (request:data('n') or '')) ?>",
    "ws.lsp": b"""<?lsp
local s = ba.socket.req2sock(request)
if not s then return end
s:event(function(s)
  while true do
    local d, text = s:read()
    if not d then break end
    s:write(d, text)
  end
end, "s")
?>""",
}

ECHO_UPSTREAM = """
local l = assert(ba.socket.bind(tonumber(arg[1]), {intf = "127.0.0.1"}))
ba.socket.event(function()
  while true do
    local s = l:accept()
    if not s then break end
    s:event(function(s)
      while true do
        local d = s:read()
        if not d or not s:write(d) then break end
      end
    end, "s")
  end
end)
print("ready")
"""

stats = {"http": 0, "ws": 0, "proxy_bytes": 0, "slow_cut": 0, "slow_read": 0, "resets": 0}


class Failure(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failure(what)


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += data[:-2]
    else:
        body = await reader.readexactly(length)
    return status, body


async def http_client(port, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while not stop.is_set():
        n += 1
        if n % 2:
            writer.write(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = await read_response(reader)
            expect(status == 200 and body == SITE["a.txt"], "a.txt: %d" % status)
        else:
            writer.write(b"GET /hello.lsp?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            status, body = await read_response(reader)
            expect(status == 200 and body == b"hello %d" % n, "hello.lsp: %d %r" % (status, body[:40]))
        stats["http"] += 1
    writer.close()


async def ws_client(port, stop):
    async with websockets.connect("ws://127.0.0.1:%d/ws.lsp" % port, max_size=1 << 22) as ws:
        while not stop.is_set():
            msg = os.urandom(random.choice([1, 100, 5000, 70000]))
            await ws.send(msg)
            expect(await ws.recv() == msg, "websocket echo differs")
            stats["ws"] += 1


async def proxy_client(port, stop):
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        total = random.choice([1 << 10, 1 << 16, 1 << 20, 4 << 20])
        sent, got = hashlib.sha256(), hashlib.sha256()

        async def send():
            left = total
            while left:
                block = os.urandom(min(left, 65536))
                sent.update(block)
                writer.write(block)
                await writer.drain()
                left -= len(block)

        async def recv():
            left = total
            while left:
                d = await reader.read(min(left, 65536))
                expect(d, "proxy stream ended early")
                got.update(d)
                left -= len(d)

        await asyncio.gather(send(), recv())
        expect(sent.digest() == got.digest(), "proxy stream differs")
        stats["proxy_bytes"] += total
        writer.close()


async def slow_header_client(port, stop):
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a.txt HTTP/1.1\r\n")
        try:
            while True:   # one byte a second until the server cuts us
                writer.write(b"X")
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(100), 1)
                    expect(data == b"" or data.startswith(b"HTTP/1.1 408"), "slow head got %r" % data[:40])
                    break
                except asyncio.TimeoutError:
                    pass
        except ConnectionError:
            pass
        stats["slow_cut"] += 1
        writer.close()


async def slow_reader(port, stop):
    while not stop.is_set():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        expect(b" 200 " in head, "big.bin head")
        body = b""
        while len(body) < len(BIG):
            body += await reader.read(16384)
            await asyncio.sleep(0.01)
        expect(body == BIG, "big.bin differs")
        stats["slow_read"] += 1
        writer.close()


async def resetter(port, stop):
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        stats["resets"] += 1
        await asyncio.sleep(2)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(server, http_port, proxy_port, seconds):
    stop = asyncio.Event()
    tasks = [http_client(http_port, stop) for _ in range(8)]
    tasks += [ws_client(http_port, stop) for _ in range(4)]
    tasks += [proxy_client(proxy_port, stop) for _ in range(4)]
    tasks += [slow_header_client(http_port, stop) for _ in range(50)]
    tasks += [slow_reader(http_port, stop) for _ in range(2)]
    tasks += [resetter(http_port, stop)]

    async def watch():
        end = time.time() + seconds
        while time.time() < end:
            expect(server.poll() is None, "remora died")
            await asyncio.sleep(1)
        stop.set()

    await asyncio.gather(watch(), *tasks)


def main():
    root = tempfile.mkdtemp(prefix="remora-soak-")
    for name, data in SITE.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    http_port, proxy_port, echo_port = free_port(), free_port(), free_port()
    upstream = Remora(ECHO_UPSTREAM, args=[echo_port], ready="ready").__enter__()
    proxy = Remora(path=os.path.join(ROOT, "examples", "proxy", "proxy.lua"),
                   args=[proxy_port, "127.0.0.1", echo_port], port=proxy_port).__enter__()
    server = Remora(path="-l", args=["127.0.0.1:%d" % http_port, root, "--header-timeout", "3000"],
                    ready="serving").__enter__()
    rc = 0
    try:
        asyncio.run(run(server.proc, http_port, proxy_port, max(5, SECONDS // 10)))   # warm-up
        time.sleep(4)
        base = {"server": rss_kb(server.proc.pid), "proxy": rss_kb(proxy.proc.pid)}
        stats.update(dict.fromkeys(stats, 0))
        t0 = time.time()
        asyncio.run(run(server.proc, http_port, proxy_port, SECONDS))
    except Exception as e:   # a mismatch, an unexpected error, or a death
        print("FAIL soak: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
    time.sleep(5)   # slow clients cut, lingering closes done
    after = {"server": rss_kb(server.proc.pid), "proxy": rss_kb(proxy.proc.pid)}
    elapsed = time.time() - t0
    for name in base:
        if after[name] > base[name] * 1.1 + 4096:
            print("FAIL soak: %s RSS %d KiB after, %d KiB before" % (name, after[name], base[name]))
            rc = 1
    for r in (server, proxy, upstream):
        r.stop()
        if "remora error" in r.log() and "sysshutdown" not in r.log():
            errors = [line for line in r.log().splitlines() if "remora error" in line]
            print("# errors logged: %s" % errors[:5])
    print("soak %.0f s: %d HTTP requests, %d WebSocket echoes, %d MiB through the proxy, %d slow heads cut, "
          "%d slow downloads, %d resets; RSS server %d -> %d KiB, proxy %d -> %d KiB" % (
              elapsed, stats["http"], stats["ws"], stats["proxy_bytes"] >> 20, stats["slow_cut"],
              stats["slow_read"], stats["resets"], base["server"], after["server"], base["proxy"], after["proxy"]))
    print("ok soak" if rc == 0 else "FAIL soak")
    sys.exit(rc)


if __name__ == "__main__":
    main()
