"""Screen sharing: remora's screenshare app against x11vnc + noVNC, in the same
headless Chromium, on one 1920x1080 Xvfb, workload by workload:

  idle      nothing moves but the echo terminal
  terminal  a full-screen terminal scrolling text
  window    a window moved every 50 ms over a photographic wallpaper
  repaint   a new full-screen photograph every 500 ms

In each window (BENCH_SECONDS, default 10) measure.mjs counts frames painted,
WebSocket bytes, server and browser CPU, and the input-to-pixel latency of keys
typed into a small terminal (kept on top) until the echo is painted. Then the
animation is paused and the canvas is compared with the X screen (SSIM, 8x8
windows, luma). Rows go to stdout as JSON (bench/README.md); a table to stderr.

  python3 bench/screen/bench.py      (make bench-screen)
  BENCH_BREAKDOWN=1 python3 bench/screen/bench.py   (the engine alone: rects, bytes, CPU)
  BENCH_SYSTEMS=remora python3 bench/screen/bench.py   (without the peer)
"""
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "lib"))
from harness import command, emit, free_port, log  # noqa: E402

BIN = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
BROWSER = os.path.join(ROOT, "tests", "browser")
W, H = 1920, 1080
TOKEN = "bench-token-0123456789abcdef"
WORKLOADS = os.environ.get("BENCH_SCREEN", "idle,terminal,window,repaint").split(",")
SYSTEMS = os.environ.get("BENCH_SYSTEMS", "remora,novnc").split(",")   # remora alone while iterating


def photo(path, seed, title):
    """A synthetic 1920x1080 'photograph': smooth shapes, gradients and fine
    texture, different per seed, as an XWD file for xwud."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(20, 200), rng.uniform(20, 200), rng.uniform(0, 6)
        img[..., c] = 128 + 60 * np.sin(x / a + p) * np.cos(y / b) + 40 * np.sin((x + y) / (a + b) * 3 + p)
    for _ in range(12):   # soft blobs
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(60, 300)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-90, 90, 3)
    img += rng.normal(0, 6, (H, W, 3))   # grain
    rgb = np.clip(img, 0, 255).astype(np.uint32)
    px = (rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]).astype(">u4")
    name = title.encode() + b"\0"   # xwud's window title
    header = struct.pack(">25I", 100 + len(name), 7, 2, 24, W, H, 0, 1, 32, 1, 32, 32, W * 4, 5,
                         0xFF0000, 0xFF00, 0xFF, 8, 0, 0, W, H, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(header + name + px.tobytes())


def read_xwd(path):
    b = open(path, "rb").read()
    hsize, w, h, line, ncolors = (struct.unpack_from(">I", b, o)[0] for o in (0, 16, 20, 48, 76))
    lsb = struct.unpack_from(">I", b, 28)[0] == 0
    a = np.frombuffer(b, "<u4" if lsb else ">u4", offset=hsize + ncolors * 12, count=line // 4 * h)
    a = a.reshape(h, line // 4)[:, :w]
    return np.stack([(a >> 16) & 255, (a >> 8) & 255, a & 255], -1).astype(np.float64)


def ssim(a, b):
    """Mean SSIM of the luma over 8x8 windows."""
    def luma(p):
        return p[..., 0] * 0.299 + p[..., 1] * 0.587 + p[..., 2] * 0.114
    x, y = luma(a), luma(b)
    h, w = (x.shape[0] // 8) * 8, (x.shape[1] // 8) * 8
    x = x[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    y = y[:h, :w].reshape(h // 8, 8, w // 8, 8).swapaxes(1, 2).reshape(-1, 64)
    mx, my = x.mean(1), y.mean(1)
    vx, vy = x.var(1), y.var(1)
    cov = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


class Display:
    # Numbers well above those other Xvfb users on a shared machine pick first
    # (-displayfd alone starts at :0, where another server's start-up could
    # take the socket from under this one mid-run).
    FIRST, LAST = 240, 300

    def __init__(self):
        for n in range(self.FIRST, self.LAST):
            if os.path.exists("/tmp/.X%d-lock" % n) or os.path.exists("/tmp/.X11-unix/X%d" % n):
                continue
            r, w = os.pipe()
            self.proc = subprocess.Popen(["Xvfb", ":%d" % n, "-displayfd", str(w), "-screen", "0",
                                          "%dx%dx24" % (W, H), "-nolisten", "tcp"],
                                         pass_fds=(w,), stderr=subprocess.DEVNULL)
            os.close(w)
            with os.fdopen(r) as f:
                ready = f.readline().strip()
            if ready:   # else the number was taken meanwhile: Xvfb exited
                break
            self.proc.wait()
        else:
            raise RuntimeError("no free X display number in :%d-:%d" % (self.FIRST, self.LAST - 1))
        self.name = ":" + ready
        self.env = dict(os.environ, DISPLAY=self.name)
        self.procs = []

    def run(self, *argv):
        p = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def xdotool(self, *args):
        return subprocess.run(["xdotool"] + list(args), env=self.env, capture_output=True, text=True).stdout

    def window(self, name, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ids = self.xdotool("search", "--onlyvisible", "--name", name).split()
            if ids:
                return ids[0]
            time.sleep(0.05)
        raise RuntimeError("window %s never appeared" % name)

    def stop(self, procs):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                p.wait()

    def close(self):
        self.stop(self.procs + [self.proc])


ANIMATE = r"""
import os, subprocess, sys, time
kind, echo = sys.argv[1], sys.argv[2]
def xdo(*a): subprocess.run(("xdotool",) + a)
if kind == "window":
    win, t = sys.argv[3], 0
    while True:
        t += 1
        x = 200 + int(600 + 550 * __import__("math").sin(t / 15))
        y = 100 + int(300 + 250 * __import__("math").cos(t / 11))
        xdo("windowmove", win, str(x), str(y))
        time.sleep(0.05)
