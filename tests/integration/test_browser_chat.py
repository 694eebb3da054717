"""The chat example in headless Chromium (tests/browser/chat.mjs with
playwright-core): two pages exchange messages over permessage-deflate
WebSockets served by LSP pages. Also a non-browser member and a foreign
Origin refused, with Python's websockets. Chromium missing is a FAIL, never a
skip."""
import asyncio
import os
import subprocess

import websockets

from lib import Remora, case, check, done, free_port, ROOT

APP = os.path.join(ROOT, "examples", "wschat")
BROWSER = os.path.join(ROOT, "tests", "browser")

port = free_port()


def serve():
    return Remora(path="-l", args=["127.0.0.1:%d" % port, APP], port=port)


@case
def chat_in_headless_chromium():
    setup = subprocess.run(["sh", os.path.join(BROWSER, "setup.sh")], capture_output=True, text=True, timeout=240)
    check(setup.returncode == 0, "browser setup failed: " + (setup.stderr or setup.stdout).strip())
    with serve() as r:
        out = subprocess.run(["node", os.path.join(BROWSER, "chat.mjs"), "http://127.0.0.1:%d/" % port],
                             capture_output=True, text=True, timeout=90, cwd=BROWSER)
        lines = [l for l in out.stdout.splitlines() if l.startswith(("ok ", "FAIL "))]
        bad = [l for l in lines if l.startswith("FAIL")]
        check(len(lines) >= 5 and not bad and out.returncode == 0,
              "; ".join(bad) or "node said: " + (out.stderr or out.stdout)[-800:] + "\n" + r.log()[-800:])


@case
def chat_non_browser_member_and_foreign_origin():
    async def main():
        url = "ws://127.0.0.1:%d/chat.lsp" % port
        origin = "http://127.0.0.1:%d" % port
        async with websockets.connect(url, subprotocols=["chat"], origin=origin) as a, \
                websockets.connect(url, subprotocols=["chat"], origin=origin) as b:
            check(a.subprotocol == "chat", "subprotocol %r" % a.subprotocol)
            await a.send("hi all")
            for _ in range(10):
                m = await asyncio.wait_for(b.recv(), 10)
                if m == "hi all":
                    break
            else:
                raise AssertionError("b never saw a's message")
        try:
            async with websockets.connect(url, origin="http://evil.example"):
                raise AssertionError("a foreign origin was let in")
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 403, "status %d" % e.status_code)
    with serve() as r:
        asyncio.run(main())
        check(r.alive(), "server died")


done()
