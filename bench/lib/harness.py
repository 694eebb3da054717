"""What the benchmark scripts share: servers pinned to one core, wrk pinned to
the other, runs repeated until no other process used the CPU, CPU time and RSS
of a process tree, medians, and the JSON rows bench/run.py folds into its
table (the row format is in bench/README.md)."""
import atexit
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
RUNS = max(3, int(os.environ.get("BENCH_RUNS", "3")))
SECONDS = max(1, int(os.environ.get("BENCH_SECONDS", "5")))
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("BENCH_CLIENT_CPU", "1")
TRIES = max(1, int(os.environ.get("BENCH_TRIES", "6")))
NOISE = 0.05       # CPU of other processes tolerated during a run, in cores
TICK = os.sysconf("SC_CLK_TCK")

# SIGTERM unwinds like an exception, so that every Server's `with` stops it.
signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def emit(row):
    """One result row for bench/run.py."""
    print(json.dumps(row), flush=True)


def command(argv):
    """argv as a shell line, with the repository and the temporary folders made
    relative ($TMP/bench-NAME) so that the report holds no path of this machine."""
    line = " ".join(shlex.quote(str(a)) for a in argv).replace(ROOT + "/", "")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/bench-([a-z-]+?)-[a-z0-9_]{8}\b", r"$TMP/bench-\1", line)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raise_fd_limit():
    """Soft descriptor limit up to the hard one (the idle workload needs ~19,000)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_tmpdirs = []


def tmpdir(name):
    """A temporary folder, removed when the script ends."""
    d = tempfile.mkdtemp(prefix="bench-%s-" % name)
    _tmpdirs.append(d)
    return d


atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _tmpdirs])


# ---- processes ----

def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (state is [0]), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f:
                children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_ticks(pid):
    """utime + stime of a process tree, in clock ticks."""
    total = 0
    for p in tree(pid):
        f = _stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])
    return total


def rss_kib(pid):
    """Resident set of a process tree, KiB."""
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, proc, timeout=15.0, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited early (status %s)" % proc.returncode)
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


class Server:
    """A server pinned to the server core; stops (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, name, argv, port, cwd=None, env=None):
        self.name = name
        self.argv = ["taskset", "-c", SERVER_CPU] + [str(a) for a in argv]
        self.logpath = os.path.join(tmpdir(name), "server.log")
        e = dict(os.environ)
        e.update(env or {})
        with open(self.logpath, "wb") as logf:
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=cwd or ROOT, env=e,
                                         preexec_fn=raise_fd_limit, start_new_session=True)
        try:
            wait_port(port, self.proc)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError("%s: %s\n%s" % (name, e, self.log()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def command(self):
        return command(self.argv)

    def cpu_ticks(self):
        return cpu_ticks(self.proc.pid)

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass


# ---- quiet runs ----

def _busy_ticks():
    """user + nice + system of all cores (irq and softirq left out: loopback
    traffic lands there and is ours)."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    return int(v[1]) + int(v[2]) + int(v[3])


def _own_ticks():
    me = os.times()
    return (me.user + me.system + me.children_user + me.children_system) * TICK


def measured(fn, servers):
    """fn() with the CPU used meanwhile by the servers (ticks, per server) and by
    processes that are neither those servers, nor us, nor our reaped children
    (the load generator): returns (result, server_ticks, other_cores)."""
    t0, b0, o0 = time.monotonic(), _busy_ticks(), _own_ticks()
    s0 = [s.cpu_ticks() for s in servers]
    result = fn()
    s1 = [s.cpu_ticks() for s in servers]
    wall, busy, own = time.monotonic() - t0, _busy_ticks() - b0, _own_ticks() - o0
    server_ticks = [b - a for a, b in zip(s0, s1)]
    other = (busy - own - sum(server_ticks)) / TICK / max(wall, 1e-3)
    return result, server_ticks, max(0.0, other)


def quiet_run(fn, servers):
    """measured(fn, servers) repeated until other processes stayed under NOISE
    cores, at most TRIES times; returns (result, server_ticks, other, quiet)."""
    best = None
    for attempt in range(TRIES):
        r = measured(fn, servers)
        if r[2] <= NOISE:
            return r + (True,)
        log("other processes used %.2f cores during the run; again" % r[2])
        if best is None or r[2] < best[2]:
            best = r
        time.sleep(2 + attempt)
    return best + (False,)


# ---- wrk ----

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url, conns, seconds=None, headers=(), threads=1):
    """One wrk run pinned to the client core: {rps, p99_ms, requests, errors, cmd}."""
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t%d" % threads, "-c%d" % conns,
            "-d%ds" % (seconds or SECONDS), "--latency"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=(seconds or SECONDS) + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    p = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    if not (m and n and p):
        raise RuntimeError("wrk output not understood:\n" + out)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError("wrk got %s non-2xx answers from %s" % (bad.group(1), url))
    return {"rps": float(m.group(1)), "requests": int(n.group(1)), "errors": errors,
            "p99_ms": float(p.group(1)) * _UNITS[p.group(2)], "cmd": command(argv)}


# ---- figures ----

def spread(values):
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def row(workload, unit, remora, peer, peer_name, target, higher_is_better=True, **extra):
    """A result row from lists of per-run figures (peer may be None)."""
    r = {"workload": workload, "unit": unit, "higher_is_better": higher_is_better,
         "target": target, "peer_name": peer_name}
    r["remora"], r["remora_min"], r["remora_max"] = spread(remora)
    if peer:
        r["peer"], r["peer_min"], r["peer_max"] = spread(peer)
    else:
        r["peer"] = None
    r.update(extra)
    return r


# ---- the servers most workloads compare ----

NGINX_MODULES = "/usr/lib/nginx/modules"


def nginx(name, port, server_block, http_extra="", modules=("ndk_http_module", "ngx_http_lua_module")):
    """nginx with one worker (the master forks it on the pinned core), no access
    log, keep-alive without a request limit, and server_block inside
    `server { listen 127.0.0.1:PORT; ... }`."""
    d = tmpdir(name)
    loads = "".join("load_module %s/%s.so;\n" % (NGINX_MODULES, m) for m in modules)
    temps = "".join("%s_temp_path %s/%s;\n" % (t, d, t)
                    for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(loads + "daemon off;\nmaster_process on;\nworker_processes 1;\npid %s/nginx.pid;\n"
                "error_log %s/error.log warn;\nevents { worker_connections 20000; }\n"
                "worker_rlimit_nofile 20000;\n"
                "http {\n access_log off;\n keepalive_requests 100000000;\n %s%s\n"
                " server {\n  listen 127.0.0.1:%d;\n  %s\n }\n}\n"
                % (d, d, temps, http_extra, port, server_block))
    return Server(name, ["nginx", "-p", d, "-e", d + "/error.log", "-c", conf], port)


def remora_http(name, port, appdir, *options):
    """remora serving appdir with `-l`; its state directory is a fresh temporary one."""
    return Server(name, [BIN, "--state", tmpdir(name + "-state")] + list(options)
                  + ["-l", "127.0.0.1:%d" % port, appdir], port)
