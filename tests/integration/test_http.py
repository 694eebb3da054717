"""The HTTP/1.1 server: keep-alive, pipelining, uploads, limits and timeouts,
static files (validators, ranges, compression, traversal), HTTPS, wrk.
The helpers at the top (a site in a temporary directory, remora serving it
with -l, an exact raw HTTP/1.1 client) are shared with test_lsp.py."""
import os
import shutil
import socket
import tempfile

from lib import Remora, free_port, recv_all  # noqa: F401  (re-exported)


def make_site(files):
    """A directory holding files (name -> bytes or str); returns its path."""
    root = tempfile.mkdtemp(prefix="remora-site-")
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    return root


def remove_site(root):
    shutil.rmtree(root, ignore_errors=True)


def serve(root, *options, port=None, env=None, tls_port=None):
    """remora serving root on 127.0.0.1:port (and HTTPS on tls_port)."""
    port = port or free_port()
    args = ["127.0.0.1:%d" % port, root]
    if tls_port:
        args += ["--tls-listen", "127.0.0.1:%d" % tls_port]
    r = Remora(path="-l", args=args + list(options), env=env, ready="serving %s" % root)
    r.port = port
    return r


class Response:
    def __init__(self, status, headers, body, raw_head):
        self.status, self.headers, self.body, self.raw_head = status, headers, body, raw_head

    def header(self, name):
        return self.headers.get(name.lower())


class Conn:
    """One HTTP/1.1 connection that reads answers exactly (Content-Length or
    chunked), so keep-alive and pipelining can be checked byte for byte."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_only=False):
        while True:
            status_line = self._line()
            status = int(status_line.split()[1])
            headers, raw = {}, [status_line]
            while True:
                line = self._line()
                if not line:
                    break
                raw.append(line)
                k, v = line.decode().split(":", 1)
                headers[k.strip().lower()] = v.strip()
            if status >= 200 or status == 101:   # 100 Continue is skipped
                break
        body = b""
        if head_only or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                n = int(self._line().split(b";")[0], 16)
                if n == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(n)
                self._exact(2)
        elif "content-length" in headers:
            body = self._exact(int(headers["content-length"]))
        else:
            try:
                while True:
                    self._fill()
            except (EOFError, OSError):
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body, b"\r\n".join(raw))

    def request(self, method, path, headers=None, body=None):
        h = {"Host": "localhost"}
        h.update(headers or {})
        if body is not None:
            h.setdefault("Content-Length", str(len(body)))
        head = "%s %s HTTP/1.1\r\n%s\r\n" % (method, path, "".join("%s: %s\r\n" % kv for kv in h.items()))
        self.send(head.encode() + (body or b""))
        return self.read_response(head_only=method == "HEAD")

    def closed(self, timeout=5):
        """True when the server closed the connection (after what is buffered)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


def get(port, path, headers=None, method="GET", body=None):
    c = Conn(port)
    try:
        return c.request(method, path, headers, body)
    finally:
        c.close()


# ---- the tests -------------------------------------------------------------

SITE = {
    "a.txt": "alpha\n",
    "b.txt": "bravo\n",
    "index.html": "<html>home</html>\n",
    "echo.lsp": "<?lsp local b = request:body() or '' ?>len=<?lsp= #b ?> sum=<?lsp= b:sub(1, 20) ?>",
    "hello.lsp": "hello",
    "boom.lsp": "<?lsp error('boom in page') ?>",
    "page.lsp": "<?lsp response:setheader('X-Secure', tostring(request:issecure())) ?>secure",
    "text.txt": ("the quick brown fox jumps over the lazy dog\n" * 400),
    "pre.txt": "plain version\n",
    "dir/index.html": "dir index\n",
    ".preload": "-- secret preload\n",
    ".lua/secret.lua": "return 1\n",
}


