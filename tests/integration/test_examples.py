"""Examples of the field that pages make: a page that is a client of a local
time service, and the WebSocket-to-TCP tunnel."""
import asyncio
import hashlib
import tempfile
import os
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import websockets

from lib import Remora, ROOT, case, check, done, free_port, run

EXAMPLES = os.path.join(ROOT, "examples")


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


@case
def time_page_is_a_client_of_a_local_service_under_concurrency():
    port, tport = free_port(), free_port()
    with Remora(args=["-l", "127.0.0.1:%d" % port, os.path.join(EXAMPLES, "www")], port=port,
                env={"REMORA_DEMO_TIMEPORT": str(tport)}) as r:
        with ThreadPoolExecutor(50) as ex:
            pages = list(ex.map(lambda i: get("http://127.0.0.1:%d/time.lsp" % port), range(100)))
        for status, body in pages:
            m = re.search(r'id="time">(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC', body)
            check(status == 200 and m, body[-300:])
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) - time.timezone
            check(abs(t - time.time()) < 10, "time off: " + m.group(1))


@case
def websocket_to_tcp_tunnel_is_byte_exact_both_ways():
    echo, port = free_port(), free_port()
    with Remora(path=os.path.join(EXAMPLES, "echo.lua"), args=[echo], port=echo), \
         Remora(args=["-l", "127.0.0.1:%d" % port, os.path.join(EXAMPLES, "wstunnel")], port=port,
                env={"WSTUNNEL_TARGET": "127.0.0.1:%d" % echo}):
        blob = os.urandom(3 << 20)

        async def main():
            async with websockets.connect("ws://127.0.0.1:%d/tunnel.lsp" % port, max_size=None) as ws:
                async def send():
                    for off in range(0, len(blob), 65536):
                        await ws.send(blob[off:off + 65536])
                sender = asyncio.ensure_future(send())
                got = bytearray()
                while len(got) < len(blob):
                    got += await asyncio.wait_for(ws.recv(), 20)
                await sender
                return bytes(got)
        got = asyncio.run(main())
        check(hashlib.sha256(got).digest() == hashlib.sha256(blob).digest(), "tunnelled bytes differ")


@case
def websocket_tunnel_closes_1011_when_the_target_is_down():
    port, nobody = free_port(), free_port()
    with Remora(args=["-l", "127.0.0.1:%d" % port, os.path.join(EXAMPLES, "wstunnel")], port=port,
                env={"WSTUNNEL_TARGET": "127.0.0.1:%d" % nobody}) as r:
        async def main():
            async with websockets.connect("ws://127.0.0.1:%d/tunnel.lsp" % port) as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 10)
                except websockets.ConnectionClosed as e:
                    return e.code
        code = asyncio.run(main())
        check(code == 1011, "close code %s: %s" % (code, r.log()))
        check("wstunnel" in r.log() and r.alive(), r.log())


WSS_CLIENT = r"""
local port, ca = tonumber(arg[1]), arg[2]
local client = ba.create.sharkssl(ca)
local ws, err = ba.socket.wsconnect("wss://localhost:" .. port .. "/ws.lsp", {shark = client})
if not ws then print("wsconnect failed: " .. tostring(err)) os.exit(1) end
ws:write("over tls", true)
local data, text = ws:read()
print("echo: " .. tostring(data) .. " text=" .. tostring(text))
ws:close()
local bad = ba.socket.wsconnect("wss://localhost:" .. port .. "/ws.lsp", {shark = ba.create.sharkssl()})
print("untrusted: " .. tostring(bad))
"""


@case
def websocket_client_over_tls_to_a_remora_https_listener():
    port, tport = free_port(), free_port()
    state = tempfile.mkdtemp()
    with Remora(args=["-l", "127.0.0.1:%d" % port, os.path.join(EXAMPLES, "www"),
                      "--tls-listen", "127.0.0.1:%d" % tport, "--state", state], port=tport,
                env={"REMORA_DEMO_TIMEPORT": str(free_port())}):
        certs = [f for f in os.listdir(state) if f.endswith(".crt")]
        check(certs, "no certificate in the state directory")
        code, out = run(WSS_CLIENT, args=[tport, os.path.join(state, certs[0])])
        check(code == 0 and "echo: over tls text=true" in out, out)
        check("untrusted: nil" in out, out)   # the system bundle does not trust a self-signed pair


HTTP2SOCK = r"""
local port = tonumber(arg[1])
local httpc = require "httpc"
local h = httpc.create()
local key = "dGhlIHNhbXBsZSBub25jZQ=="
local ok, err = h:request{url = "http://127.0.0.1:" .. port .. "/ws.lsp", header = {
  Upgrade = "websocket", Connection = "Upgrade", ["Sec-WebSocket-Key"] = key, ["Sec-WebSocket-Version"] = "13"}}
print("status", h:status())
local ws, why = ba.socket.http2sock(h)
if not ws then print("http2sock failed: " .. tostring(why)) os.exit(1) end
print("websocket", ws:websocket())
ws:write("through httpc", true)
print("echo: " .. tostring(ws:read()))
ws:close()
local plain = httpc.create()
plain:request{url = "http://127.0.0.1:" .. port .. "/hello.lsp"}
print("not upgraded: " .. tostring(ba.socket.http2sock(plain)))
plain:close()   -- a kept-alive connection would keep the script running
"""


@case
def httpc_and_http2sock_make_a_websocket_client():
    port = free_port()
    with Remora(args=["-l", "127.0.0.1:%d" % port, os.path.join(EXAMPLES, "www")], port=port,
                env={"REMORA_DEMO_TIMEPORT": str(free_port())}):
        code, out = run(HTTP2SOCK, args=[port])
        check(code == 0 and "status\t101" in out and "websocket\ttrue" in out, out)
        check("echo: through httpc" in out and "not upgraded: nil" in out, out)


done()
