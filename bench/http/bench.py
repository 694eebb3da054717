"""Workloads 1 and 2: an LSP page that writes "hello", against nginx with
content_by_lua_block doing the same (and nginx's `return 200` as the ceiling),
first over keep-alive connections, then with a new connection per request.
Rows on stdout (bench/README.md), progress on stderr."""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness as h  # noqa: E402

CONNS = 32           # wrk connections: enough to keep one server core busy
CLOSE = "Connection: close"


def app():
    """The remora app: /hello.lsp runs Lua for every request, as content_by_lua does."""
    d = h.tmpdir("http-app")
    with open(os.path.join(d, "hello.lsp"), "w") as f:
        f.write('<?lsp response:write("hello") ?>')
    return d


NGINX = """
  location = /hello { default_type text/html; content_by_lua_block { ngx.print("hello") } }
  location = /ceiling { default_type text/html; return 200 "hello"; }
"""


def check(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    if r.status != 200 or body != b"hello":
        raise RuntimeError("%s answered %s %r, not 200 hello" % (url, r.status, body[:80]))


def measure(targets, headers=()):
    """RUNS wrk runs of each (label, server, url), interleaved so that a slow
    stretch of the machine hits every target alike; per label a list of wrk
    results with the server's CPU seconds and whether the run was quiet."""
    out = {label: [] for label, _, _ in targets}
    for label, srv, url in targets:   # warm-up: page cache, Lua, allocator
        h.wrk(url, CONNS, seconds=1, headers=headers)
    for i in range(h.RUNS):
        for label, srv, url in targets:
            res, ticks, other, quiet = h.quiet_run(lambda: h.wrk(url, CONNS, headers=headers), [srv])
            res.update(cpu_s=ticks[0] / h.TICK, quiet=quiet, other=other)
            h.log("%s run %d: %.0f req/s, p99 %.2f ms, server CPU %.2f s, other %.2f cores, %d errors"
                  % (label, i + 1, res["rps"], res["p99_ms"], res["cpu_s"], other, res["errors"]))
            out[label].append(res)
    return out


def per_cpu(runs):
    """Requests per second of server CPU: the figure other processes on the
    server's core disturb least."""
    return [x["requests"] / max(x["cpu_s"], 0.01) for x in runs]


def note(*runs):
    noisy = sum(not r["quiet"] for rs in runs for r in rs)
    errors = sum(r["errors"] for rs in runs for r in rs)
    parts = []
    if noisy:
        parts.append("%d run(s) never quiet: other processes used the CPU" % noisy)
    if errors:
        parts.append("wrk counted %d socket errors" % errors)
    return "; ".join(parts) or None


def main():
    rport, nport = h.free_port(), h.free_port()
    with h.remora_http("remora-http", rport, app()) as rem, h.nginx("nginx-lua", nport, NGINX) as ngx:
        lsp = "http://127.0.0.1:%d/hello.lsp" % rport
        lua = "http://127.0.0.1:%d/hello" % nport
        ceiling = "http://127.0.0.1:%d/ceiling" % nport
        for url in (lsp, lua, ceiling):
            check(url)
        cmds = [rem.command, ngx.command]

        ka = measure([("remora", rem, lsp), ("nginx+lua", ngx, lua), ("nginx return", ngx, ceiling)])
        r, n, c = ka["remora"], ka["nginx+lua"], ka["nginx return"]
        wcmd = [r[0]["cmd"], n[0]["cmd"], c[0]["cmd"]]
        h.emit(h.row("LSP hello, keep-alive", "req/s", [x["rps"] for x in r], [x["rps"] for x in n],
                     "nginx+lua", 1.25, commands=cmds + wcmd, note=note(r, n)))
        h.emit(h.row("LSP hello, keep-alive, p99 latency", "ms", [x["p99_ms"] for x in r],
                     [x["p99_ms"] for x in n], "nginx+lua", 1.0, higher_is_better=False))
        h.emit(h.row("LSP hello, keep-alive, per server CPU second", "req/CPU-s", per_cpu(r), per_cpu(n),
                     "nginx+lua", 1.25))
        h.emit(h.row("LSP hello vs nginx `return 200` (ceiling)", "req/s", [x["rps"] for x in r],
                     [x["rps"] for x in c], "nginx return 200", None, note=note(c)))

        cl = measure([("remora", rem, lsp), ("nginx+lua", ngx, lua)], headers=[CLOSE])
        r, n = cl["remora"], cl["nginx+lua"]
        wcmd = [r[0]["cmd"], n[0]["cmd"]]
        h.emit(h.row("LSP hello, new connection per request", "req/s", [x["rps"] for x in r],
                     [x["rps"] for x in n], "nginx+lua", None, commands=wcmd, note=note(r, n)))
        h.emit(h.row("LSP hello, new connection per request, per server CPU second", "req/CPU-s",
                     per_cpu(r), per_cpu(n), "nginx+lua", 1.0))


if __name__ == "__main__":
    main()
