"""Faults and limits, each pushed past its edge: fd exhaustion, Lua out of
memory, Lua errors in a timer, a cosocket and a thread job, SIGPIPE, SIGTERM
with requests in flight, a write queue between a fast writer and a slow
reader, slowloris beside wrk, the keep-alive and body timeouts, the size
limits at N and N+1, and paths that try to leave the document root.
docs/reliability.md lists what each case proves."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import lib
from lib import Remora, case, check, done, free_port, recv_all
from test_http import Conn, make_site, remove_site, serve

SANITIZER = os.environ.get("REMORA_SANITIZER")


def limited(nofile, script, args=(), **kw):
    """remora under `prlimit --nofile=N`; returns (Remora, script file to remove)."""
    fd, path = tempfile.mkstemp(suffix=".lua")
    os.write(fd, script.encode())
    os.close(fd)
    real, lib.BIN = lib.BIN, "prlimit"
    try:
        return Remora(path="--nofile=%d:%d" % (nofile, nofile), args=[real, path] + list(args), **kw), path
    finally:
        lib.BIN = real


ECHO = """
local port = tonumber(arg[1])
local function echo(s)
  while true do
    local d = s:read()
    if not d then break end
    if d:find("hog", 1, true) then   -- this connection wants all the memory
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("m", 64) .. i end
    end
    s:write(d)
  end
end
local l = assert(ba.socket.bind(port, {intf = "127.0.0.1"}))
ba.socket.event(function()
  while true do
    local s = l:accept()
    if not s then break end
    s:event(echo, "s")
  end
end)
print("ready")
"""


def echo_ok(port, msg=b"ping"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(msg)
        return recv_all(s, len(msg)) == msg


@case
def fd_exhaustion_pauses_accept_and_recovers():
    port = free_port()
    r, script = limited(48, ECHO, args=[port], ready="ready")
    with r:
        held = []
        for _ in range(80):   # past the limit: the kernel's backlog holds the rest
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for s in held[:20]:
            s.sendall(b"x")
        deadline = time.time() + 10
        while "accepting paused" not in r.log() and time.time() < deadline:
            time.sleep(0.05)
        check("accepting paused" in r.log(), "the pause is logged:\n" + r.log())
        check(r.alive(), "alive at the limit")
        for s in held:
            s.close()
        time.sleep(0.3)   # the listener retries every 100 ms
        check(all(echo_ok(port) for _ in range(5)), "accepts again once fds are free")
        check(r.log().count("accepting paused") == 1, "logged once, not per retry:\n" + r.log())
    os.unlink(script)


@case
def lua_out_of_memory_fails_one_coroutine():
    port = free_port()
    with Remora(ECHO, args=[port], ready="ready", env={"REMORA_LUA_MEMORY": "24m"}) as r:
        bystander = socket.create_connection(("127.0.0.1", port), timeout=10)
        bystander.sendall(b"before")
        check(recv_all(bystander, 6) == b"before", "bystander works")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as hog:
            hog.sendall(b"hog")
            check(recv_all(hog, None, timeout=30) == b"", "the hog's socket is closed")
        log = r.log()
        check("not enough memory" in log and "stack traceback" in log, log[-2000:])
        bystander.sendall(b"after")
        check(recv_all(bystander, 5) == b"after", "the other connection lives")
        check(echo_ok(port), "new connections work")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as hog:   # and again
            hog.sendall(b"hog")
            recv_all(hog, None, timeout=30)
        check(echo_ok(port) and r.alive(), "the server lives after a second one")
        bystander.close()


@case
def lua_errors_in_a_timer_a_cosocket_and_a_thread_job():
    port = free_port()
    script = ECHO + """
