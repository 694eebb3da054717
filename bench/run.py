"""make bench: installs the peers, runs every workload's script (bench/NAME/bench.py
or bench.sh), folds the JSON rows they print into one markdown table with the
exact commands, prints it and writes bench/results/latest.md.

    python3 bench/run.py [--setup-only]
    BENCH=http,idle python3 bench/run.py     only those workload folders
The row format and the environment a script gets are in bench/README.md."""
import datetime
import json
import os
import platform
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Debian packages of the peers and the tools that drive them, each with a file
# that shows it is there (a node built elsewhere brings its own npm).
PEER_PACKAGES = {"nginx": "/usr/sbin/nginx",
                 "libnginx-mod-http-lua": "/usr/lib/nginx/modules/ngx_http_lua_module.so",
                 "libnginx-mod-stream": "/usr/lib/nginx/modules/ngx_stream_module.so",
                 "haproxy": "/usr/sbin/haproxy", "wrk": "/usr/bin/wrk", "nodejs": "/usr/bin/node",
                 "npm": "/usr/bin/npm", "openssl": "/usr/bin/openssl", "util-linux": "/usr/bin/taskset"}
# The numbering first; folders not named here follow in name order.
ORDER = ["http", "static", "proxy", "websocket", "tls", "idle", "slowloris", "screen"]
TIMEOUT = 3600   # seconds one workload may take


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def setup():
    """Installs missing peer packages (as root) and each workload's npm packages."""
    missing = [p for p, path in PEER_PACKAGES.items() if not os.path.exists(path)]
    if missing:
        if os.getuid() != 0:
            sys.exit("bench: missing packages; run as root: apt-get install -y " + " ".join(missing))
        log("installing", *missing)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       check=True, env=env, stdout=subprocess.DEVNULL)
    for name in workloads():
        d = os.path.join(HERE, name)
        if os.path.exists(os.path.join(d, "package-lock.json")) and not os.path.isdir(os.path.join(d, "node_modules")):
            log("npm ci in bench/" + name)
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=d, check=True)


def entry(name):
    # Debian's Python has the modules the scripts use (numpy, websockets),
    # whichever Python runs this file.
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    for script, runner in (("bench.py", python), ("bench.sh", "sh"), ("run.sh", "sh")):
        path = os.path.join(HERE, name, script)
        if os.path.exists(path):
            return [runner, path]
    return None


def workloads():
    names = [n for n in os.listdir(HERE) if entry(n)]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    wanted = os.environ.get("BENCH")
    return [n for n in names if not wanted or n in wanted.split(",")]


def run(name):
    """The rows one workload printed (plus one saying it broke, if it did), and
    the rest of its output: a script that prints its own table instead of rows
    gets that table shown as a section of the report."""
    argv = entry(name)
    log("== %s: %s" % (name, " ".join(argv)))
    env = dict(os.environ, REMORA_BIN=os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora")))
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as p:
        try:
            out, _ = p.communicate(timeout=TIMEOUT)
            status = p.returncode
        except BaseException as e:   # timeout, or we were told to stop: the script stops its servers
            p.terminate()
            out, _ = p.communicate()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            status = "timeout"
    rows, text = [], []
    for line in out.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            text.append(line)
    if status != 0:
        rows.append({"workload": "bench/%s" % name, "broken": True,
                     "note": "bench/%s exited with %s; see its output above" % (name, status)})
    return rows, "\n".join(text).strip()


def number(x):
    if x is None:
        return "—"
    if abs(x) >= 100:
        return "{:,.0f}".format(x)
    return "%.1f" % x if abs(x) >= 10 else "%.2f" % x


def figure(r, who):
    v = r.get(who)
    if v is None:
        return "—"
    lo, hi = r.get(who + "_min"), r.get(who + "_max")
    return number(v) + (" (%s–%s)" % (number(lo), number(hi)) if lo is not None and hi is not None else "")


def verdict(r):
    """(ratio, target text, verdict) of a row."""
    hib = r.get("higher_is_better", True)
    ratio = r["remora"] / r["peer"] if r.get("peer") else None
    target, limit = r.get("target"), r.get("limit")
    ok = None
    if isinstance(target, (int, float)) and ratio is not None:
        ok = ratio >= target if hib else ratio <= target
    if isinstance(limit, (int, float)):
        within = r["remora"] >= limit if hib else r["remora"] <= limit
        ok = within if ok is None else ok and within
    text = r.get("target_text")
    if text is None:
        parts = []
        if isinstance(target, (int, float)):
            parts.append("%s %gx" % (">=" if hib else "<=", target))
        if isinstance(limit, (int, float)):
            parts.append("%s %g %s" % (">=" if hib else "<=", limit, r.get("unit", "")))
        text = ", ".join(parts) or "—"
    v = r.get("verdict") or {True: "meets", False: "misses", None: "—"}[ok]
    return ("%.2fx" % ratio if ratio is not None else "—"), text, v


def table(rows):
    lines = ["| workload | unit | remora | peer | ratio | target | verdict |",
             "|---|---|---|---|---|---|---|"]
    notes, commands = [], []
    for r in rows:
        if r.get("broken"):
            lines.append("| %s | | | | | | broken |" % r["workload"])
        else:
            ratio, target, v = verdict(r)
            peer = figure(r, "peer") + (" %s" % r["peer_name"] if r.get("peer_name") and r.get("peer") else "")
            lines.append("| %s | %s | %s | %s | %s | %s | %s |"
                         % (r["workload"], r.get("unit", ""), figure(r, "remora"), peer, ratio, target, v))
        if r.get("note"):   # a script may give several rows one note: shown once
            same = next((n for n in notes if n[1] == r["note"]), None)
            if same:
                same[0].append(r["workload"])
            else:
                notes.append(([r["workload"]], r["note"]))
        # Paths inside the checkout are shown relative to it: the report names no machine's folders.
        mine = [c.replace(ROOT + os.sep, "") for c in r.get("commands", [])]
        commands += [c for c in mine if c not in commands]
    out = "\n".join(lines) + "\n"
    if notes:
        out += "\nNotes:\n" + "\n".join("- %s: %s" % ("; ".join(w), n) for w, n in notes) + "\n"
    if commands:
        out += "\nCommands (temporary paths and ports differ per run):\n\n" + \
               "\n".join("    " + c for c in commands) + "\n"
    return out


def version(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "absent"


def header():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown")
    return ("# remora side by side with its peers\n\n"
            "%s, remora %s, %s, %d cores (%s), server on core %s, load on core %s, %s runs of %s s per figure "
            "(median, min–max), a noisy run tried up to %s times.\n\nPeers: %s; %s; %s; node %s; %s.\n\n"
            % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), commit or "?", platform.release(),
               os.cpu_count(), cpu, os.environ.get("BENCH_SERVER_CPU", "0"),
               os.environ.get("BENCH_CLIENT_CPU", "1"), os.environ.get("BENCH_RUNS", "3"),
               os.environ.get("BENCH_SECONDS", "5"), os.environ.get("BENCH_TRIES", "6"), version(["nginx", "-v"]), version(["haproxy", "-v"]),
               version(["wrk", "-v"]), version(["node", "--version"]), version(["openssl", "version"])))


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    setup()
    if "--setup-only" in sys.argv:
        return
    rows, sections = [], ""
    for name in workloads():
        r, text = run(name)
        rows += r
        if text:
            sections += "\n## bench/%s (its own output)\n\n%s\n" % (name, text)
    report = header() + table(rows) + sections
    print(report)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "latest.md"), "w") as f:
        f.write(report)
    log("written to bench/results/latest.md")


if __name__ == "__main__":
    main()
