"""Lua Server Pages and directory apps: the compiler (tags, "?>" inside
strings, line numbers, recompilation), the request/response object (forms,
multipart, cookies, headers, redirects, errors, json, include/forward,
flush, abort), pages that suspend on cosockets while others are served,
.preload/.lua/onunload, req2sock/sock2req and require "httpc"."""
import os
import socket
import subprocess
import threading
import time

from lib import case, check, done, free_port
from test_http import Conn, get, make_site, remove_site, serve

SITE = {
    "tags.lsp": '<p><?lsp local n = 2 ?><?lsp= n * 21 ?> <?lsp= "a?>b" ?> <?lsp= [[c?>d]] ?>'
                '<?lsp -- a comment ?></p><?lsp --[[ long ?> comment ]] ?>\n',
    "lines.lsp": "line 1\nline 2\n<?lsp\n\nlocal x = nil\nx.field = 1 ?>\n",
    "form.lsp": "<?lsp local d = request:data() ?><?lsp= d.a ?>|<?lsp= d.b ?>|<?lsp= request:method() ?>"
                "<?lsp local n = 0 for k, v in request:datapairs() do n = n + 1 end ?>|<?lsp= n ?>",
    "upload.lsp": "<?lsp for _, p in ipairs(request:multipart()) do ?>"
                  "<?lsp= p.name ?>:<?lsp= p.filename or '-' ?>:<?lsp= #p.data ?>;<?lsp end ?>"
                  "<?lsp= request:data('note') ?>",
    "info.lsp": "<?lsp= request:header('X-Test') ?>|<?lsp= request:cookie('sid') ?>|<?lsp= request:uri() ?>|"
                "<?lsp= request:url() ?>|<?lsp= request:version() ?>|<?lsp= (request:peername()) ?>",
    "status.lsp": "<?lsp response:setstatus(201) response:setheader('X-Made', 'yes')"
                  " response:setcontenttype('text/plain') ?>made",
    "redirect.lsp": "<?lsp response:sendredirect('/tags.lsp') ?>",
    "senderror.lsp": "<?lsp response:senderror(403, 'no <way>') ?>",
    "json.lsp": "<?lsp response:json({ok = true, n = 3}) ?>not reached",
    "include.lsp": "[<?lsp response:include('part.lsp') ?>][<?lsp response:include('plain.txt') ?>]",
    "part.lsp": "part <?lsp= request:method() ?>",
    "plain.txt": "plain",
    "forward.lsp": "dropped<?lsp response:forward('/part.lsp') ?>not reached",
    "abort.lsp": "kept<?lsp response:abort() ?>not reached",
    "flush.lsp": "<?lsp for i = 1, 5 do response:write('chunk', i, ' ') response:flush() end ?>end",
    "late.lsp": "<?lsp response:write('x') response:flush() error('after the head') ?>",
    "big.lsp": "<?lsp for i = 1, 2000 do response:write(string.rep('y', 1000)) end ?>",
    "counter.lsp": "<?lsp app.hits = (app.hits or 0) + 1 page.n = (page.n or 0) + 1 ?>"
                   "<?lsp= app.hits ?>/<?lsp= page.n ?>/<?lsp= greeting ?>",
    "sleep.lsp": "<?lsp ba.sleep(50) ?>slept",
    "client.lsp": "<?lsp local s = assert(ba.socket.connect('127.0.0.1', tonumber(request:data('port'))))"
                  " s:write('ask\\n') local d = s:read(10000) s:close() ?>got <?lsp= d ?>",
    "echo2sock.lsp": "<?lsp local s = ba.socket.req2sock(request)"
                     " s:event(function(s) s:write('RAW ') while true do local d = s:read()"
                     " if not d then break end s:write(d) end end, 's') ?>",
    "handback.lsp": "<?lsp local s, rest = ba.socket.req2sock(request)"
                    " s:event(function(s) s:write('HELLO\\r\\n') local d = s:read()"
                    " ba.socket.sock2req(s, d) end, 's') ?>",
    "httpc.lsp": "<?lsp local httpc = require 'httpc' local h = httpc.create()"
                 " local ok, err = h:request{url = 'http://127.0.0.1:' .. request:data('port') .. request:data('path'),"
                 " method = request:data('m') or 'GET', follow = tonumber(request:data('follow'))}"
                 " if not ok then print('error ', err) else"
                 " print(h:status(), ' ', h:header()['content-type'] or '-', ' ', h:read('a')) end ?>",
    "where.lsp": "<?lsp= coroutine.isyieldable() ?>",
    "env.lsp": "<?lsp= type(request) ?> <?lsp= request == response ?> <?lsp= type(page) ?> <?lsp= app ~= _G ?>",
    "session.lsp": "<?lsp local max = tonumber(request:data('max'))"
                   " if max then ba.session.config{max = max} end"
                   " local s, err = request:session(request:data('create') == '1')"
                   " if not s then print('none ', err or '') else"
                   " s.n = (s.n or 0) + 1 if request:data('life') then s:maxinactiveinterval(1) end"
                   " if request:data('end') then s:terminate() end"
                   " print(s:id(), ' ', s.n, ' ', ba.session.count()) end ?>",
    "cookies.lsp": "<?lsp response:setheader('Set-Cookie', 'a=1') response:setheader('Set-Cookie', 'b=2', true) ?>ok",
    "deferred.lsp": "<?lsp local d = response:deferred() d:setcontenttype('text/plain') d:write('first ') d:flush()"
                    " ba.timer(function() d:write('later ', request:uri()) d:close() end):set(100) ?>",
    "held.lsp": "<?lsp response:deferred() response:write('held') response:flush() ?>",
    ".preload": "greeting = require('mod').hi()\n"
                "function onunload() local f = io.open(app.unload_file, 'w') f:write('unloaded') f:close() end\n"
                "unload_file = os.getenv('UNLOAD_FILE')\n",
    ".lua/mod.lua": "return {hi = function() return 'hi-from-mod' end}\n",
}


