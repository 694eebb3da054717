"""The screen-share app (examples/screenshare) on a private Xvfb, driven by
Python's websockets as the browser would: tokens and roles, the Origin
check, frames, pongs, input reaching X, bad input closing only its own
viewer, and a stalled viewer costing nothing to the others.
The browser itself is tested by test_screenshare_browser.py, which reuses
Display and serve_screen from here."""
import asyncio
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ROOT, Remora, case, check, done, free_port  # noqa: E402

APP = os.path.join(ROOT, "examples", "screenshare")
CONTROL = "control-token-0123456789abcdef"
VIEW = "view-only-token-0123456789abcdef"


class Display:
    """A private Xvfb; the display number comes from -displayfd."""

    def __init__(self, size="1024x768x24"):
        r, w = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", size, "-nolisten", "tcp"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        self.name = ":" + number
        self.env = dict(os.environ, DISPLAY=self.name)
        self.children = []

    def run(self, *argv):
        """A client on this display, stopped with it."""
        p = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(p)
        return p

    def output(self, *argv):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10).stdout

    def pointer(self):
        out = self.output("xdotool", "getmouselocation")
        fields = dict(kv.split(":") for kv in out.split())
        return int(fields["x"]), int(fields["y"])

    def close(self):
        for p in self.children + [self.proc]:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def serve_screen(display, port=None, env=None):
    """remora serving the app for display, with known tokens."""
    port = port or free_port()
    e = dict(SCREENSHARE_TOKEN=CONTROL, SCREENSHARE_VIEW_TOKEN=VIEW, DISPLAY=display.name)
    e.update(env or {})
    r = Remora(path="-l", args=["127.0.0.1:%d" % port, APP], env=e, ready="serving %s" % APP)
    r.port = port
    return r


def ws_url(port, token):
    return "ws://127.0.0.1:%d/ws.lsp?token=%s" % (port, token)


def frame_header(m):
    """type, flags and, in a full update, the screen size (docs/screen-protocol.md)."""
    kind, flags = m[0], m[1]
    h = dict(kind=kind, flags=flags, w=None, h=None, time=None, body=2)
    if flags & 1:
        h["w"], h["h"] = struct.unpack_from("<HH", m, 2)
        h["body"] = 6
    if flags & 2:
        h["time"] = struct.unpack_from("<d", m, h["body"])[0]
        h["body"] += 8
    return h


def ping(ts):
    return struct.pack("<B3xd", 5, ts)


def ack(seq):
    """The app's ACK: update number seq (counted from 1 in arrival order) was painted."""
    return struct.pack("<B3xI", 6, seq)


def move(x, y):
    return struct.pack("<BBHH", 1, 0, x, y)


async def recv_pong(ws, ts, timeout=5):
    """Reads (skipping frames) until the pong carrying ts."""
    deadline = time.monotonic() + timeout
    while True:
        m = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        if m[0] == 2:
            check(len(m) == 12, "pong length %d" % len(m))
            check(struct.unpack_from("<d", m, 4)[0] == ts, "pong carries the ping's timestamp")
            return m


