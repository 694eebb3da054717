"""Workload 6, TLS: remora's HTTP server with --tls-listen against nginx, the same
ECDSA P-256 certificate, TLS 1.2 with ECDHE-ECDSA-AES128-GCM-SHA256 on both
(mbedTLS 2.28 has no TLS 1.3 server), one server process (one nginx worker)
pinned to one core, the client on the other:

- full handshakes (`openssl s_time -new`) per second of *server* CPU time (the
  client is the limit in wall time), session reuse off;
- resumed handshakes (`openssl s_time -reuse`: session tickets, which both
  servers issue and s_time offers back) per second, and per second of server
  CPU time;
- keep-alive HTTPS requests per second (wrk over https): a 5-byte static file
  served by both, and a Lua page that writes "hello" (remora's LSP, nginx's
  content_by_lua_block).

Rows on stdout (bench/README.md), progress on stderr.
Usage: python3 bench/tls/bench.py [seconds per run] (make bench-tls)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
if len(sys.argv) > 1:
    os.environ["BENCH_SECONDS"] = sys.argv[1]
import harness as h  # noqa: E402

CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"
CONNS = 32   # wrk connections: enough to keep one server core busy

NGINX = """
  listen 127.0.0.1:%(tls)d ssl;
  ssl_certificate %(dir)s/cert.pem; ssl_certificate_key %(dir)s/key.pem;
  ssl_protocols TLSv1.2; ssl_prefer_server_ciphers on; ssl_ciphers %(cipher)s;
  ssl_session_cache shared:S:10m; ssl_session_tickets on;
  root %(dir)s/app;
  location = /hello.lsp { default_type text/html; content_by_lua_block { ngx.print("hello") } }
"""


def setup():
    """A folder with the certificate, its key, app/hello.txt and app/hello.lsp."""
    d = h.tmpdir("tls")
    os.chmod(d, 0o755)   # nginx's worker runs as nobody
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", d + "/key.pem", "-out", d + "/cert.pem", "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    os.mkdir(d + "/app")
    with open(d + "/app/hello.txt", "w") as f:
        f.write("hello")
    with open(d + "/app/hello.lsp", "w") as f:
        f.write('<?lsp response:write("hello") ?>')
    return d


def s_time(port, mode):
    """Handshakes per wall second of one `openssl s_time` run, and its command."""
    argv = ["taskset", "-c", h.CLIENT_CPU, "openssl", "s_time", "-connect", "127.0.0.1:%d" % port, mode,
            "-time", str(h.SECONDS), "-cipher", CIPHER]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=h.SECONDS * 4 + 30).stdout
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    if not m or int(m.group(1)) == 0:
        raise RuntimeError("s_time said:\n" + out)
    return {"count": int(m.group(1)), "secs": float(m.group(2)), "cmd": h.command(argv)}


def measure(server, tls_port):
    """Per run: full handshakes per server CPU second, resumed handshakes per
    second, keep-alive req/s of the file and of the page; the commands; whether
    every run was quiet."""
    out = {"full": [], "resumed": [], "resumed_cpu": [], "file": [], "page": [], "file_cpu": [], "page_cpu": []}
    cmds, quiet = {}, True
    urls = {k: "https://127.0.0.1:%d/hello.%s" % (tls_port, ext) for k, ext in (("file", "txt"), ("page", "lsp"))}
    for url in urls.values():
        h.wrk(url, CONNS, seconds=1)   # warm-up, and a check that it answers 200
    for _ in range(h.RUNS):
        r, ticks, _, q = h.quiet_run(lambda: s_time(tls_port, "-new"), [server])
        out["full"].append(r["count"] / (ticks[0] / h.TICK) if ticks[0] else float("nan"))
        cmds["full"], quiet = r["cmd"], quiet and q
        r, ticks, _, q = h.quiet_run(lambda: s_time(tls_port, "-reuse"), [server])
        out["resumed"].append(r["count"] / r["secs"])
        out["resumed_cpu"].append(r["count"] / (ticks[0] / h.TICK) if ticks[0] else float("nan"))
        cmds["resumed"] = cmds["resumed_cpu"] = r["cmd"]
        quiet = quiet and q
        for key, url in urls.items():
            r, ticks, _, q = h.quiet_run(lambda: h.wrk(url, CONNS), [server])
            out[key].append(r["rps"])
            out[key + "_cpu"].append(r["requests"] / (ticks[0] / h.TICK) if ticks[0] else float("nan"))
            cmds[key] = cmds[key + "_cpu"] = r["cmd"]
            quiet = quiet and q
    h.log("%s: %s" % (server.name, {k: " ".join("%.0f" % x for x in v) for k, v in out.items()}))
    return out, cmds, quiet


def main():
    d = setup()
    port, tls = h.free_port(), h.free_port()
    with h.Server("remora-tls", [h.BIN, "--state", h.tmpdir("tls-state"), "--cert", d + "/cert.pem",
                                 "--key", d + "/key.pem", "-l", "127.0.0.1:%d" % port, d + "/app",
                                 "--tls-listen", "127.0.0.1:%d" % tls], tls) as s:
        remora, rcmds, rquiet = measure(s, tls)
        rcmd = s.command
    with h.nginx("nginx-tls", port, NGINX % {"tls": tls, "dir": d, "cipher": CIPHER}) as s:
        h.wait_port(tls, s.proc)
        nginx, ncmds, nquiet = measure(s, tls)
        ncmd = s.command
    noisy = "" if rquiet and nquiet else "; some runs were never quiet, the quietest try was kept"
    cost = ("server CPU per full handshake: remora (mbedTLS 2.28) %.2f ms, nginx (OpenSSL) %.2f ms"
            % (1e3 / h.spread(remora["full"])[0], 1e3 / h.spread(nginx["full"])[0]))
    for key, workload, unit, target, note in (
            ("full", "TLS 1.2 full handshakes (ECDSA P-256), per server CPU second", "handshakes/CPU-s", 0.5, cost),
            ("resumed", "TLS 1.2 resumed handshakes", "handshakes/s", 1.0, ""),
            ("file", "HTTPS keep-alive, 5-byte static file, %d connections" % CONNS, "req/s", 1.0, ""),
            ("page", "HTTPS keep-alive, Lua page \"hello\" (LSP vs content_by_lua), %d connections" % CONNS,
             "req/s", 1.0, ""),
            # what contention on a shared machine moves least
            ("resumed_cpu", "TLS 1.2 resumed handshakes (tickets), per server CPU second", "handshakes/CPU-s", None,
             ""),
            ("file_cpu", "HTTPS keep-alive, 5-byte static file, per server CPU second", "req/CPU-s", None, ""),
            ("page_cpu", "HTTPS keep-alive, Lua page \"hello\", per server CPU second", "req/CPU-s", None, "")):
        extra = {"note": (note + noisy).lstrip("; ")} if note + noisy else {}
        h.emit(h.row(workload, unit, remora[key], nginx[key], "nginx (OpenSSL)", target,
                     commands=[rcmd, rcmds[key], ncmd, ncmds[key]], **extra))


main()
