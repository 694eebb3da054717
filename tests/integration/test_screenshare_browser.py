"""The screen-share app in headless Chromium (tests/browser/screenshare.mjs
with playwright-core) on a private Xvfb holding a terminal and a photo: the
canvas matches the X screen (exact for lossless pixels, close for JPEG), a
click and typed text reach the terminal and show in the canvas, the status
line, nothing for a page without the token, nothing sent by a view-only
page. Chromium missing is a FAIL, never a skip."""
import math
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ROOT, case, check, done  # noqa: E402
from test_screenshare import CONTROL, VIEW, Display, serve_screen, wait_for  # noqa: E402

BROWSER = os.path.join(ROOT, "tests", "browser")


def write_photo_xwd(path, w=320, h=240):
    """A synthetic photo (smooth gradients and waves: thousands of colours,
    so the engine sends it as JPEG) as an XWD file for xwud."""
    name = b"photo\0"
    header = struct.pack(">25I", 100 + len(name), 7, 2, 24, w, h, 0, 1, 32, 1, 32, 32, w * 4, 5,
                         0xFF0000, 0xFF00, 0xFF, 8, 0, 0, w, h, 0, 0, 0)
    rows = []
    for y in range(h):
        row = bytearray(w * 4)
        for x in range(w):
            r = int(127 + 120 * math.sin(x / 23.0 + y / 41.0))
            g = int(127 + 120 * math.sin(y / 17.0) * math.cos(x / 53.0))
            b = (x * 255 // w + y * 128 // h) & 255
            row[x * 4 + 1:x * 4 + 4] = bytes((r, g, b))
        rows.append(bytes(row))
    with open(path, "wb") as f:
        f.write(header + name + b"".join(rows))


@case
def screenshare_in_headless_chromium():
    setup = subprocess.run(["sh", os.path.join(BROWSER, "setup.sh")], capture_output=True, text=True, timeout=240)
    check(setup.returncode == 0, "browser setup failed: " + (setup.stderr or setup.stdout).strip())
    display = Display()
    tmp = tempfile.mkdtemp(prefix="remora-screenshare-")
    typed, photo = os.path.join(tmp, "typed"), os.path.join(tmp, "photo.xwd")
    try:
        write_photo_xwd(photo)
        # A terminal that reports mouse clicks (ESC [ M) and writes what it gets to a file.
        display.run("xterm", "-geometry", "60x6+0+0", "-e", "sh", "-c",
                    "printf '\\033[?1000h'; exec cat > '%s'" % typed)
        display.run("xwud", "-in", photo, "-geometry", "+600+300")
        check(wait_for(lambda: len(display.output("xdotool", "search", "--onlyvisible", "--name", ".").split()) >= 2),
              "the terminal and the photo are on the screen")
        with serve_screen(display) as r:
            out = subprocess.run(["node", os.path.join(BROWSER, "screenshare.mjs"), "http://127.0.0.1:%d/" % r.port,
                                  CONTROL, VIEW, typed], capture_output=True, text=True, timeout=90, cwd=BROWSER,
                                 env=display.env)
            sys.stdout.write(out.stdout)   # the browser's own ok/FAIL lines count as cases
            sys.stdout.write("".join("# " + ln + "\n" for ln in out.stderr.splitlines()[-20:]))
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("ok ", "FAIL "))]
            check(len(lines) >= 8 and out.returncode == 0,
                  "node said: " + (out.stderr or out.stdout)[-1500:] + "\n" + r.log()[-800:])
            check(r.alive(), "server alive")
    finally:
        display.close()
        for f in (typed, photo):
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(tmp)


done()
