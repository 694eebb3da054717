"""What the page hot path's shortcuts must not change: a long pipeline of
pages on one connection (each page starts from the end of the previous one,
never nested inside it), closures made by a page that outlive it (they keep
their own, expired, request even while another request runs), the lazily made
response-field table, `page` tables per page file, the compiled-page
cache across edits of a page, timeouts set only when a wait begins (a page
that outlives the idle timeout still answers), and keep-alive connections that wait for their
next request from the loop instead of reading at once (over TLS too, where
decrypted bytes may wait inside the filter)."""
import os
import re
import socket
import ssl
import tempfile
import time

from lib import case, check, done, free_port
from test_http import Conn, get, make_site, remove_site, serve

SITE = {
    "n.lsp": "<?lsp= request:data('i') ?>",
    "keep.lsp": "<?lsp app.saved_print = print app.saved_uri = function() return request:uri() end"
                " app.saved_env = _ENV ?>kept",
    "use.lsp": "<?lsp local ok, err = pcall(app.saved_uri) app.saved_print('LEAK') ?>"
               "[<?lsp= ok ?>|<?lsp= tostring(err):match('expired') ?>|<?lsp= request:uri() ?>"
               "|<?lsp= app.saved_env ~= _ENV ?>|<?lsp= app.saved_env.request ~= request ?>]",
    "fields.lsp": "<?lsp if request:data('set') then response:setheader('X-One', '1') end"
                  " if request:data('reset') then response:reset() end ?>body",
    "count.lsp": "<?lsp page.n = (page.n or 0) + 1 ?><?lsp= page.n ?>",
    "other.lsp": "<?lsp page.n = (page.n or 0) + 100 ?><?lsp= page.n ?>",
    "inc.lsp": "<?lsp response:include('count.lsp') ?>/<?lsp= page.n ?>",
    "edit.lsp": "one",
    "slow.lsp": "<?lsp ba.sleep(700) ?>slow",
    "echo.lsp": "<?lsp= #(request:body() or '') ?>",
}