async def closed_with(ws, timeout=5):
    """Reads until the server closes; returns the close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        return e.code


def refused_status(url, **kw):
    """The HTTP status of a refused WebSocket upgrade."""
    async def go():
        try:
            async with websockets.connect(url, **kw):
                return 101
        except websockets.InvalidStatusCode as e:
            return e.status_code
    return asyncio.run(go())


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(cond, timeout=5):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    import websockets

    if not shutil.which("Xvfb") or not shutil.which("xdotool"):
        print("FAIL setup: Xvfb and xdotool are needed (make deps)")
        sys.exit(1)
    display = Display()
    server = serve_screen(display).__enter__()
    port = server.port

    @case
    def page_without_token_shows_nothing():
        for q in ("", "?token=", "?token=wrong-token-0123456789", "?token=" + CONTROL[:-1]):
            status, body = http_get("http://127.0.0.1:%d/%s" % (port, q))
            check(status == 200, "status %d" % status)
            check("<canvas" not in body and "ws.lsp" not in body, "a page without a valid token has no viewer")
        status, body = http_get("http://127.0.0.1:%d/?token=%s" % (port, CONTROL))
        check(status == 200 and "<canvas" in body and "viewOnly: false" in body, "the control page has a viewer")
        status, body = http_get("http://127.0.0.1:%d/?token=%s" % (port, VIEW))
        check("<canvas" in body and "viewOnly: true" in body, "the view page is view-only")

    @case
    def websocket_without_token_is_refused():
        check(refused_status("ws://127.0.0.1:%d/ws.lsp" % port) == 403, "no token: 403")
        check(refused_status(ws_url(port, "x" * 32)) == 403, "wrong token: 403")
        check(refused_status(ws_url(port, CONTROL),
                             origin="http://evil.example") == 403, "foreign Origin: 403")
        status, _ = http_get("http://127.0.0.1:%d/ws.lsp?token=%s" % (port, CONTROL))
        check(status == 400, "a plain GET of the endpoint: 400, got %d" % status)
        check(server.alive(), "server alive")

    @case
    def first_frame_is_full_and_ping_is_answered():
        async def go():
            origin = "http://127.0.0.1:%d" % port
            async with websockets.connect(ws_url(port, CONTROL), origin=origin, max_size=None) as ws:
                m = await asyncio.wait_for(ws.recv(), 5)
                h = frame_header(m)
                check(h["kind"] == 1 and h["flags"] == 1, "first message is a full frame, without a time")
                check((h["w"], h["h"]) == (1024, 768), "screen size %sx%s" % (h["w"], h["h"]))
                check(len(m) > h["body"], "with rectangles")
                await ws.send(ping(1234.5))
                await recv_pong(ws, 1234.5)
        asyncio.run(go())

    @case
    def frames_wait_for_acks():
        busy = display.run("xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c",
                           "while :; do head -c 3000 /dev/urandom | od -x; done")

        async def frames_within(ws, seconds):
            got = []
            try:
                while True:
                    m = await asyncio.wait_for(ws.recv(), seconds)
                    if m[0] == 1:
                        got.append(m)
            except asyncio.TimeoutError:
                return got

        async def go():
            async with websockets.connect(ws_url(port, VIEW), max_size=None) as ws:
                got = await frames_within(ws, 1.5)
                check(len(got) == 2, "without ACKs, 2 frames in flight, got %d" % len(got))
                check(frame_header(got[1])["flags"] & 1 == 0, "the second is not a full update")
                await ws.send(ack(1))
                more = await frames_within(ws, 1.5)
                check(len(more) == 1, "one ACK lets one more frame go, got %d" % len(more))
        try:
            asyncio.run(go())
        finally:
            busy.terminate()

    @case
    def typing_keeps_one_frame_in_flight():
        # With two frames unpainted, an ACK lets one more go (frames_wait_for_acks);
        # within SCREENSHARE_TYPING_MS (1 s) of a key it takes both ACKs.
        busy = display.run("xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c",
                           "while :; do head -c 3000 /dev/urandom | od -x; done")
        key = struct.pack("<BBBB", 3, 1, 12, 0) + b"Unidentified"   # ignored by X, but a key

        async def frames_within(ws, seconds):
            n = 0
            try:
                while True:
                    if (await asyncio.wait_for(ws.recv(), seconds))[0] == 1:
                        n += 1
            except asyncio.TimeoutError:
                return n

        async def go():
            async with websockets.connect(ws_url(port, CONTROL), max_size=None) as ws:
                check(await frames_within(ws, 1.0) == 2, "two frames in flight before any key")
                await ws.send(key)
                await ws.send(ack(1))
                check(await frames_within(ws, 0.4) == 0, "one ACK after a key lets nothing go")
                await ws.send(ack(2))
                check(await frames_within(ws, 0.4) == 1, "the second ACK lets one frame go")
        try:
            asyncio.run(go())
        finally:
            busy.terminate()

    @case
    def control_moves_the_pointer_view_cannot():
        async def go():
            async with websockets.connect(ws_url(port, VIEW)) as ws:
                await ws.send(move(700, 500))
                await ws.send(ping(1.0))
                await recv_pong(ws, 1.0)   # the view role still gets its pong
            check(display.pointer() != (700, 500), "view-only input was ignored")
            async with websockets.connect(ws_url(port, CONTROL)) as ws:
                await ws.send(move(321, 234))
                await ws.send(ping(2.0))
                await recv_pong(ws, 2.0)   # input is handled in order: the move came first
            check(display.pointer() == (321, 234), "pointer at %s" % (display.pointer(),))
        asyncio.run(go())

    @case
    def keys_reach_an_x_application():
        out = "/tmp/remora-screenshare-keys-%d.txt" % os.getpid()
        xterm = display.run("xterm", "-geometry", "40x5+0+0", "-e", "sh", "-c", "cat > " + out)
        check(wait_for(lambda: display.output("xdotool", "search", "--onlyvisible", "--class", "xterm").strip()),
              "xterm mapped")

        def key(code, k, down):
            c, kk = code.encode(), k.encode()
            return struct.pack("<BBBB", 3, 1 if down else 0, len(c), len(kk)) + c + kk

        async def go():
            async with websockets.connect(ws_url(port, CONTROL)) as ws:
                await ws.send(move(40, 30))   # focus follows the pointer without a window manager
                for code, k in (("KeyH", "h"), ("KeyI", "i"), ("Digit1", "!"), ("Enter", "Enter")):
                    await ws.send(key(code, k, True))
                    await ws.send(key(code, k, False))
                await ws.send(ping(3.0))
                await recv_pong(ws, 3.0)
        try:
            asyncio.run(go())
            check(wait_for(lambda: os.path.exists(out) and open(out).read() == "hi!\n"),
                  "typed text reached the terminal: %r" % (open(out).read() if os.path.exists(out) else None))
        finally:
            xterm.terminate()
            if os.path.exists(out):
                os.unlink(out)

    @case
    def echo_overlays_while_the_screen_scrolls():
        # A terminal filling the screen keeps the encoder busy; keys typed into
        # a small focused one come back as overlays of that window alone, and
        # a frame newer than each overlay follows.
        busy = display.run("xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c",
                           "while :; do head -c 3000 /dev/urandom | od -x; done")
        # no border: xdotool's geometry is then the window's inside, where the lane cuts
        echo = display.run("xterm", "-bw", "0", "-geometry", "30x3+600+600", "-T", "echo", "-e", "cat")
        check(wait_for(lambda: display.output("xdotool", "search", "--onlyvisible", "--name", "^echo$").strip()),
              "echo terminal mapped")
        wid = display.output("xdotool", "search", "--onlyvisible", "--name", "^echo$").split()[0]
        display.output("xdotool", "windowraise", wid)
        display.output("xdotool", "windowfocus", "--sync", wid)
        geo = dict(ln.split("=") for ln in display.output("xdotool", "getwindowgeometry", "--shell", wid).split())
        box = (int(geo["X"]), int(geo["Y"]), int(geo["X"]) + int(geo["WIDTH"]), int(geo["Y"]) + int(geo["HEIGHT"]))

        def varint(m, o):
            v = shift = 0
            while True:
                c = m[o]
                v |= (c & 127) << shift
                shift += 7
                o += 1
                if not c & 128:
                    return v, o

        def overlay_rects(m):
            seq, o = varint(m, 1)
            rects = []
            while o < len(m):
                enc = m[o]
                x, o = varint(m, o + 1)
                y, o = varint(m, o)
                w, o = varint(m, o)
                h, o = varint(m, o)
                check(enc in (0, 1, 4, 5), "a lossless encoding, not %d" % enc)
                if enc == 0:
                    o += 3
                elif enc == 4:
                    n = m[o]
                    check(n > 0, "an overlay carries its own palette")
                    depth = 1 if n <= 2 else 2 if n <= 4 else 4 if n <= 16 else 8
                    o += 1 + 3 * n + (w * h * depth + 7) // 8
                else:
                    n, o = varint(m, o)
                    o += n
                rects.append((x, y, w, h))
            check(o == len(m), "the rectangles fill the overlay exactly")
            return seq, rects

        async def go():
            key = struct.pack("<BBBB", 3, 1, 4, 1) + b"KeyX" + b"x"
            up = struct.pack("<BBBB", 3, 0, 4, 1) + b"KeyX" + b"x"
            overlays, newer, frames = [], 0, 0
            async with websockets.connect(ws_url(port, CONTROL), max_size=None) as ws:
                deadline = time.monotonic() + 8
                next_key = time.monotonic() + 1
                while time.monotonic() < deadline and (len(overlays) < 3 or not newer):
                    if time.monotonic() > next_key and len(overlays) < 3:
                        await ws.send(key)
                        await ws.send(up)
                        next_key = time.monotonic() + 0.25
                    try:
                        m = await asyncio.wait_for(ws.recv(), 0.05)
                    except asyncio.TimeoutError:
                        continue
                    if m[0] == 1:
                        frames += 1
                        await ws.send(ack(frames))
                        h = frame_header(m)
                        if h["flags"] & 4 and overlays and varint(m, h["body"])[0] > overlays[-1]:
                            newer += 1
                    elif m[0] == 3:
                        seq, rects = overlay_rects(m)
                        check(not overlays or seq > overlays[-1], "overlay numbers grow")
                        for x, y, w, h in rects:
                            check(box[0] <= x and x + w <= box[2] and box[1] <= y and y + h <= box[3],
                                  "overlay rect %s inside the focused window %s" % ((x, y, w, h), box))
                        overlays.append(seq)
            check(len(overlays) >= 3, "overlays while the screen scrolls: %d" % len(overlays))
            check(newer > 0, "a frame newer than the last overlay followed")
        try:
            asyncio.run(go())
        finally:
            busy.terminate()
            echo.terminate()

    @case
    def bad_input_closes_only_that_viewer():
        async def go():
            async with websockets.connect(ws_url(port, CONTROL), max_size=None) as good:
                await asyncio.wait_for(good.recv(), 5)
                cases = [(b"\x09\x00\x00\x00", 1007),                       # unknown type
                         (move(1, 1)[:5], 1007),                            # short MOVE
                         (struct.pack("<B3xI", 4, 300000) + b"a" * 300000, 1009),  # clipboard over its limit
                         (b"x" * (400 * 1024), 1009)]                       # bigger than any message
                for msg, want in cases:
                    async with websockets.connect(ws_url(port, CONTROL), max_size=None) as bad:
                        await bad.send(msg)
                        code = await closed_with(bad)
                        check(code == want, "%r...: close %s, want %d" % (msg[:6], code, want))
                async with websockets.connect(ws_url(port, CONTROL), max_size=None) as text:
                    await text.send("hello")
                    check(await closed_with(text) == 1003, "a text message: 1003")
                await good.send(ping(4.0))
                await recv_pong(good, 4.0)   # the bystander still works
        asyncio.run(go())
        check(server.alive(), "server alive")

    @case
    def stalled_viewer_costs_nothing():
        # A terminal filling the screen with new text keeps frames coming.
        busy = display.run("xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c",
                           "while :; do head -c 3000 /dev/urandom | od -x; done")
        rss0 = server.rss_kb()

        async def go():
            async with websockets.connect(ws_url(port, CONTROL), max_size=None) as slow, \
                    websockets.connect(ws_url(port, CONTROL), max_size=None) as fast:
                slow.transport.pause_reading()   # the slow viewer stops reading
                frames, t0 = 0, time.monotonic()
                while time.monotonic() - t0 < 3:
                    m = await asyncio.wait_for(fast.recv(), 5)
                    if m[0] == 1:
                        frames += 1
                        await fast.send(ack(frames))
                check(frames >= 10, "the reading viewer got %d frames in 3 s" % frames)
                await fast.send(ping(5.0))
                await recv_pong(fast, 5.0, timeout=2)
                slow.transport.resume_reading()
                await slow.send(ping(6.0))
                await recv_pong(slow, 6.0)   # what was queued drains; nothing piled up behind it
        try:
            asyncio.run(go())
        finally:
            busy.terminate()
        grown = server.rss_kb() - rss0
        check(grown < 64 * 1024, "server grew by %d KiB while a viewer stalled" % grown)

    @case
    def disconnect_mid_frame_costs_nothing():
        # Every viewer that vanished is let go: afterwards the server takes
        # as many viewers at once as it allows (16 by default), each served.
        busy = display.run("xterm", "-geometry", "160x50+0+0", "-e", "sh", "-c",
                           "while :; do head -c 3000 /dev/urandom | od -x; done")

        async def admitted(deadline):
            """A viewer; a 503 is retried until deadline, since the server
            learns of a vanished peer asynchronously (it never took long)."""
            while True:
                try:
                    return await websockets.connect(ws_url(port, CONTROL), max_size=None)
                except websockets.InvalidStatusCode as e:
                    if e.status_code != 503 or time.monotonic() > deadline:
                        raise

        async def go():
            for i in range(20):
                ws = await websockets.connect(ws_url(port, CONTROL), max_size=None)
                if i % 2:
                    await asyncio.wait_for(ws.recv(), 5)   # reset with a frame on its way
                ws.transport.abort()   # gone without a close frame, maybe mid-frame
            deadline = time.monotonic() + 5
            viewers = [await admitted(deadline) for _ in range(16)]
            for k, ws in enumerate(viewers):
                await ws.send(ping(100.0 + k))
            for k, ws in enumerate(viewers):
                await recv_pong(ws, 100.0 + k, timeout=10)
            try:
                async with websockets.connect(ws_url(port, CONTROL)):
                    check(False, "a 17th viewer was admitted")
            except websockets.InvalidStatusCode as e:
                check(e.status_code == 503, "a 17th viewer: %d" % e.status_code)
            for ws in viewers:
                await ws.close()
        try:
            asyncio.run(go())
        finally:
            busy.terminate()
        check(server.alive(), "server alive")

    @case
    def served_over_tls():
        import ssl
        p, tp = free_port(), free_port()
        state = tempfile.mkdtemp(prefix="remora-screenshare-tls-")
        e = dict(SCREENSHARE_TOKEN=CONTROL, SCREENSHARE_VIEW_TOKEN=VIEW, DISPLAY=display.name)
        try:
            with Remora(path="-l", args=["127.0.0.1:%d" % p, APP, "--tls-listen", "127.0.0.1:%d" % tp,
                                         "--state", state], env=e, ready="on https://") as r:
                check("https://127.0.0.1:%d/?token=%s" % (tp, CONTROL) in r.log(), "the HTTPS URL is printed")
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE

                async def go():
                    async with websockets.connect("wss://127.0.0.1:%d/ws.lsp?token=%s" % (tp, CONTROL), ssl=ctx,
                                                  origin="https://127.0.0.1:%d" % tp, max_size=None) as ws:
                        check(frame_header(await asyncio.wait_for(ws.recv(), 5))["kind"] == 1, "a frame over TLS")
                asyncio.run(go())
        finally:
            shutil.rmtree(state, ignore_errors=True)

    @case
    def password_login_sets_the_cookie():
        import http.client
        p = free_port()
        e = dict(SCREENSHARE_PASSWORD="correct horse", DISPLAY=display.name)

        def post(password):
            c = http.client.HTTPConnection("127.0.0.1", p, timeout=5)
            c.request("POST", "/login.lsp", body="password=" + urllib.parse.quote(password),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
            resp = c.getresponse()
            resp.read()
            return resp.status, resp.getheader("Set-Cookie") or ""
        with Remora(path="-l", args=["127.0.0.1:%d" % p, APP], env=e, ready="serving") as r:
            status, body = http_get("http://127.0.0.1:%d/" % p)
            check('type="password"' in body and "<canvas" not in body, "a password form, no screen")
            status, cookie = post("wrong horse")
            check(status == 403 and not cookie, "wrong password: 403, no cookie")
            status, cookie = post("correct horse")
            check(status in (302, 303) and "HttpOnly" in cookie and "SameSite=Strict" in cookie, "%d %s" % (status, cookie))
            token = cookie.split(";")[0].split("=", 1)[1]
            check(token in r.log(), "the cookie holds the control token")

            async def go():
                async with websockets.connect("ws://127.0.0.1:%d/ws.lsp" % p, max_size=None,
                                              extra_headers={"Cookie": cookie.split(";")[0]}) as ws:
                    check(frame_header(await asyncio.wait_for(ws.recv(), 5))["kind"] == 1, "a frame with the cookie")
            asyncio.run(go())

    @case
    def weak_configured_token_stops_the_server():
        with Remora(path="-l", args=["127.0.0.1:%d" % free_port(), APP],
                    env=dict(SCREENSHARE_TOKEN="short", DISPLAY=display.name)) as r:
            check(r.proc.wait(10) == 1, "exit status 1")
            check("at least 16 URL-safe characters" in r.log(), "says why")

    @case
    def generated_tokens_are_printed_as_urls():
        p = free_port()
        with Remora(path="-l", args=["127.0.0.1:%d" % p, APP], env=dict(DISPLAY=display.name),
                    ready="serving") as r:
            log = r.log()
            lines = [ln for ln in log.splitlines() if "?token=" in ln]
            check(len(lines) == 2, "a control and a view URL:\n" + log)
            control = lines[0].split("?token=")[1]
            check(lines[0].startswith("screenshare: control: http://127.0.0.1:%d/?token=" % p), lines[0])
            check(len(control) >= 16 and control.replace("-", "").replace("_", "").isalnum(), control)
            status, body = http_get("http://127.0.0.1:%d/?token=%s" % (p, control))
            check("<canvas" in body, "the printed URL shows the screen")

    server.__exit__(None, None, None)
    display.close()
    done()
