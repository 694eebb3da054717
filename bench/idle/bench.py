"""Workload 7: as many idle WebSocket connections as one process may hold
(19,000 under the 20,000 descriptor hard limit), all held by one dispatcher:
resident memory per connection, remora (an LSP page calling
ba.socket.req2sock) against node with ws. The client here opens them from
several 127.0.0.x source addresses, checks an echo on a sample, and reads the
server's RSS before and after. Rows on stdout (bench/README.md)."""
import base64
import os
import selectors
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import harness as h  # noqa: E402

CONNS = int(os.environ.get("BENCH_IDLE_CONNS", "19000"))
SOURCES = ["127.0.0.%d" % i for i in range(2, 6)]
IN_FLIGHT = 256      # handshakes outstanding at once: stays under the listen backlog
SAMPLE = 100         # connections whose echo is checked
LIMIT_KIB = 2.0


def upgrade_request(path, port):
    key = base64.b64encode(os.urandom(16)).decode()
    return ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, port, key)).encode()


def open_all(port, path, n):
    """n WebSocket connections, handshaken; raises if one is refused."""
    sel = selectors.DefaultSelector()
    done, pending, started = [], 0, 0
    deadline = time.time() + 120
    while len(done) < n:
        while pending < IN_FLIGHT and started < n:
            s = socket.socket()
            s.bind((SOURCES[started % len(SOURCES)], 0))
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, [b"", False])
            started += 1
            pending += 1
        if time.time() > deadline:
            raise RuntimeError("only %d of %d connections upgraded in time" % (len(done), n))
        for key, ev in sel.select(timeout=1):
            s, st = key.fileobj, key.data
            if not st[1]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError("connect failed after %d connections: %s" % (len(done), os.strerror(err)))
                s.send(upgrade_request(path, port))
                st[1] = True
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            data = s.recv(4096)
            if not data:
                raise RuntimeError("server closed connection %d during the handshake" % len(done))
            st[0] += data
            if b"\r\n\r\n" in st[0]:
                if not st[0].startswith(b"HTTP/1.1 101"):
                    raise RuntimeError("upgrade refused: %r" % st[0][:200])
                sel.unregister(s)
                done.append(s)
                pending -= 1
    sel.close()
    return done


def frame(payload):
    """A masked text frame, as a client must send it."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def check_echo(socks):
    for i, s in enumerate(socks[:: max(1, len(socks) // SAMPLE)]):
        msg = ("hello %d" % i).encode()
        s.setblocking(True)
        s.settimeout(10)
        s.sendall(frame(msg))
        want = bytes([0x81, len(msg)]) + msg
        got = b""
        while len(got) < len(want):
            d = s.recv(len(want) - len(got))
            if not d:
                raise RuntimeError("connection closed instead of echoing")
            got += d
        if got != want:
            raise RuntimeError("echo %r, wanted %r" % (got, want))


def hold(srv, port, path):
    """Opens CONNS connections to srv: (KiB per connection, RSS before, after)."""
    time.sleep(0.5)
    before = srv.rss_kib()
    socks = open_all(port, path, CONNS)
    time.sleep(2)   # let the server settle (node's GC, remora's queues)
    after = srv.rss_kib()
    check_echo(socks)
    for s in socks:
        s.close()
    return (after - before) / CONNS, before, after


def remora_server(port):
    d = h.tmpdir("idle-app")
    with open(os.path.join(HERE, "ws.lsp")) as src, open(os.path.join(d, "ws.lsp"), "w") as dst:
        dst.write(src.read())
    return h.remora_http("remora-idle", port, d, "--max-conns", CONNS + 100), "/ws.lsp"


def node_server(port):
    return h.Server("node-ws", ["node", os.path.join(HERE, "node-ws.js"), port], port), "/"


def main():
    h.raise_fd_limit()
    os.sched_setaffinity(0, {int(h.CLIENT_CPU)})
    figures, cmds, absolute = {"remora": [], "node ws": []}, {}, {}
    for i in range(h.RUNS):
        for label, start in (("remora", remora_server), ("node ws", node_server)):
            port = h.free_port()
            srv, path = start(port)
            with srv:
                per, before, after = hold(srv, port, path)
            h.log("%s run %d: %d connections, RSS %d -> %d KiB, %.2f KiB each"
                  % (label, i + 1, CONNS, before, after, per))
            figures[label].append(per)
            cmds[label] = srv.command
            absolute[label] = after
    h.emit(h.row("idle WebSocket connections (%d), RSS each" % CONNS, "KiB/conn", figures["remora"],
                 figures["node ws"], "node ws", None, higher_is_better=False, limit=LIMIT_KIB,
                 target_text="<= %.0f KiB/conn" % LIMIT_KIB,
                 commands=[cmds["remora"], cmds["node ws"],
                           "python3 bench/idle/bench.py (client: %d connections from %s, pinned to core %s)"
                           % (CONNS, ", ".join(SOURCES), h.CLIENT_CPU)],
                 note="RSS at %d connections: remora %d KiB, node ws %d KiB (last run)"
                 % (CONNS, absolute["remora"], absolute["node ws"])))


if __name__ == "__main__":
    main()