def tls_exchange(port, data):
    """Sends data over TLS at once and reads until the server closes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE   # the server's own self-signed pair, on loopback
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(data)
            chunks = []
            while True:
                d = s.recv(65536)
                if not d:
                    return b"".join(chunks)
                chunks.append(d)


def main():
    root = make_site(SITE)
    state = tempfile.mkdtemp(prefix="remora-state-")
    tls_port = free_port()
    with serve(root, tls_port=tls_port, env={"REMORA_STATE": state}) as srv:
        port = srv.port

        @case
        def a_tls_pipeline_split_at_a_request_boundary_is_answered():
            # 256 requests of 64 bytes: one 16 KiB TLS record and nothing
            # after it, of which the connection reads 8 KiB first, ending
            # exactly between two requests. The other half waits, decrypted,
            # inside the TLS layer, where the socket's readiness cannot show it.
            def req(i, last=False):
                head = "GET /n.lsp?i=%d HTTP/1.1\r\nHost: x\r\n%s" % (i, "Connection: close\r\n" if last else "")
                pad = 64 - len(head) - len("X: \r\n\r\n")
                return head + "X: " + "p" * pad + "\r\n\r\n"
            n = 255
            reqs = [req(i) for i in range(n)] + [req(n, last=True)]
            check(all(len(r) == 64 for r in reqs), "64-byte requests")
            out = tls_exchange(tls_port, "".join(reqs).encode())
            bodies = re.findall(rb"Content-Length: \d+\r\n\r\n([^H]*)", out)
            check(bodies == [str(i).encode() for i in range(n + 1)], "%d answers in order" % len(bodies))

        @case
        def a_client_that_closes_after_its_answer_is_released():
            c = Conn(port)
            check(c.request("GET", "/n.lsp?i=1").body == b"1", "answer")
            c.sock.shutdown(socket.SHUT_WR)
            c.sock.settimeout(10)
            check(c.sock.recv(100) == b"", "the server closes its side too")
            c.close()

        @case
        def a_long_pipeline_of_pages_is_answered_in_order():
            n = 400   # deeper than Lua's C-call limit, were each page nested in the last
            c = Conn(port)
            c.send("".join("GET /n.lsp?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
            got = [c.read_response() for _ in range(n)]
            check([r.status for r in got] == [200] * n, "statuses")
            check([r.body for r in got] == [str(i).encode() for i in range(n)], "bodies in order")
            r = c.request("GET", "/n.lsp?i=last")   # the connection goes on
            check(r.body == b"last", r.body)
            c.close()

        @case
        def the_server_own_connection_lines():
            c = Conn(port)
            c.send("GET /n.lsp?i=7 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            check(r.body == b"7" and r.header("connection") == "keep-alive", r.raw_head)
            c.send("GET /n.lsp?i=8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = c.read_response()
            check(r.body == b"8" and r.header("connection") == "close", r.raw_head)
            c.close()

        @case
        def a_page_closure_keeps_its_own_expired_request():
            check(get(port, "/keep.lsp").body == b"kept", "keep.lsp")
            r = get(port, "/use.lsp")
            check(r.status == 200, r.status)
            check(r.body == b"[false|expired|/use.lsp|true|true]", r.body)
            check(b"LEAK" not in r.body, "an old page's print wrote into another request's answer")

        @case
        def response_fields_default_set_and_reset():
            r = get(port, "/fields.lsp")
            check(r.header("content-type") == "text/html; charset=utf-8" and r.header("x-one") is None,
                  r.raw_head)
            r = get(port, "/fields.lsp?set=1")
            check(r.header("x-one") == "1" and r.header("content-type") == "text/html; charset=utf-8",
                  r.raw_head)
            r = get(port, "/fields.lsp?set=1&reset=1")
            check(r.header("x-one") is None and r.body == b"body", r.raw_head)

        @case
        def each_page_file_has_its_own_page_table():
            c = Conn(port)
            check(c.request("GET", "/count.lsp").body == b"1", "first count")
            check(c.request("GET", "/count.lsp").body == b"2", "second count")
            check(c.request("GET", "/other.lsp").body == b"100", "another page, another table")
            check(c.request("GET", "/inc.lsp").body == b"3/nil", "an included page uses its own table")
            c.close()

        @case
        def an_edited_page_is_compiled_again_and_keeps_its_table():
            check(get(port, "/count.lsp").body == b"4", "before the edit")
            path = os.path.join(root, "count.lsp")
            st = os.stat(path)
            with open(path, "w") as f:
                f.write("<?lsp page.n = page.n + 10 ?>edited <?lsp= page.n ?>")
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))   # a newer stamp, surely
            check(get(port, "/count.lsp").body == b"edited 14", "the edit is seen with the same table")
            with open(os.path.join(root, "edit.lsp"), "w") as f:
                f.write("two!")   # another size: seen even within the same time stamp
            check(get(port, "/edit.lsp").body == b"two!", "edit.lsp")

    with serve(root, "--idle-timeout", "300", "--body-timeout", "400", "--header-timeout", "3000") as srv:
        port = srv.port

        @case
        def a_page_longer_than_the_idle_timeout_answers_and_the_connection_goes_on():
            c = Conn(port)
            check(c.request("GET", "/slow.lsp").body == b"slow", "the slow page")
            check(c.request("GET", "/n.lsp?i=2").body == b"2", "the next request on the connection")
            c.sock.settimeout(10)
            check(c.sock.recv(100) == b"", "then the idle connection is closed")
            c.close()

        @case
        def a_stalled_body_times_out_with_408():
            c = Conn(port)
            c.send("POST /echo.lsp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            r = c.read_response()
            check(r.status == 408, r.status)
            c.close()
            check(get(port, "/echo.lsp").body == b"0", "the server goes on")

    with serve(root, "--idle-timeout", "1500") as srv:
        port = srv.port

        @case
        def the_idle_timer_set_before_a_request_is_carried_over_not_obeyed():
            # Answers leave the idle timer set for the earliest wait; when it
            # fires it sets itself again for the rest of the latest one. A
            # request 1 s after the previous (timeout 1.5 s) crosses the first
            # deadline, and must still be answered.
            c = Conn(port)
            check(c.request("GET", "/n.lsp?i=1").body == b"1", "first")
            time.sleep(1.0)
            check(c.request("GET", "/n.lsp?i=2").body == b"2", "1 s later")
            time.sleep(1.0)
            check(c.request("GET", "/n.lsp?i=3").body == b"3", "past the first request's idle deadline")
            c.sock.settimeout(10)
            check(c.sock.recv(100) == b"", "then the idle connection is closed")
            c.close()

    remove_site(root)
    remove_site(state)
    done()


if __name__ == "__main__":
    main()