def main():
    import gzip
    import hashlib
    import re
    import subprocess
    import threading
    import time
    from lib import case, check, done

    big = os.urandom(5 * 1024 * 1024 + 123)
    text = "".join("line %d of a long text file, %s\n" % (i, "abc" * (i % 7)) for i in range(40000)).encode()
    files = dict(SITE, **{"big.bin": big, "pre.txt.gz": gzip.compress(b"gzip version\n"), "long.txt": text})
    root = make_site(files)
    os.symlink("/etc", os.path.join(root, "etc-link"))
    os.symlink("/etc/hostname", os.path.join(root, "host-link.txt"))
    state = tempfile.mkdtemp(prefix="remora-state-")
    log = os.path.join(state, "access.log")
    tls_port = free_port()
    srv = serve(root, "--access-log", log, "--max-body", "100000", "--header-timeout", "700",
                "--max-uri", "2048", tls_port=tls_port, env={"REMORA_STATE": state})
    srv.__enter__()
    port = srv.port

    @case
    def keep_alive_requests_share_one_connection():
        c = Conn(port)
        for i in range(20):
            r = c.request("GET", "/a.txt" if i % 2 else "/hello.lsp")
            check(r.status == 200 and r.body == (b"alpha\n" if i % 2 else b"hello"), repr(r.body))
        c.close()

    @case
    def pipelined_requests_are_answered_in_order():
        c = Conn(port)
        paths = ["/a.txt", "/hello.lsp", "/b.txt", "/echo.lsp", "/missing", "/a.txt"]
        c.send("".join("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in paths))
        got = [c.read_response() for _ in paths]
        check([r.status for r in got] == [200, 200, 200, 200, 404, 200], [r.status for r in got])
        check(got[0].body == b"alpha\n" and got[1].body == b"hello" and got[2].body == b"bravo\n"
              and got[3].body == b"len=0 sum=", [r.body for r in got])
        c.close()

    @case
    def chunked_upload_reaches_the_page():
        c = Conn(port)
        c.send("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n")
        r = c.read_response()
        check(r.status == 200 and r.body == b"len=12 sum=hello, world", r.body)
        check(c.request("GET", "/a.txt").body == b"alpha\n", "keep-alive after a chunked body")
        c.close()

    @case
    def expect_100_continue():
        c = Conn(port)
        c.send("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        line = c._line()
        check(b" 100 " in line, line)
        c._line()
        c.send("data")
        r = c.read_response()
        check(r.status == 200 and r.body == b"len=4 sum=data", r.body)
        c.close()

    @case
    def validators_answer_304():
        r = get(port, "/a.txt")
        etag, lm = r.header("etag"), r.header("last-modified")
        check(etag and lm, r.headers)
        check(get(port, "/a.txt", {"If-None-Match": etag}).status == 304, "If-None-Match")
        check(get(port, "/a.txt", {"If-Modified-Since": lm}).status == 304, "If-Modified-Since")
        check(get(port, "/a.txt", {"If-None-Match": '"other"'}).status == 200, "a different etag")

    @case
    def ranges_answer_206_and_416():
        r = get(port, "/big.bin", {"Range": "bytes=100-199"})
        check(r.status == 206 and r.body == big[100:200], (r.status, len(r.body)))
        check(r.header("content-range") == "bytes 100-199/%d" % len(big), r.header("content-range"))
        r = get(port, "/big.bin", {"Range": "bytes=-10"})
        check(r.status == 206 and r.body == big[-10:], "suffix range")
        r = get(port, "/big.bin", {"Range": "bytes=%d-" % (len(big) + 5)})
        check(r.status == 416 and r.header("content-range") == "bytes */%d" % len(big), r.status)

    @case
    def big_file_whole_and_head():
        r = get(port, "/big.bin")
        check(r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(big).digest(), "checksum")
        r = get(port, "/big.bin", method="HEAD")
        check(r.status == 200 and r.header("content-length") == str(len(big)) and r.body == b"", "HEAD")

    @case
    def compression_on_the_fly_and_precompressed():
        r = get(port, "/text.txt", {"Accept-Encoding": "gzip"})
        check(r.header("content-encoding") == "gzip", r.headers)
        check(gzip.decompress(r.body) == SITE["text.txt"].encode(), "deflated text")
        check(len(r.body) < len(SITE["text.txt"]) // 4, "it is compressed")
        r = get(port, "/text.txt")
        check(r.header("content-encoding") is None and r.body == SITE["text.txt"].encode(), "identity")
        r = get(port, "/pre.txt", {"Accept-Encoding": "gzip, deflate"})
        check(r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == b"gzip version\n", "sibling")

    @case
    def a_large_text_file_is_compressed_in_streamed_chunks():
        c = Conn(port)   # keep-alive: the connection goes on after the last chunk
        for _ in range(2):
            r = c.request("GET", "/long.txt", headers={"Accept-Encoding": "gzip"})
            check(r.header("content-encoding") == "gzip" and r.header("transfer-encoding") == "chunked"
                  and r.header("content-length") is None, r.headers)
            check(gzip.decompress(r.body) == text and len(r.body) < len(text) // 4, "deflated whole")
        r = c.request("HEAD", "/long.txt", headers={"Accept-Encoding": "gzip"})
        check(r.status == 200 and r.body == b"" and r.header("content-encoding") == "gzip", r.headers)
        check(c.request("GET", "/a.txt").body == b"alpha\n", "the connection goes on")
        c.close()
        with serve(root, "--gzip-max", str(len(text) - 1)) as small:   # one byte past the bound: as it is
            r = get(small.port, "/long.txt", {"Accept-Encoding": "gzip"})
            check(r.header("content-encoding") is None and r.body == text, "past gzip-max: identity")
            r = get(small.port, "/text.txt", {"Accept-Encoding": "gzip"})
            check(r.header("content-encoding") == "gzip", "under it: compressed")
        c = Conn(port)
        c.send("GET /long.txt HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
        r = c.read_response()
        check(r.header("content-encoding") is None and r.body == text, "HTTP/1.0 has no chunks: identity")
        c.close()

    @case
    def directories_index_and_redirect():
        r = get(port, "/dir")
        check(r.status == 301 and r.header("location") == "/dir/", (r.status, r.headers))
        check(get(port, "/dir/").body == b"dir index\n", "index.html")
        check(get(port, "/").body == b"<html>home</html>\n", "root index")

    @case
    def traversal_attempts_are_refused():
        for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/dir/..%2f..%2fetc/passwd",
                     "/etc-link/passwd", "/host-link.txt", "/a.txt%00.html", "/%2e%2e%5c%2e%2e/etc/passwd",
                     "/.preload", "/.lua/secret.lua", "/dir/../.preload", "/%2epreload"]:
            r = get(port, path)
            check(r.status in (400, 403, 404), "%s answered %d" % (path, r.status))
            check(b"root:" not in r.body and b"secret" not in r.body, path)

    @case
    def page_source_is_never_served():
        r = get(port, "/echo.lsp")
        check(b"<?lsp" not in r.body and r.status == 200, r.body)
        r = get(port, "/echo.lsp", {"Range": "bytes=0-10"})
        check(b"<?lsp" not in r.body, "range on a page")

    @case
    def page_error_is_500_and_the_server_lives():
        r = get(port, "/boom.lsp")
        check(r.status == 500 and b"boom in page" not in r.body and b"error(" not in r.body, r.body)
        check("boom in page" in srv.log(), "traceback logged")
        check(get(port, "/hello.lsp").body == b"hello", "alive")

    def refused(raw, status, close_expected=True):
        other = Conn(port)
        check(other.request("GET", "/a.txt").status == 200, "other connection first")
        c = Conn(port)
        c.send(raw)
        r = c.read_response()
        check(r.status == status, "wanted %d, got %d" % (status, r.status))
        if close_expected:
            check(c.closed(), "the connection closes after %d" % status)
        c.close()
        check(other.request("GET", "/b.txt").body == b"bravo\n", "the other connection is unaffected")
        other.close()

    @case
    def limits_answer_with_their_statuses():
        refused("GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % ("a" * 4000), 414)
        refused("GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % ("b" * 20000), 431)
        refused("GET / HTTP/1.1\r\n%s\r\n" % "".join("X-%d: y\r\n" % i for i in range(150)), 431)
        refused("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n", 413)
        refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
        refused("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501)
        refused("GARBAGE\r\n\r\n", 400)
        refused("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400)

    @case
    def chunked_body_past_the_limit_is_413():
        refused("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "8000\r\n" + "z" * 0x8000 + "\r\n" + "8000\r\n" + "z" * 0x8000 + "\r\n"
                + "8000\r\n" + "z" * 0x8000 + "\r\n" + "8000\r\n" + "z" * 0x8000 + "\r\n", 413)

    @case
    def slow_head_times_out_with_408():
        other = Conn(port)
        c = Conn(port)
        c.send("GET /a.txt HTTP/1.1\r\nHost: x\r\n")
        for _ in range(5):   # trickle, as slowloris does: the deadline is for the whole head
            time.sleep(0.2)
            c.send("X-A: b\r\n")
        data = recv_all(c.sock, timeout=10)
        check(data.startswith(b"HTTP/1.1 408"), data[:40])
        check(other.request("GET", "/a.txt").body == b"alpha\n", "the other connection is unaffected")
        other.close()

    @case
    def access_log_in_common_log_format():
        get(port, "/a.txt?x=1")
        pat = re.compile(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /a\.txt\?x=1 HTTP/1\.1" 200 6$')
        deadline = time.time() + 5   # the line is written once the answer is out: the client may be first
        while True:
            with open(log) as f:
                lines = f.read().splitlines()
            if any(pat.match(line) for line in lines) or time.time() > deadline:
                break
            time.sleep(0.05)
        check(any(pat.match(line) for line in lines), lines[-3:])

    @case
    def https_with_the_self_signed_pair():
        cert = os.path.join(state, "selfsigned.crt")
        check(os.path.exists(cert), "certificate written to the state directory")
        check(re.search(r"SHA-256 [0-9a-f]{64}", srv.log()), "fingerprint printed")
        out = subprocess.run(["curl", "-s", "--cacert", cert, "https://localhost:%d/a.txt" % tls_port,
                              "https://localhost:%d/page.lsp" % tls_port, "-D", "-", "--max-time", "20"],
                             capture_output=True, timeout=30)
        check(out.returncode == 0, out.stderr)
        check(b"alpha\n" in out.stdout and b"X-Secure: true" in out.stdout and out.stdout.endswith(b"secure"),
              out.stdout[-300:])
        out = subprocess.run(["curl", "-s", "--cacert", cert, "https://localhost:%d/big.bin" % tls_port,
                              "--max-time", "30"], capture_output=True, timeout=40)
        check(hashlib.sha256(out.stdout).digest() == hashlib.sha256(big).digest(), "big file over TLS")
        out = subprocess.run(["curl", "-s", "--compressed", "--cacert", cert, "https://localhost:%d/long.txt" % tls_port,
                              "--max-time", "30"], capture_output=True, timeout=40)
        check(out.stdout == text, "a large text file compressed on the fly over TLS")
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version}", "--cacert", cert,
                              "https://localhost:%d/a.txt" % tls_port], capture_output=True, timeout=30)
        check(out.stdout == b"1.1", out.stdout)
        out = subprocess.run(["curl", "-s", "https://localhost:%d/a.txt" % tls_port, "--max-time", "10"],
                             capture_output=True, timeout=30)
        check(out.returncode != 0, "an untrusted certificate must fail without --cacert")

    @case
    def close_asked_by_the_client_lets_the_socket_go_at_once():
        # After a whole request with "Connection: close" the server closes its
        # socket without waiting for the client's end of stream: the kernel
        # then holds the server's side orphaned (inode 0 in /proc/net/tcp).
        c = Conn(port)
        r = c.request("GET", "/a.txt", {"Connection": "close"})
        check(r.status == 200 and r.body == b"alpha\n" and c.closed(), "answered, then end of stream")
        mine = "%04X" % c.sock.getsockname()[1]

        def server_side_inode():
            with open("/proc/net/tcp") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[1].endswith(":%04X" % port) and cols[2].endswith(":" + mine):
                        return cols[9]
            return "0"   # already gone altogether
        deadline = time.time() + 1.5   # the lingering close waited up to 2 s for the client
        while server_side_inode() != "0" and time.time() < deadline:
            time.sleep(0.05)
        check(server_side_inode() == "0", "the server still holds the socket")
        c.close()

    @case
    def changed_and_deleted_files_are_seen_at_once():
        path = os.path.join(root, "changing.txt")
        with open(path, "w") as f:
            f.write("one")
        check(get(port, "/changing.txt").body == b"one", "first version")
        with open(path, "w") as f:
            f.write("second")
        check(get(port, "/changing.txt").body == b"second", "second version")
        os.unlink(path)
        check(get(port, "/changing.txt").status == 404, "deleted")

    @case
    def wrk_thousand_keep_alive_requests_per_connection():
        script = os.path.join(state, "count.lua")
        with open(script, "w") as f:
            f.write("local n = 0\nfunction response(status)\n  n = n + 1\n"
                    "  if status ~= 200 then io.stderr:write('status ' .. status .. '\\n') end\n"
                    "  if n == 1000 then wrk.thread:stop() end\nend\n")
        out = subprocess.run(["wrk", "-t2", "-c2", "-d5s", "-s", script, "http://127.0.0.1:%d/hello.lsp" % port],
                             capture_output=True, timeout=60, text=True)
        m = re.search(r"(\d+) requests in", out.stdout)
        check(out.returncode == 0 and m and int(m.group(1)) >= 2000, out.stdout + out.stderr)
        check("status" not in out.stderr and "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout,
              out.stdout + out.stderr)

    @case
    def max_connections_refuse_new_ones_with_503():
        root2 = make_site({"a.txt": "alpha\n"})
        with serve(root2, "--max-conns", "4") as s2:
            conns = [Conn(s2.port) for _ in range(3)]   # the ready probe may still hold a fourth
            for c in conns:
                check(c.request("GET", "/a.txt").status == 200, "the first ones work")
            time.sleep(0.2)
            extra = [Conn(s2.port) for _ in range(2)]
            statuses = []
            for c in extra:
                try:
                    statuses.append(c.request("GET", "/a.txt").status)
                except (EOFError, OSError):
                    statuses.append(0)
            check(503 in statuses, statuses)
            for c in conns:
                check(c.request("GET", "/a.txt").body == b"alpha\n", "existing connections still work")
        remove_site(root2)

    check(srv.alive(), "alive at the end")
    srv.__exit__(None, None, None)
    remove_site(root)
    shutil.rmtree(state, ignore_errors=True)
    done()


if __name__ == "__main__":
    main()
