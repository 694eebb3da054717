"""Proxy throughput: one multi-GiB TCP stream through remora's proxy (relayed in
Lua, ba.socket.pipe with splice, ba.socket.pipe with a buffer), nginx's stream
proxy, HAProxy and an nginx Lua cosocket proxy, with plain loopback as the
ceiling. The proxy is pinned to one core, the load (bench/proxy/blast.c: sender
and sink) to the other. Prints bench/README.md's JSON rows on stdout and a
markdown table of every path on stderr.

    python3 bench/proxy/bench.py          (make bench-proxy: sh bench/proxy/run.sh)
    BENCH_PROXY_BYTES (default 4 GiB), BENCH_PROXY_QUEUE (bytes in flight per
    direction, 256 KiB), BENCH_RUNS

The nginx Lua proxy: Debian packages no stream-lua module, so it is nginx's
http Lua module taking the connection over with ngx.req.socket(true) after a
request head (blast sends one first for that peer and does not count it), one
light thread per direction, receiveany + send."""
import contextlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import harness as H   # noqa: E402

BYTES = int(os.environ.get("BENCH_PROXY_BYTES", str(4 << 30)))
QUEUE = int(os.environ.get("BENCH_PROXY_QUEUE", str(256 << 10)))

NGINX_STREAM = """load_module %(mods)s/ngx_stream_module.so;
worker_processes 1; daemon off; pid %(dir)s/nginx.pid; error_log %(dir)s/error.log error;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:%(port)d; proxy_pass 127.0.0.1:%(sink)d; proxy_buffer_size %(queue)d; } }
"""

HAPROXY = """global
  nbthread 1
  tune.bufsize %(queue)d
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen proxy
  bind 127.0.0.1:%(port)d
  server upstream 127.0.0.1:%(sink)d
"""

# Both directions, as the other proxies relay; the upstream -> client one is
# stopped when the client -> upstream one ends (the sink never answers).
NGINX_LUA = """location / { content_by_lua_block {
    local down = assert(ngx.req.socket(true))
    local up = ngx.socket.tcp()
    up:settimeouts(3000, 60000, 60000)
    down:settimeouts(3000, 60000, 60000)
    local ok, err = up:connect("127.0.0.1", %(sink)d)
    if not ok then ngx.log(ngx.ERR, "upstream: ", err) return end
    local function pump(src, dst)
      while true do
        local data, err = src:receiveany(%(queue)d)
        if not data then return err end
        local ok, err = dst:send(data)
        if not ok then return err end
      end
    end
    local back = ngx.thread.spawn(pump, up, down)
    pump(down, up)
    ngx.thread.kill(back)
    up:close()
  } }"""


def blast_binary():
    out = os.path.join(H.tmpdir("proxy-blast"), "blast")
    subprocess.run(["cc", "-O2", "-o", out, os.path.join(H.ROOT, "bench", "proxy", "blast.c"), "-lpthread"],
                   check=True)
    return out


def transfer(blast, sink, target, head):
    """GB/s of one BYTES transfer; the run fails unless every byte arrived."""
    argv = ["taskset", "-c", H.CLIENT_CPU, blast, sink, target, BYTES] + ([head] if head else [])
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("blast: %s%s" % (out.stdout, out.stderr))
    return float(out.stdout.split(":")[1].split()[0]), H.command(argv)


def config(name, text, **values):
    d = H.tmpdir(name)
    path = os.path.join(d, name + ".conf")
    with open(path, "w") as f:
        f.write(text % dict(values, dir=d, mods=H.NGINX_MODULES, queue=QUEUE))
    return d, path


def servers(stack, sink):
    """{path name: (Server or None, port, head)}: every proxy started at once on
    a port of its own (an idle proxy costs nothing), and the ceiling."""
    proxy = os.path.join(H.ROOT, "examples", "proxy", "proxy.lua")
    out = {"loopback": (None, sink, None)}
    for mode in ("lua", "pipe", "buffer"):
        port = H.free_port()
        out["remora " + mode] = (stack.enter_context(H.Server(
            "remora-proxy-" + mode, [H.BIN, proxy, port, "127.0.0.1", sink, "mode=" + mode,
                                     "queuelen=%d" % QUEUE], port)), port, None)
    port = H.free_port()
    d, conf = config("nginx-stream", NGINX_STREAM, port=port, sink=sink)
    out["nginx stream"] = (stack.enter_context(H.Server(
        "nginx-stream", ["nginx", "-p", d, "-e", d + "/error.log", "-c", conf], port)), port, None)
    port = H.free_port()
    d, conf = config("haproxy", HAPROXY, port=port, sink=sink)
    out["HAProxy"] = (stack.enter_context(H.Server("haproxy", ["haproxy", "-db", "-f", conf], port)), port, None)
    port = H.free_port()
    out["nginx+lua cosocket"] = (stack.enter_context(H.nginx(
        "nginx-lua-proxy", port, NGINX_LUA % {"sink": sink, "queue": QUEUE},
        "lua_socket_buffer_size %d;\n client_body_buffer_size %d;\n" % (QUEUE, QUEUE))), port, "http")
    return out


