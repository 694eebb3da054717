"""What the page hot path's shortcuts must not change: a long pipeline of
pages on one connection (each page starts from the end of the previous one,
never nested inside it), closures made by a page that outlive it (they keep
their own, expired, request even while another request runs), the lazily made
response-field table, `page` tables per page file, and the compiled-page
cache across edits of a page."""
import os
import time

from lib import case, check, done
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
}


def main():
    root = make_site(SITE)
    with serve(root) as srv:
        port = srv.port

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

    remove_site(root)
    done()


if __name__ == "__main__":
    main()
