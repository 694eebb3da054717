"""Request bodies that arrive after their page started: rawrdr() streams an
upload past max_body in bounded memory (Content-Length and chunked, with
curl), the whole-body methods wait for a body sent late, and every way a
body can fail gets its answer: 413 past the limits, nil "timeout" after
body_timeout of silence, a body left unread closes the connection."""
import hashlib
import os
import re
import socket
import subprocess
import time

from lib import case, check, done, free_port, recv_all
from test_http import Conn, make_site, remove_site, serve

MAX_BODY = 1000000
SITE = {
    "stream.lsp": "<?lsp local f = assert(io.open(request:header('X-To'), 'wb'))"
                  " local n, pieces, max = 0, 0, 0"
                  " for p in request:rawrdr() do n = n + #p pieces = pieces + 1 max = math.max(max, #p) f:write(p) end"
                  " f:close() ?>n=<?lsp= n ?> pieces=<?lsp= pieces ?> max=<?lsp= max ?>",
    "form.lsp": "<?lsp local d = request:data() ?><?lsp= d.a ?>|<?lsp= d.b ?>",
    "cut.lsp": "<?lsp local got, err = 0, nil for p in function() local p, e = request:_piece() err = e return p end"
               " do got = got + #p end trace('cut page: got ' .. got .. ' then ' .. tostring(err)) ?>",
    "ignore.lsp": "ignored",
    "raw.lsp": "<?lsp local s, rest = ba.socket.req2sock(request, true)"
               " s:event(function(s) local have = rest or '' while #have < 10 do have = have .. s:read() end"
               " s:write('HTTP/1.1 200 OK\\r\\nContent-Length: ' .. #have .. '\\r\\nConnection: close\\r\\n\\r\\n' .. have)"
               " s:close() end, 's') ?>",
}


def main():
    root = make_site(SITE)
    out = os.path.join(root, "out.bin")
    tls_port = free_port()
    srv = serve(root, "--max-body", str(MAX_BODY), "--max-upload", "100000000", "--body-timeout", "700",
                "--state", os.path.join(root, ".state"), tls_port=tls_port)
    srv.__enter__()
    port = srv.port

    def curl(*args):
        return subprocess.run(["curl", "-s", "-S", "--max-time", "60", "-H", "X-To: " + out] + list(args),
                              capture_output=True, timeout=90)

    @case
    def fifty_mb_streamed_past_max_body_in_bounded_memory():
        data = os.path.join(root, "in.bin")
        with open(data, "wb") as f:
            f.write(os.urandom(50 * 1000 * 1000))
        rss0 = srv.rss_kb()
        for chunked in (False, True):
            extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
            r = curl("-T", data, *extra, "http://127.0.0.1:%d/stream.lsp" % port)
            body = r.stdout.decode()
            check(body.startswith("n=50000000 "), "chunked=%s: %s %s" % (chunked, body, r.stderr))
            pieces = int(body.split("pieces=")[1].split()[0])
            biggest = int(body.split("max=")[1])
            check(pieces > 50 and biggest <= 64 * 1024 + 16 * 1024, "pieces %d, biggest %d" % (pieces, biggest))
            with open(data, "rb") as a, open(out, "rb") as b:
                check(hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), "byte-exact")
        grew = srv.rss_kb() - rss0
        print("# 2 x 50 MB streamed through rawrdr: RSS grew %d KiB" % grew)
        if not os.environ.get("REMORA_SANITIZER"):   # ASan's quarantine keeps freed memory
            check(grew < 20000, "RSS grew %d KiB for 100 MB streamed" % grew)

    @case
    def an_upload_streams_through_tls_too():
        data = os.path.join(root, "in-tls.bin")
        with open(data, "wb") as f:
            f.write(os.urandom(5 * 1000 * 1000))
        r = curl("-k", "-T", data, "https://127.0.0.1:%d/stream.lsp" % tls_port)
        check(r.stdout.startswith(b"n=5000000 "), (r.stdout, r.stderr))
        with open(data, "rb") as a, open(out, "rb") as b:
            check(a.read() == b.read(), "byte-exact over TLS")

    @case
    def whole_body_methods_wait_for_a_late_body():
        c = Conn(port)
        body = b"a=late&b=" + b"x" * 5000
        c.send("POST /form.lsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               "Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)   # the page is running, waiting in data()
        c.send(body[:100])
        time.sleep(0.1)
        c.send(body[100:])
        r = c.read_response()
        check(r.status == 200 and r.body == b"late|" + b"x" * 5000, r.body[:80])
        check(c.request("GET", "/ignore.lsp").body == b"ignored", "keep-alive after a body read whole")
        c.close()

    @case
    def limits_and_silence_get_their_answers():
        c = Conn(port)   # declared past max_upload: refused before any of it is read
        c.send("POST /stream.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 100000001\r\n\r\n")
        check(c.read_response().status == 413, "past max_upload")
        c.close()
        c = Conn(port)   # declared past max_body, to a page that wants it whole
        c.send("POST /form.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        r = c.read_response()
        check(r.status == 413 and c.closed(), "past max_body, read whole: %d" % r.status)
        c.close()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /cut.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"y" * 300)
        time.sleep(0.1)
        s.sendall(b"y" * 200)
        deadline = time.time() + 10   # then silence past the body timeout (700 ms)
        while "cut page: got 500 then timeout" not in srv.log() and time.time() < deadline:
            time.sleep(0.1)
        check("cut page: got 500 then timeout" in srv.log(), srv.log()[-400:])
        check("request body timed out" in srv.log(), "logged")
        got = recv_all(s)
        check(got.startswith(b"HTTP/1.1 200") and b"Connection: close" in got, got[:200])
        s.close()

    @case
    def a_chunked_stream_past_max_upload_is_cut():
        small = serve(root, "--max-upload", "100000")
        with small:
            s = socket.create_connection(("127.0.0.1", small.port), timeout=10)
            s.sendall(b"POST /cut.lsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(8):   # 8 x 16 KiB: past 100,000 bytes
                s.sendall(b"4000\r\n" + b"z" * 0x4000 + b"\r\n")
            got = recv_all(s)
            s.close()
            deadline = time.time() + 10
            while "cut page: got" not in small.log() and time.time() < deadline:
                time.sleep(0.05)
            m = re.search(r"cut page: got (\d+) then (\w+)", small.log())
            check(m and int(m.group(1)) <= 100000 and m.group(2) == "badbody", small.log()[-400:])
            check(b"Connection: close" in got, got[:200])

    @case
    def a_body_left_unread_closes_the_connection_after_the_answer():
        c = Conn(port)
        c.send("POST /ignore.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + "z" * 1000)
        r = c.read_response()
        check(r.status == 200 and r.body == b"ignored", r.body)
        check(r.header("connection") == "close" and c.closed(), (r.headers, "closed"))
        c.close()

    @case
    def req2sock_hands_over_a_body_still_arriving():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /raw.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123")
        time.sleep(0.2)
        s.sendall(b"456789")
        got = recv_all(s)
        check(got.endswith(b"\r\n\r\n0123456789"), got)
        s.close()

    srv.__exit__(None, None, None)
    remove_site(root)
    done()


if __name__ == "__main__":
    main()