ba.timer(function() error("boom in timer") end):set(10)
ba.socket.event(function() ba.sleep(10); error("boom in cosocket") end)
ba.thread.run(function() error("boom in job") end)
local ticks = 0
ba.timer(function() ticks = ticks + 1; if ticks == 20 then print("timer still ticks") end; return ticks < 20 end):set(20)
ba.thread.run(function() ba.sleep(50); print("other job done") end)
"""
    with Remora(script, args=[port], ready="ready") as r:
        deadline = time.time() + 10
        while "timer still ticks" not in r.log() and time.time() < deadline:
            time.sleep(0.05)
        log = r.log()
        for what in ("boom in timer", "boom in cosocket", "boom in job"):
            m = re.search(r"remora error: [^\n]*%s\nstack traceback:\n" % what, log)
            check(m, "%s logged with a traceback:\n%s" % (what, log))
        check("timer still ticks" in log and "other job done" in log, "the other units ran:\n" + log)
        check(echo_ok(port), "sockets still served")


WRITER = """
local port, total, qlen = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3])
-- A deterministic stream the reader can check: block i is 64 KiB of byte (i % 251).
local function block(i) return string.rep(string.char(i % 251), 65536) end
local l = assert(ba.socket.bind(port, {intf = "127.0.0.1"}))
ba.socket.event(function()
  while true do
    local s = l:accept()
    if not s then break end
    s:queuelen(qlen)
    s:event(function(s)
      for i = 0, total // 65536 - 1 do
        if not s:write(block(i)) then print("write failed at block " .. i) return end
      end
      print("all written")
    end, "s")
  end
end)
print("ready")
"""


def check_stream(data, total):
    check(len(data) == total, "got %d of %d bytes" % (len(data), total))
    for i in range(0, total, 65536):
        b = (i // 65536) % 251
        if data[i:i + 65536] != bytes([b]) * 65536:
            raise AssertionError("block %d differs" % (i // 65536))


@case
def write_queue_bound_fast_writer_slow_reader():
    port, total, qlen = free_port(), 64 << 20, 256 << 10
    with Remora(WRITER, args=[port, total, qlen], ready="ready") as r:
        time.sleep(0.2)
        base = r.rss_kb()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        peak, got = 0, []
        for _ in range(10):   # slow: a trickle while the writer wants 64 MiB out
            got.append(s.recv(4096))
            time.sleep(0.1)
            peak = max(peak, r.rss_kb())
        check("all written" not in r.log(), "the writer waits for the reader")
        while sum(map(len, got)) < total:   # now fast: every byte must arrive in order
            d = s.recv(1 << 20)
            if not d:
                break
            got.append(d)
            peak = max(peak, r.rss_kb())
        s.close()
        check_stream(b"".join(got), total)
        # The bound plus a block in flight, Lua's garbage and the allocator's slack.
        allowed = qlen // 1024 + 8 * 1024
        print("# write queue: RSS %d KiB at rest, peak %d KiB (+%d, allowed +%d) for %d MiB" % (
            base, peak, peak - base, allowed, total >> 20))
        if not SANITIZER:   # ASan's quarantine keeps freed blocks: no bound to check there
            check(peak - base <= allowed, "RSS grew %d KiB, allowed %d KiB" % (peak - base, allowed))


@case
def sigpipe_peers_that_vanish_while_we_write():
    port, total = free_port(), 8 << 20
    with Remora(WRITER, args=[port, total, 1 << 20], ready="ready") as r:
        for i in range(20):   # read a little, then reset (SO_LINGER 0) or close
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.recv(1000)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        time.sleep(0.3)
        check(r.alive(), "SIGPIPE did not kill it")
        check("write failed" in r.log(), "the writers heard of it:\n" + r.log()[-1000:])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            check_stream(recv_all(s, total, timeout=30), total)


@case
def sigterm_lets_requests_in_flight_finish():
    big = os.urandom(4 << 20)
    root = make_site({"big.bin": big, "slow.lsp": "<?lsp ba.sleep(400) ?>slept"})
    with serve(root) as srv:
        page = Conn(srv.port)
        page.send("GET /slow.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        dl = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        dl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        dl.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        first = dl.recv(1000)   # the answer has started; most of it is still queued
        time.sleep(0.1)
        srv.proc.send_signal(signal.SIGTERM)
        r = page.read_response()
        check(r.status == 200 and r.body == b"slept", (r.status, r.body))
        rest = recv_all(dl, timeout=20)
        head, _, body = (first + rest).partition(b"\r\n\r\n")
        check(body == big, "the download finished: %d of %d bytes" % (len(body), len(big)))
        code = srv.proc.wait(15)
        check(code == 0, "exit status %s" % code)
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            check(False, "still accepting after SIGTERM")
        except OSError:
            pass
        check("shutting down" in srv.log(), srv.log())
        page.close()
        dl.close()
    remove_site(root)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(srv, path, seconds, conns=8):
    """Runs wrk; returns (requests per second of wall time, server CPU seconds
    per request). The second is what the server's own work costs, whatever
    else the machine is doing; the first is reported."""
    t0 = cpu_seconds(srv.proc.pid)
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "http://127.0.0.1:%d%s" % (srv.port, path)],
                         capture_output=True, text=True, timeout=seconds + 30)
    cpu = cpu_seconds(srv.proc.pid) - t0
    m = re.search(r"(\d+) requests in", out.stdout)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    check(m and rps and "Non-2xx" not in out.stdout, out.stdout + out.stderr)
    return float(rps.group(1)), cpu / int(m.group(1))


def best(srv, path, runs=3):
    """The best of a few short runs: the least disturbed by other work."""
    results = [wrk(srv, path, 2) for _ in range(runs)]
    return max(r[0] for r in results), min(r[1] for r in results)


class Slowloris:
    """n connections that send a request head one byte at a time, never
    finishing it; a thread keeps them dribbling."""

    def __init__(self, port, n):
        self.socks, self.cut, self.stop = [], 0, False
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            s.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            self.socks.append(s)
        self.thread = threading.Thread(target=self.dribble, daemon=True)
        self.thread.start()

    def dribble(self):
        while not self.stop and self.socks:
            alive = []
            for s in self.socks:
                try:
                    data = s.recv(4096)
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        self.cut += 1
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.cut += 1
                    s.close()
                    continue
                try:
                    s.send(b"X")
                except OSError:
                    pass
                alive.append(s)
            self.socks = alive
            time.sleep(1)

    def close(self):
        self.stop = True
        self.thread.join()
        for s in self.socks:
            s.close()


@case
def slowloris_beside_wrk_keeps_throughput_and_is_cut():
    n = 500 if SANITIZER else 2000
    root = make_site({"a.txt": "alpha\n"})
    # The header timeout is longer than the measurements, so the wave of 2,000
    # cuts (and their log lines) is not inside what is compared.
    with serve(root, "--max-conns", "5000", "--header-timeout", "20000") as srv:
        wrk(srv, "/a.txt", 1)   # warm up
        base_rps, base_cost = best(srv, "/a.txt")
        t0 = time.time()
        slow = Slowloris(srv.port, n)
        deadline = time.time() + 10
        while len(os.listdir("/proc/%d/fd" % srv.proc.pid)) < n and time.time() < deadline:
            time.sleep(0.1)   # accepted in batches: let the backlog drain
        fds = len(os.listdir("/proc/%d/fd" % srv.proc.pid))
        poll = os.environ.get("REMORA_BACKEND") == "poll"
        # The test catches a dispatcher whose cost grows with the idle
        # connections it holds (poll(2) keeps a fifth beside them); the 90%
        # target is a performance figure, measured by `make bench` (bench/idle)
        # where a shared machine's swings are not a failure.
        floor = 0.3 if SANITIZER else 0.5
        rps, cost = best(srv, "/a.txt")
        if cost * floor > base_cost and not poll:   # again when the host stalled the first try
            rps2, cost2 = best(srv, "/a.txt")
            rps, cost = max(rps, rps2), min(cost, cost2)
        # Throughput on a shared machine swings with its other load; the
        # server's CPU time per request does not: it is what is compared.
        print("# slowloris: %d slow clients (server holds %d fds); wrk alone %.0f req/s, %.1f us CPU/request; "
              "beside them %.0f req/s, %.1f us CPU/request: %.0f%% of the baseline throughput"
              % (n, fds, base_rps, base_cost * 1e6, rps, cost * 1e6, 100 * base_cost / cost))
        check(fds >= n, "the slow clients are connected (%d fds)" % fds)
        # poll(2) walks every fd on each wait: beside 2,000 idle connections
        # it keeps a fifth of its throughput (docs/reliability.md), so only
        # epoll, the default, is held to the target; poll's figure is printed.
        check(poll or cost * floor <= base_cost, "throughput fell to %.0f%% of the baseline" % (100 * base_cost / cost))
        check(time.time() - t0 < 19, "measured before the header timeout")
        deadline = t0 + 45
        while slow.cut < n and time.time() < deadline:
            time.sleep(0.2)
        cut_after = time.time() - t0
        slow.close()
        check(slow.cut == n, "%d of %d slow clients cut" % (slow.cut, n))
        check(cut_after >= 19.5, "cut at the header timeout, not before (%.1f s)" % cut_after)
        check(Conn(srv.port).request("GET", "/a.txt").status == 200, "serving afterwards")
    remove_site(root)


@case
def idle_keep_alive_and_body_timeouts():
    root = make_site({"a.txt": "alpha\n", "echo.lsp": "<?lsp request:body() ?>ok"})
    with serve(root, "--idle-timeout", "500", "--body-timeout", "500") as srv:
        c = Conn(srv.port)
        check(c.request("GET", "/a.txt").status == 200, "first request")
        t = time.time()
        check(recv_all(c.sock, None, timeout=10) == b"", "an idle keep-alive connection is closed quietly")
        check(time.time() - t >= 0.4, "not before the idle timeout")
        c.close()
        c = Conn(srv.port)
        c.send("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + "z" * 10)
        data = recv_all(c.sock, None, timeout=10)
        check(data.startswith(b"HTTP/1.1 408"), data[:60])
        c.close()
        check("timed out" in srv.log(), srv.log()[-500:])
        check(Conn(srv.port).request("GET", "/a.txt").status == 200, "serving afterwards")
    remove_site(root)


@case
def size_limits_at_the_edge_and_one_past():
    root = make_site({"a.txt": "alpha\n", "len.lsp": "<?lsp request:body() ?>ok"})
    with serve(root, "--max-uri", "1024", "--max-head", "4096", "--max-body", "1000") as srv:
        def status(raw):
            c = Conn(srv.port)
            c.send(raw)
            try:
                return c.read_response().status
            finally:
                c.close()

        def line(n):   # a request line of exactly n bytes, CRLF included
            return "GET /a.txt?%s HTTP/1.1\r\n" % ("q" * (n - len("GET /a.txt? HTTP/1.1\r\n")))

        check(status(line(1024) + "Host: x\r\n\r\n") == 200, "a request line at the limit")
        check(status(line(1025) + "Host: x\r\n\r\n") == 414, "one byte past it")
        pad = lambda n: "X-P: %s\r\n" % ("p" * (n - 7))   # n bytes, CRLF included
        head = "GET /a.txt HTTP/1.1\r\nHost: x\r\n"   # the limit is on the fields, blank line included
        fill = 4096 - len("Host: x\r\n") - 2
        check(status(head + pad(fill) + "\r\n") == 200, "a head at the limit")
        check(status(head + pad(fill + 1) + "\r\n") == 431, "one byte past it")
        post = "POST /len.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
        check(status(post % (1000, "b" * 1000)) == 200, "a body at the limit")
        check(status(post % (1001, "b" * 1001)) == 413, "one byte past it")
    remove_site(root)


@case
def paths_never_leave_the_root_nor_show_sources():
    outside = make_site({"secret.txt": "TOPSECRET\n"})
    root = make_site({"a.txt": "alpha\n", "page.lsp": "<?lsp print('ran') ?>", ".preload": "-- SOURCE\n",
                      ".lua/mod.lua": "-- SOURCE\n", "sub/.hidden": "HIDDEN\n"})
    os.symlink(outside, os.path.join(root, "out"))
    os.symlink(os.path.join(outside, "secret.txt"), os.path.join(root, "s.txt"))
    with serve(root) as srv:
        bad = ["/out/secret.txt", "/s.txt", "/out/../out/secret.txt", "/a.txt%00", "/a.txt%00.lsp",
               "/%00/../a.txt", "/sub/%2ehidden", "/sub/.hidden", "/.preload", "/%2Epreload", "/.lua/mod.lua",
               "/sub/..%2f.preload", "/sub%2f..%2f.preload", "/sub/..\\.preload", "/%2e%2e/" + os.path.basename(outside)
               + "/secret.txt", "/..%252f.preload"]
        for path in bad:
            c = Conn(srv.port)
            c.send("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            r = c.read_response()
            c.close()
            check(r.status in (400, 403, 404), "%s answered %d" % (path, r.status))
            check(b"TOPSECRET" not in r.body and b"SOURCE" not in r.body and b"HIDDEN" not in r.body, path)
        for path in ["/page.lsp", "/page.lsp?x=1", "/PAGE.lsp", "/page.LSP", "/page.lsp/", "/page.lsp.",
                     "/page.lsp%20", "/./page.lsp", "/sub/../page.lsp"]:
            c = Conn(srv.port)
            c.send("GET %s HTTP/1.1\r\nHost: x\r\nRange: bytes=0-20\r\n\r\n" % path)
            r = c.read_response()
            c.close()
            check(b"<?lsp" not in r.body and b"print(" not in r.body, "%s showed its source" % path)
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)   # a raw NUL in the line
        raw.sendall(b"GET /a.txt\x00/../page.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_all(raw, None, timeout=10)
        check(data.startswith(b"HTTP/1.1 400") and b"<?lsp" not in data, data[:80])
        raw.close()
    remove_site(root)
    remove_site(outside)


@case
def tls_refuses_old_versions_and_weak_ciphers():
    root = make_site({"a.txt": "alpha\n"})
    state = tempfile.mkdtemp(prefix="remora-state-")
    tls_port = free_port()
    with serve(root, "--state", state, tls_port=tls_port):
        def handshake(*opts):
            out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % tls_port] + list(opts),
                                 input=b"", capture_output=True, timeout=20)
            return b"Cipher is (NONE)" not in out.stdout and out.returncode == 0, out.stdout[-300:]
        ok, out = handshake("-tls1_2")
        check(ok, "TLS 1.2 works: %s" % out)
        for opts in (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
                     ["-tls1_2", "-cipher", "DES-CBC3-SHA:RC4-SHA:NULL-SHA256:@SECLEVEL=0"],
                     ["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA:@SECLEVEL=0"]):   # no forward secrecy
            ok, out = handshake(*opts)
            check(not ok, "%s was accepted: %s" % (" ".join(opts), out))
    remove_site(root)
    remove_site(state)


done()