def paths(blast, sink):
    """{path name: (GB/s per run, GB per proxy CPU second per run, commands,
    quiet)}. The runs are interleaved, so that a slow stretch of this shared
    machine hits every path alike."""
    with contextlib.ExitStack() as stack:
        procs = servers(stack, sink)
        res = {name: ([], [], [], True) for name in procs}
        for _ in range(H.RUNS):
            for name, (server, port, head) in procs.items():
                (gbs, cmd), ticks, _, quiet = H.quiet_run(lambda: transfer(blast, sink, port, head),
                                                          [server] if server else [])
                gbs_runs, per_cpu, cmds, q = res[name]
                gbs_runs.append(gbs)
                if server and ticks[0]:   # a short run may not last one clock tick
                    per_cpu.append(BYTES / 1e9 / (ticks[0] / H.TICK))
                res[name] = (gbs_runs, per_cpu, [server.command, cmd] if server else [cmd], q and quiet)
        for name, (gbs_runs, per_cpu, _, _) in res.items():
            H.log("%s: GB/s %s; GB per proxy CPU second %s" % (name, " ".join("%.3f" % f for f in gbs_runs),
                                                             " ".join("%.2f" % f for f in per_cpu)))
        return res


def noisy_note(*results):
    if all(r[3] for r in results):
        return {}
    return {"note": "some runs were never quiet (other processes used the CPU); the quietest try was kept"}


def rows(res):
    what = "%d MiB, one connection, %d KiB per direction" % (BYTES >> 20, QUEUE >> 10)
    lua = res["remora lua"]
    peers = ("nginx stream", "HAProxy", "nginx+lua cosocket")
    best = max(peers, key=lambda p: H.spread(res[p][0])[0])
    yield H.row("proxy, Lua cosocket relay vs the best proxy (%s)" % what, "GB/s", lua[0], res[best][0], best,
                1.0, commands=lua[2] + res[best][2], **noisy_note(lua, res[best]))
    for p in peers:
        if p != best:
            yield H.row("proxy, Lua cosocket relay vs %s" % p, "GB/s", lua[0], res[p][0], p, None,
                        commands=res[p][2], **noisy_note(lua, res[p]))
    # The proxy's own CPU time is what contention on a shared machine moves least.
    for p in (p for p in peers if lua[1] and res[p][1]):
        yield H.row("proxy, Lua cosocket relay vs %s, per proxy CPU second" % p, "GB/CPU-s", lua[1], res[p][1],
                    p, None, commands=res[p][2], **noisy_note(lua, res[p]))
    yield H.row("proxy, ba.socket.pipe (splice) vs direct loopback", "GB/s", res["remora pipe"][0],
                res["loopback"][0], "loopback (ceiling)", 0.8,
                commands=res["remora pipe"][2] + res["loopback"][2], **noisy_note(res["remora pipe"], res["loopback"]))
    yield H.row("proxy, ba.socket.pipe (buffer) vs direct loopback", "GB/s", res["remora buffer"][0],
                res["loopback"][0], "loopback (ceiling)", None, commands=res["remora buffer"][2])


def table(res):
    ceiling = H.spread(res["loopback"][0])[0]
    lines = ["Proxy throughput: %d MiB per run, one connection, median of %d; %d KiB per direction"
             % (BYTES >> 20, H.RUNS, QUEUE >> 10), "",
             "| path | GB/s (min-max) | ratio to loopback | GB per proxy CPU second |", "|---|---|---|---|"]
    for name, (figures, per_cpu, _, _) in res.items():
        med, lo, hi = H.spread(figures)
        cpu = "%.2f" % H.spread(per_cpu)[0] if per_cpu else "-"
        lines.append("| %s | %.3f (%.3f-%.3f) | %.2f | %s |" % (name, med, lo, hi, med / ceiling, cpu))
    return "\n".join(lines)


def main():
    blast = blast_binary()
    res = paths(blast, H.free_port())
    for r in rows(res):
        H.emit(r)
    print(table(res), file=sys.stderr)


main()