elif kind == "repaint":
    photos, i, prev = sys.argv[3:], 0, None
    while True:
        p = subprocess.Popen(["xwud", "-noclick", "-in", photos[i % len(photos)], "-geometry", "+0+0"])
        time.sleep(0.15)
        xdo("windowraise", echo)
        if prev: prev.terminate(); prev.wait()
        prev, i = p, i + 1
        time.sleep(0.35)
elif kind == "terminal":
    words = "the quick brown fox jumps over a lazy dog while remora shares the screen".split()
    n = 0
    while True:
        n += 1
        print(" ".join(words[(n * 7 + k) % len(words)] + str(n * k % 997) for k in range(40)), flush=True)
        time.sleep(0.004)
"""


def setup_workload(d, kind, tmp):
    """Starts the workload; returns (processes, pid to pause, echo geometry)."""
    procs, pause = [], None
    if kind in ("window", "repaint"):
        photo(os.path.join(tmp, "wall.xwd"), 1, "wall")
        procs.append(d.run("xwud", "-noclick", "-in", os.path.join(tmp, "wall.xwd"), "-geometry", "+0+0"))
        d.window("wall")
    if kind == "terminal":
        anim = os.path.join(tmp, "animate.py")
        procs.append(d.run("xterm", "-geometry", "320x83+0+0", "-name", "scroll", "-T", "scroll", "-e",
                           "/usr/bin/python3", anim, "terminal", "-"))
        d.window("scroll")
    if kind == "window":
        procs.append(d.run("xterm", "-geometry", "80x24+200+100", "-T", "mover", "-e", "top", "-d", "1"))
        d.window("mover")
    echo = d.run("xterm", "-geometry", "40x3+1640+1010", "-T", "echo", "-e", "cat")
    procs.append(echo)
    eid = d.window("echo")
    d.xdotool("windowraise", eid)
    d.xdotool("windowfocus", eid)
    geo = d.xdotool("getwindowgeometry", "--shell", eid)
    g = dict(kv.split("=") for kv in geo.split())
    region = {"x": int(g["X"]), "y": int(g["Y"]), "w": int(g["WIDTH"]), "h": int(g["HEIGHT"])}
    anim = os.path.join(tmp, "animate.py")
    if kind == "window":
        pause = d.run("/usr/bin/python3", anim, "window", eid, d.window("mover"))
    elif kind == "repaint":
        shots = []
        for s in (2, 3, 4):
            shots.append(os.path.join(tmp, "photo%d.xwd" % s))
            if not os.path.exists(shots[-1]):
                photo(shots[-1], s, "photo%d" % s)
        pause = d.run("/usr/bin/python3", anim, "repaint", eid, *shots)
    elif kind == "terminal":
        pause = procs[0]
    if pause is not None and pause not in procs:
        procs.append(pause)
    time.sleep(1)
    return procs, pause, region


def start_remora(d):
    port = free_port()
    argv = [BIN, "-l", "127.0.0.1:%d" % port, os.path.join(ROOT, "examples", "screenshare")]
    env = dict(d.env, SCREENSHARE_TOKEN=TOKEN, SCREENSHARE_VIEW_TOKEN=TOKEN[::-1])
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return [p], "http://127.0.0.1:%d/?token=%s" % (port, TOKEN), command(argv)


def start_novnc(d, tmp):
    web = os.path.join(tmp, "web")
    if not os.path.exists(web):
        os.makedirs(web)
        for sub in ("core", "vendor"):
            os.symlink("/usr/share/novnc/" + sub, os.path.join(web, sub))
        shutil.copy(os.path.join(HERE, "novnc.html"), os.path.join(web, "bench.html"))
    vnc = free_port()
    x11vnc = ["x11vnc", "-display", d.name, "-rfbport", str(vnc), "-localhost", "-nopw", "-forever", "-shared",
              "-quiet"]
    a = subprocess.Popen(x11vnc, env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(vnc)
    ws = free_port()   # only now: picked before x11vnc took its port, it could be the same one
    wsify = ["websockify", "--web", web, "127.0.0.1:%d" % ws, "127.0.0.1:%d" % vnc]
    b = subprocess.Popen(wsify, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(ws)
    return [a, b], "http://127.0.0.1:%d/bench.html" % ws, command(x11vnc) + " & " + command(wsify)


def wait_port(port, timeout=10):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def measure(d, kind, url, servers, pause, region, tmp):
    cfg = {"kind": kind, "url": url, "seconds": SECONDS, "echo": region, "keys_every_ms": 150,
           "server_pids": [p.pid for p in servers], "pause_pid": pause.pid if pause else 0, "dump_dir": tmp}
    path = os.path.join(tmp, "cfg.json")
    json.dump(cfg, open(path, "w"))
    out = subprocess.run(["node", os.path.join(HERE, "measure.mjs"), path], capture_output=True, text=True,
                         timeout=SECONDS + 90, cwd=BROWSER, env=d.env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("measure.mjs: " + out.stderr[-2000:])
    r = json.loads(lines[-1])
    if "error" in r:
        raise RuntimeError("measure.mjs: " + r["error"])
    c = np.frombuffer(open(os.path.join(tmp, "canvas.rgba"), "rb").read(), np.uint8)
    c = c.reshape(r["canvas"][1], r["canvas"][0], 4)[..., :3].astype(np.float64)
    r["ssim"] = ssim(c, read_xwd(os.path.join(tmp, "screen.xwd")))
    lat = sorted(r["latency_ms"])
    r["p50"] = lat[len(lat) // 2] if lat else None
    r["p95"] = lat[min(len(lat) - 1, int(math.ceil(len(lat) * 0.95)) - 1)] if lat else None
    return r


def breakdown():
    """BENCH_BREAKDOWN=1: no browser, no peer; per workload, what the engine
    sends and what it costs (breakdown.lua), to see where bytes and time go."""
    tmp = tempfile.mkdtemp(prefix="bench-screen-")
    with open(os.path.join(tmp, "animate.py"), "w") as f:
        f.write(ANIMATE)
    d = Display()
    try:
        for kind in WORKLOADS:
            procs, _, _ = setup_workload(d, kind, tmp)
            try:
                out = subprocess.run([BIN, os.path.join(HERE, "breakdown.lua"), str(SECONDS)], env=d.env,
                                     capture_output=True, text=True, timeout=SECONDS + 30)
                log("%s: %s" % (kind, (out.stdout + out.stderr).strip()))
            finally:
                d.stop(procs)
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if os.environ.get("BENCH_BREAKDOWN") == "1":
        return breakdown()
    if subprocess.run(["sh", os.path.join(HERE, "setup.sh")]).returncode != 0:
        sys.exit(1)
    if subprocess.run(["sh", os.path.join(BROWSER, "setup.sh")]).returncode != 0:
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="bench-screen-")
    with open(os.path.join(tmp, "animate.py"), "w") as f:
        f.write(ANIMATE)
    d = Display()
    results = {}
    try:
        for kind in WORKLOADS:
            procs, pause, region = setup_workload(d, kind, tmp)
            try:
                for system in SYSTEMS:
                    servers, url, cmd = start_remora(d) if system == "remora" else start_novnc(d, tmp)
                    try:
                        log("%s / %s" % (kind, system))
                        r = measure(d, system, url, servers, pause, region, tmp)
                        r["command"] = cmd
                        results[(kind, system)] = r
                        log("  %.1f fps, %.0f KB/s, %s B/frame, p50 %s ms, p95 %s ms (%d keys lost), SSIM %.4f, "
                            "server %.2f, browser %.2f cores"
                            % (r["fps"], r["bytes_per_s"] / 1000, r["bytes_per_frame"] and int(r["bytes_per_frame"]),
                               r["p50"] and round(r["p50"], 1), r["p95"] and round(r["p95"], 1), r["lost_keys"], r["ssim"],
                               r["server_cpu"], r["browser_cpu"]))
                    finally:
                        d.stop(servers)
            finally:
                d.stop(procs)
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)


def report(results):
    rows = [("fps painted", "fps", True, 1.0, None), ("bytes/s", "KB/s", False, None, None),
            ("bytes per frame", "KB/frame", False, "bytes", None), ("input-to-pixel p50", "ms", False, None, 50),
            ("input-to-pixel p95", "ms", False, None, 100), ("SSIM vs X screen", "SSIM", True, None, None),
            ("server CPU", "cores", False, None, None), ("browser CPU", "cores", False, None, None)]
    key = {"fps painted": "fps", "bytes/s": "bytes_per_s", "bytes per frame": "bytes_per_frame",
           "input-to-pixel p50": "p50", "input-to-pixel p95": "p95", "SSIM vs X screen": "ssim",
           "server CPU": "server_cpu", "browser CPU": "browser_cpu"}
    for kind in WORKLOADS:
        a, b = results.get((kind, "remora")), results.get((kind, "novnc"))
        if not a or not b:
            continue
        for name, unit, higher, target, limit in rows:
            va, vb = a[key[name]], b[key[name]]
            if unit in ("KB/s", "KB/frame"):
                va, vb = va and va / 1000, vb and vb / 1000
            if target == "bytes":
                target = 0.5 if kind == "terminal" else 0.8
            row = {"workload": "screen %s: %s" % (kind, name), "unit": unit,
                   "remora": va and round(va, 4), "peer": vb and round(vb, 4), "peer_name": "x11vnc+noVNC",
                   "higher_is_better": higher, "target": target,
                   "commands": [a["command"], b["command"], "node bench/screen/measure.mjs (in tests/browser)"]}
            if limit is not None:
                row["limit"] = limit
            if name == "SSIM vs X screen":
                row["note"] = "bytes per frame targets hold only at equal or better SSIM"
            emit(row)


if __name__ == "__main__":
    main()
