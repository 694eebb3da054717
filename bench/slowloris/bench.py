"""Issue 11's slowloris figure: keep-alive throughput of a small static file
with wrk alone, then beside 2,000 clients that send a request line and then
one header byte a second, remora against nginx in the same run. The figure
is the share of the alone throughput kept beside them, judged on the
server's CPU time per request (what throughput is when the server is the
bottleneck, and what other load on a shared machine disturbs least).
The suite (tests/integration/test_reliability.py) checks the cut at the
header timeout; this measures the target. Rows on stdout (bench/README.md)."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness as h  # noqa: E402

SLOW = int(os.environ.get("BENCH_SLOW_CLIENTS", "2000"))
CONNS = 8             # wrk connections
KEPT = 90.0           # % of the alone throughput to keep (issue 11)
HEADER_TIMEOUT = 300  # s: past the measurement, so no cut falls inside it


class Dribblers:
    """SLOW connections, each sent a request line at once and one header byte
    a second from one thread until stopped."""

    def __init__(self, port):
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(SLOW)]
        for s in self.socks:
            s.setblocking(False)
            s.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(1.0):
            for s in self.socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass   # cut: the server's right; counted by the suite, not here

    def close(self):
        self.done.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def site():
    d = h.tmpdir("slowloris-site")
    os.chmod(d, 0o755)   # nginx's worker runs as nobody
    with open(os.path.join(d, "a.txt"), "w") as f:
        f.write("alpha\n")
    return d


def cost(srv, url):
    """Server CPU seconds per request over h.RUNS quiet wrk runs (the best)."""
    best, cmd = None, None
    for _ in range(h.RUNS):
        res, ticks, other, quiet = h.quiet_run(lambda: h.wrk(url, CONNS), [srv])
        c = ticks[0] / h.TICK / max(res["requests"], 1)
        h.log("%s: %.0f req/s, %.1f us CPU/request, other %.2f cores" % (url, res["rps"], c * 1e6, other))
        best, cmd = (c, res["cmd"]) if best is None or c < best else (best, cmd)
    return best, cmd


def kept(srv, port, url):
    """(% kept, cost alone, cost beside, wrk command) for one server."""
    h.wrk(url, CONNS, seconds=1)   # warm-up
    alone, cmd = cost(srv, url)
    slow = Dribblers(port)
    try:
        time.sleep(2)   # all accepted and read once
        beside, _ = cost(srv, url)
    finally:
        slow.close()
    return 100.0 * alone / beside, alone, beside, cmd


def main():
    root = site()
    rport, nport = h.free_port(), h.free_port()
    nginx_conf = "root %s;\n  client_header_timeout %ds;" % (root, HEADER_TIMEOUT)
    with h.remora_http("remora-slowloris", rport, root, "--max-conns", "5000",
                       "--header-timeout", str(HEADER_TIMEOUT * 1000)) as rem, \
            h.nginx("nginx-slowloris", nport, nginx_conf, modules=()) as ngx:
        r = kept(rem, rport, "http://127.0.0.1:%d/a.txt" % rport)
        n = kept(ngx, nport, "http://127.0.0.1:%d/a.txt" % nport)
        h.emit(h.row("static 6 B file beside %d slowloris clients, throughput kept" % SLOW,
                     "% of alone", [r[0]], [n[0]], "nginx", None, limit=KEPT,
                     commands=[rem.command, ngx.command, r[3], n[3]],
                     note="server CPU per request alone/beside: remora %.1f/%.1f us, nginx %.1f/%.1f us"
                     % (r[1] * 1e6, r[2] * 1e6, n[1] * 1e6, n[2] * 1e6)))


if __name__ == "__main__":
    main()