def body(port, path, **kw):
    return get(port, path, **kw).body.decode()


def main():
    root = make_site(SITE)
    unload = os.path.join(root, "unloaded.txt")
    srv = serve(root, env={"UNLOAD_FILE": unload})
    srv.__enter__()
    port = srv.port

    @case
    def tags_and_question_gt_inside_strings():
        check(body(port, "/tags.lsp") == "<p>42 a?>b c?>d</p>\n", body(port, "/tags.lsp"))

    @case
    def error_names_the_page_line_and_the_process_lives():
        r = get(port, "/lines.lsp")
        check(r.status == 500 and b"lines.lsp" not in r.body and b"local x" not in r.body, r.body)
        check("lines.lsp:6:" in srv.log(), "the log names line 6: " + srv.log()[-500:])
        check(body(port, "/tags.lsp").startswith("<p>42"), "alive")

    @case
    def page_is_recompiled_when_the_file_changes():
        path = os.path.join(root, "changing.lsp")
        with open(path, "w") as f:
            f.write("one")
        check(body(port, "/changing.lsp") == "one", "first version")
        time.sleep(0.01)
        with open(path, "w") as f:
            f.write("two <?lsp= 1 + 1 ?>")
        check(body(port, "/changing.lsp") == "two 2", "second version")

    @case
    def form_post_and_query():
        r = get(port, "/form.lsp?a=%41x&c=1", method="POST", body=b"b=hello+world&b=second",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        check(r.body == b"Ax|hello world|POST|4", r.body)

    @case
    def multipart_upload_with_curl():
        data = os.path.join(root, "upload.bin")
        with open(data, "wb") as f:
            f.write(os.urandom(30000))
        out = subprocess.run(["curl", "-s", "-F", "file=@%s" % data, "-F", "note=hi there",
                              "http://127.0.0.1:%d/upload.lsp" % port], capture_output=True, timeout=30)
        check(out.stdout == b"file:upload.bin:30000;note:-:8;hi there", out.stdout)

    @case
    def sessions_by_cookie_bounded_and_never_chosen_by_the_client():
        def session(cookie=None, **q):
            query = "&".join("%s=%s" % kv for kv in q.items())
            r = get(port, "/session.lsp?" + query, headers={"Cookie": "remora_sid=" + cookie} if cookie else {})
            return r.body.decode().split(" "), r.header("set-cookie")

        out, cookie = session()
        check(out == ["none", ""] and cookie is None, (out, cookie))
        (sid, n, count), cookie = session(create=1)
        check(len(sid) == 22 and n == "1" and cookie == "remora_sid=%s; Path=/; HttpOnly; SameSite=Lax" % sid,
              (sid, cookie))
        (again, n, _), cookie = session(sid)
        check(again == sid and n == "2" and cookie is None, (again, n, cookie))
        (other, n, _), _ = session("forged-by-the-client-00", create=1)
        check(other not in (sid, "forged-by-the-client-00") and n == "1", other)
        out, _ = session(other, end=1)
        check(session(other)[0] == ["none", ""], "terminated")
        out, _ = session(max=int(count), create=1)   # the store is full: refused, not evicted
        check(out == ["none", "too", "many", "sessions"] and session(sid)[0][0] == sid, out)
        session(max=10000)
        session(sid, life=1)
        time.sleep(2.2)
        check(session(sid)[0] == ["none", ""], "expired after its inactive interval")
        check("session: refused" in srv.log(), "the refusal is logged")

    @case
    def setheader_adds_a_second_set_cookie():
        r = get(port, "/cookies.lsp")
        lines = [l for l in r.raw_head.splitlines() if l.lower().startswith(b"set-cookie:")]
        check(lines == [b"Set-Cookie: a=1", b"Set-Cookie: b=2"], r.raw_head)

    @case
    def deferred_answer_outlives_its_page_and_the_connection_goes_on():
        c = Conn(port)
        c.send("GET /deferred.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        check(r.status == 200 and r.header("transfer-encoding") == "chunked"
              and r.body == b"first later /deferred.lsp", (r.raw_head, r.body))
        c.send("GET /tags.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        check(c.read_response().body.startswith(b"<p>42"), "the next request on the same connection")
        c.close()

    @case
    def request_fields():
        r = get(port, "/info.lsp?q=1", headers={"X-Test": "tv", "Cookie": "a=1; sid=abc"})
        check(r.body.decode() == "tv|abc|/info.lsp|http://localhost/info.lsp?q=1|1.1|127.0.0.1", r.body)

    @case
    def status_fields_redirect_error_json():
        r = get(port, "/status.lsp")
        check(r.status == 201 and r.header("x-made") == "yes" and r.header("content-type") == "text/plain"
              and r.body == b"made", (r.status, r.headers))
        r = get(port, "/redirect.lsp")
        check(r.status == 302 and r.header("location") == "/tags.lsp", (r.status, r.headers))
        r = get(port, "/senderror.lsp")
        check(r.status == 403 and b"no &lt;way&gt;" in r.body, r.body)
        r = get(port, "/json.lsp")
        check(r.header("content-type") == "application/json" and r.body in (b'{"ok":true,"n":3}', b'{"n":3,"ok":true}'),
              r.body)

    @case
    def include_forward_abort():
        check(body(port, "/include.lsp") == "[part GET][plain]", body(port, "/include.lsp"))
        check(body(port, "/forward.lsp") == "part GET", body(port, "/forward.lsp"))
        check(body(port, "/abort.lsp") == "kept", body(port, "/abort.lsp"))

    @case
    def flush_sends_chunks_and_late_errors_cut_the_body():
        r = get(port, "/flush.lsp")
        check(r.header("transfer-encoding") == "chunked" and r.body == b"chunk1 chunk2 chunk3 chunk4 chunk5 end",
              (r.headers, r.body))
        c = Conn(port)
        try:
            c.request("GET", "/late.lsp")
            check(False, "a cut chunked body must not read as complete")
        except EOFError:
            pass
        c.close()
        r = get(port, "/big.lsp")
        check(len(r.body) == 2000 * 1000 and set(r.body) == {ord("y")}, len(r.body))

    @case
    def app_environment_preload_modules_and_page_table():
        a = body(port, "/counter.lsp")
        b = body(port, "/counter.lsp")
        check(a.endswith("/hi-from-mod") and b.endswith("/hi-from-mod"), (a, b))
        ha, pa = map(int, a.split("/")[:2])
        hb, pb = map(int, b.split("/")[:2])
        check(hb == ha + 1 and pb == pa + 1, (a, b))
        check(body(port, "/env.lsp") == "userdata true table true", body(port, "/env.lsp"))

    @case
    def a_page_waiting_on_a_tcp_service_does_not_stall_others():
        release = threading.Event()
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        sport = lst.getsockname()[1]

        def service():
            c, _ = lst.accept()
            c.recv(100)
            release.wait(20)
            c.sendall(b"answer")
            c.close()
        t = threading.Thread(target=service, daemon=True)
        t.start()
        slow = Conn(port, timeout=30)
        slow.send("GET /client.lsp?port=%d HTTP/1.1\r\nHost: x\r\n\r\n" % sport)
        for _ in range(100):
            check(body(port, "/tags.lsp").startswith("<p>42"), "served while the page waits")
        release.set()
        r = slow.read_response()
        check(r.body == b"got answer", r.body)
        slow.close()
        lst.close()

    @case
    def sleeping_pages_run_concurrently():
        results = []

        def one():
            results.append(body(port, "/sleep.lsp"))
        threads = [threading.Thread(target=one) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        check(results == ["slept"] * 20, results)

    @case
    def req2sock_gives_the_raw_connection():
        c = Conn(port)
        c.send("GET /echo2sock.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        c.sock.settimeout(10)
        got = b""
        while len(got) < 4:
            got += c.sock.recv(100)
        c.send("ping")
        while len(got) < 8:
            got += c.sock.recv(100)
        check(got == b"RAW ping", got)
        c.close()

    @case
    def sock2req_hands_the_connection_back():
        c = Conn(port)
        c.send("GET /handback.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        check(c._line() == b"HELLO", "raw greeting")
        c.send("GET /tags.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
        check(r.status == 200 and r.body.startswith(b"<p>42"), r.body)
        check(c.request("GET", "/plain.txt").body == b"plain", "keep-alive after the handback")
        c.close()

    @case
    def httpc_client_in_a_page():
        r = body(port, "/httpc.lsp?port=%d&path=/flush.lsp" % port)
        check(r == "200 text/html; charset=utf-8 chunk1 chunk2 chunk3 chunk4 chunk5 end", r)
        r = body(port, "/httpc.lsp?port=%d&path=/plain.txt" % port)
        check(r == "200 text/plain; charset=utf-8 plain", r)
        r = body(port, "/httpc.lsp?port=%d&path=/redirect.lsp" % port)
        check(r.startswith("302 "), r)
        r = body(port, "/httpc.lsp?port=%d&path=/redirect.lsp&follow=3" % port)
        check(r.startswith("200 ") and "<p>42" in r, r)
        r = body(port, "/httpc.lsp?port=%d&path=/x" % free_port())
        check(r == "error cannotconnect", r)

    @case
    def dev_mode_shows_the_traceback():
        with serve(root, "--dev") as dev:
            r = get(dev.port, "/lines.lsp")
            check(r.status == 500 and b"lines.lsp:6:" in r.body and b"<pre>" in r.body, r.body)

    @case
    def pages_on_the_worker_pool():
        with serve(root, "--pages-on-pool", "--threads", "3") as pool:
            check(body(pool.port, "/where.lsp") == "false", "a worker runs the page, not a coroutine")
            check(body(srv.port, "/where.lsp") == "true", "the dispatcher's pages are coroutines")
            r = get(pool.port, "/flush.lsp")
            check(r.header("transfer-encoding") == "chunked" and r.body.endswith(b"chunk5 end"), r.body)
            check(get(pool.port, "/lines.lsp").status == 500, "an error is a 500 there too")
            check(body(pool.port, "/form.lsp?a=1&b=2") == "1|2|GET|2", "request data")
            lst = socket.socket()
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)

            def service():
                c, _ = lst.accept()
                c.recv(100)
                c.sendall(b"from-service")
                c.close()
            threading.Thread(target=service, daemon=True).start()
            check(body(pool.port, "/client.lsp?port=%d" % lst.getsockname()[1]) == "got from-service",
                  "a blocking connect and read in a worker")
            lst.close()
            check(pool.alive(), "alive")

    @case
    def demo_site_links_all_work():
        import re
        www = os.path.join(os.environ.get("REMORA_ROOT", "."), "examples", "www")
        with serve(www) as demo:
            index = body(demo.port, "/")
            links = re.findall(r'href="([^"]+)"', index)
            check(len(links) >= 9, links)
            for link in links:
                r = get(demo.port, "/" + link.lstrip("/"))
                check(r.status == (500 if link == "error.lsp" else 200), "%s: %d" % (link, r.status))
            check(b"status 200, application/json" in get(demo.port, "/client.lsp").body, "httpc page")
            c = Conn(demo.port)   # the WebSocket echo, by hand: handshake, one masked frame, its echo
            c.send("GET /ws.lsp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            r = c.read_response(head_only=True)
            check(r.status == 101 and r.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r.raw_head)
            mask = b"\x01\x02\x03\x04"
            c.send(b"\x81\x85" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello")))
            check(c._exact(7) == b"\x81\x05hello", "echoed text frame")
            c.close()

    @case
    def onunload_runs_at_shutdown_and_a_held_deferred_answer_ends():
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.sendall(b"GET /held.lsp HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"held" not in got:
            got += held.recv(4096)
        held.settimeout(0.3)
        try:
            got += held.recv(4096)
        except socket.timeout:
            pass
        check(not got.endswith(b"0\r\n\r\n"), "the page ended, its deferred answer did not")
        held.settimeout(10)
        srv.__exit__(None, None, None)
        while not got.endswith(b"0\r\n\r\n"):
            more = held.recv(4096)
            if not more:
                break
            got += more
        held.close()
        check(got.endswith(b"4\r\nheld\r\n0\r\n\r\n"), "the deferred answer was ended: %r" % got[-40:])
        with open(unload) as f:
            check(f.read() == "unloaded", "onunload wrote its file")
        check(srv.exitcode == 0, "clean exit: %s" % srv.exitcode)

    remove_site(root)
    done()


if __name__ == "__main__":
    main()
