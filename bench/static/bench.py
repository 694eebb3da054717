"""Workload 3: a static 1 MiB file over keep-alive connections, remora's
static file handler against nginx (sendfile on), both serving the same
directory; then what compressing on the fly costs the other clients: the
p99 latency of a small file while two connections download a 1 MB text file
gzipped, remora against nginx's gzip filter. Rows on stdout
(bench/README.md), progress on stderr."""
import hashlib
import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import harness as h  # noqa: E402

CONNS = 8
SIZE = 1 << 20


def site():
    d = h.tmpdir("static-site")
    os.chmod(d, 0o755)   # nginx's worker runs as nobody
    with open(os.path.join(d, "file.bin"), "wb") as f:
        f.write(os.urandom(SIZE))
    return d


def check(url, want):
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read()
    if r.status != 200 or hashlib.sha256(body).digest() != want:
        raise RuntimeError("%s answered %s with %d bytes that are not the file" % (url, r.status, len(body)))


def main():
    root = site()
    with open(os.path.join(root, "file.bin"), "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    rport, nport = h.free_port(), h.free_port()
    nginx_conf = ("root %s;\n  sendfile on;\n  tcp_nopush on;\n  gzip on;\n  gzip_types text/plain;\n"
                  "  gzip_comp_level 6;" % root)
    with h.remora_http("remora-static", rport, root) as rem, \
            h.nginx("nginx-static", nport, nginx_conf, modules=()) as ngx:
        targets = [("remora", rem, "http://127.0.0.1:%d/file.bin" % rport),
                   ("nginx", ngx, "http://127.0.0.1:%d/file.bin" % nport)]
        out = {}
        for label, srv, url in targets:
            check(url, digest)
            h.wrk(url, CONNS, seconds=1)
            out[label] = []
        for i in range(h.RUNS):
            for label, srv, url in targets:
                res, ticks, other, quiet = h.quiet_run(lambda: h.wrk(url, CONNS), [srv])
                res.update(quiet=quiet, cpu_s=ticks[0] / h.TICK)
                h.log("%s run %d: %.0f MiB/s, server CPU %.2f s, other %.2f cores"
                      % (label, i + 1, res["rps"], res["cpu_s"], other))
                out[label].append(res)
        r, n = out["remora"], out["nginx"]
        noisy = sum(not x["quiet"] for x in r + n)
        h.emit(h.row("static 1 MiB file, keep-alive", "MiB/s", [x["rps"] for x in r],
                     [x["rps"] for x in n], "nginx sendfile", None,
                     commands=[rem.command, ngx.command, r[0]["cmd"], n[0]["cmd"]],
                     note="%d run(s) never quiet" % noisy if noisy else None))
        per_cpu = lambda runs: [x["requests"] / max(x["cpu_s"], 0.01) for x in runs]
        h.emit(h.row("static 1 MiB file, per server CPU second", "MiB/CPU-s", per_cpu(r), per_cpu(n),
                     "nginx sendfile", None))
        gzip_beside(root, rport, nport)


def beside_gzip(port):
    """p99 ms of a small file over one connection while two others download
    long.txt gzipped, all from the client core."""
    url = "http://127.0.0.1:%d/" % port
    heavy = subprocess.Popen(["taskset", "-c", h.CLIENT_CPU, "wrk", "-t1", "-c2", "-d%ds" % (h.SECONDS + 2),
                              "-H", "Accept-Encoding: gzip", url + "long.txt"], stdout=subprocess.DEVNULL)
    try:
        return h.wrk(url + "a.txt", 1)
    finally:
        heavy.wait()


def gzip_beside(root, rport, nport):
    with open(os.path.join(root, "long.txt"), "w") as f:
        f.write("".join("line %d of a long text file, %s\n" % (i, "abc" * (i % 7)) for i in range(24000)))
    with open(os.path.join(root, "a.txt"), "w") as f:
        f.write("alpha\n")
    out = {"remora": [], "nginx": []}
    for _ in range(h.RUNS):
        for label, port in (("remora", rport), ("nginx", nport)):
            res = beside_gzip(port)
            h.log("%s: small file beside gzip downloads: p99 %.2f ms, %.0f req/s" % (label, res["p99_ms"], res["rps"]))
            out[label].append(res)
    r, n = out["remora"], out["nginx"]
    h.emit(h.row("small file p99 beside 2 gzip downloads of a 1 MB text file", "ms", [x["p99_ms"] for x in r],
                 [x["p99_ms"] for x in n], "nginx gzip on", 1.0, higher_is_better=False,
                 commands=["wrk -t1 -c2 -H 'Accept-Encoding: gzip' .../long.txt", r[0]["cmd"]]))


if __name__ == "__main__":
    main()
