"""WebSocket echo: 100 connections, each with one message in flight, for
64-byte and 16 KiB binary messages; messages per second and p99 latency,
remora (examples/wschat/ws-echo.lua) against node's ws. The load client is
node ws too (bench/websocket/load.mjs), pinned to the client core; neither
side compresses. Rows on stdout as bench/README.md describes."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (BIN, CLIENT_CPU, ROOT, RUNS, SECONDS, Server, command, emit, free_port, log,  # noqa: E402
                     quiet_run, row)

HERE = os.path.dirname(os.path.abspath(__file__))
CONNS = 100
SIZES = [(64, "64 B"), (16384, "16 KiB")]


def setup():
    if not os.path.isfile(os.path.join(HERE, "node_modules", "ws", "package.json")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE, check=True)


def load(port, size):
    argv = ["taskset", "-c", CLIENT_CPU, "node", os.path.join(HERE, "load.mjs"),
            "ws://127.0.0.1:%d/" % port, CONNS, size, SECONDS]
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=SECONDS + 60)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["errors"] or r["open"] != CONNS:
        raise RuntimeError("load: %d errors, %d of %d connections open" % (r["errors"], r["open"], CONNS))
    r["cmd"] = command(argv)
    return r


def measure(server_argv, port, cwd=None):
    figures = {size: [] for size, _ in SIZES}
    notes, cmds = [], []
    with Server(os.path.basename(server_argv[0]), server_argv, port, cwd=cwd) as srv:
        cmds.append(srv.command)
        for size, _ in SIZES:
            for _ in range(RUNS):
                r, _, other, quiet = quiet_run(lambda: load(port, size), [srv])
                if not quiet:
                    notes.append("a %d-byte run was never quiet (%.2f other cores)" % (size, other))
                figures[size].append(r)
            cmds.append(r["cmd"])
    return figures, notes, cmds


def main():
    setup()
    port = free_port()
    ours, notes, cmds = measure([BIN, os.path.join(ROOT, "examples", "wschat", "ws-echo.lua"), port, "deflate=off"],
                                port)
    port = free_port()
    theirs, n2, c2 = measure(["node", os.path.join(HERE, "peer.mjs"), port], port, cwd=HERE)
    notes += n2
    for size, label in SIZES:
        name = "WebSocket echo %s, %d conns" % (label, CONNS)
        extra = {"commands": cmds + c2}
        if notes:
            extra["note"] = "; ".join(notes)
        emit(row(name, "msgs/s", [r["rate"] for r in ours[size]], [r["rate"] for r in theirs[size]],
                 "node ws", 1.0, **extra))
        emit(row(name + " p99", "ms p99", [r["p99_ms"] for r in ours[size]], [r["p99_ms"] for r in theirs[size]],
                 "node ws", 1.0, higher_is_better=False, **extra))
        log("%s: remora %s, node %s" % (name, [round(r["rate"]) for r in ours[size]],
                                         [round(r["rate"]) for r in theirs[size]]))


main()
