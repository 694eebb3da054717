"""The foundation, driven through the real binary: the echo example under
1,000 concurrent connections, FIFO writers into a slow reader with bounded
memory, resets, Lua errors, timeouts, shutdown."""
import asyncio
import os
import random
import re
import signal
import socket
import struct
import threading
import time

from lib import Remora, case, check, done, free_port, recv_all, run, ROOT

EXAMPLES = os.path.join(ROOT, "examples")


@case
def echo_1000_concurrent_connections_byte_exact():
    port = free_port()
    with Remora(path=os.path.join(EXAMPLES, "echo.lua"), args=[port], port=port) as r:
        async def one(i):
            payload = random.Random(i).randbytes(1 + (i * 7919) % 20000)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for off in range(0, len(payload), 4096):
                writer.write(payload[off:off + 4096])
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
            writer.close()
            return got == payload

        async def main():
            sem = asyncio.Semaphore(1000)

            async def guarded(i):
                async with sem:
                    return await one(i)
            conns = [asyncio.ensure_future(guarded(i)) for i in range(1000)]
            return await asyncio.gather(*conns)

        results = asyncio.run(main())
        check(all(results), "%d of 1000 echoes differ" % results.count(False))
        check(r.alive(), "server died")


FIFO_SCRIPT = r"""
local port = tonumber(arg[1])
local writers, per, size = 50, 1000, 1000
ba.socket.bind(port):event(function(l)
  local c = l:accept()
  c:queuelen(16384)
  local finished = 0
  for w = 1, writers do
    ba.socket.event(function(_, w)
      local pad = string.rep(string.char(64 + w % 26), size - 12)
      for i = 1, per do
        local ok, err = c:write(string.format("%03d:%06d:", w, i) .. pad .. "\n")
        if not ok then print("write failed: " .. tostring(err)) return end
      end
      finished = finished + 1
      if finished == writers then c:close() end
    end, w)
  end
end)
print("ready")
"""


@case
def fifo_50_writers_slow_reader_bounded_memory():
    port = free_port()
    with Remora(FIFO_SCRIPT, args=[port], ready="ready") as r:
        base = r.rss_kb()
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        buf, peak, last_sample = bytearray(), base, 0
        s.settimeout(30)
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
            time.sleep(0.002)   # a slow reader
            if len(buf) - last_sample > 1 << 20:
                last_sample = len(buf)
                peak = max(peak, r.rss_kb())
        lines = bytes(buf).split(b"\n")[:-1]
        check(len(lines) == 50000, "got %d messages" % len(lines))
        seen = {}
        for line in lines:
            w, i = int(line[0:3]), int(line[4:10])
            check(seen.get(w, 0) + 1 == i, "writer %d: message %d after %d" % (w, i, seen.get(w, 0)))
            seen[w] = i
        check(len(seen) == 50 and all(v == 1000 for v in seen.values()), "missing messages")
        # 50 MB went through; a bounded queue keeps the growth to a few MB.
        if not os.environ.get("REMORA_SANITIZER"):   # ASan's quarantine keeps freed memory
            check(peak - base < 16 * 1024, "RSS grew %d KiB" % (peak - base))
        check("write failed" not in r.log(), r.log())


RESET_SCRIPT = r"""
local port = tonumber(arg[1])
ba.socket.bind(port):event(function(l)
  while true do
    local c = l:accept()
    if not c then break end
    c:event(function(c)
      local first = c:read()
      if first == "flood" then
        local chunk = string.rep("z", 1 << 20)
        while true do
          local ok, err = c:write(chunk)
          if not ok then print("writer got: " .. tostring(err)) break end
        end
      else
        c:write("pong:" .. tostring(first))
      end
    end, "s")
  end
end)
"""


@case
def peer_reset_mid_write_only_ends_that_connection():
    port = free_port()
    with Remora(RESET_SCRIPT, args=[port], port=port) as r:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"flood")
        recv_all(s, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()   # a reset in the middle of the flood
        deadline = time.time() + 5
        while "writer got" not in r.log() and time.time() < deadline:
            time.sleep(0.05)
        check(re.search(r"writer got: (socketwritefailed|socketclosed)", r.log()), r.log())
        s2 = socket.create_connection(("127.0.0.1", port))
        s2.sendall(b"ping")
        check(recv_all(s2, 9) == b"pong:ping", "server stopped answering")
        check(r.alive())


ERROR_SCRIPT = r"""
local port = tonumber(arg[1])
ba.socket.bind(port):event(function(l)
  while true do
    local c = l:accept()
    if not c then break end
    c:event(function(c)
      local d = c:read()
      if d == "boom" then error("boom in a cosocket") end
      c:write("fine:" .. d)
    end, "s")
  end
end)
"""


@case
def lua_error_in_cosocket_closes_only_that_socket():
    port = free_port()
    with Remora(ERROR_SCRIPT, args=[port], port=port) as r:
        bystander = socket.create_connection(("127.0.0.1", port))
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"boom")
        check(recv_all(s) == b"", "the failing socket was not closed")
        log = r.log()
        check("boom in a cosocket" in log and "stack traceback" in log, log)
        bystander.sendall(b"x")
        check(recv_all(bystander, 6) == b"fine:x", "the other connection was harmed")
        check(r.alive())


TIMEOUT_SCRIPT = r"""
local n, early, done = 200, 0, 0
local late = {}
for i = 1, n do
  ba.socket.event(function(s)
    for round = 1, 3 do
      local want = 20 + (i * 37 + round * 11) % 200
      local t0 = ba.clock()
      local d, err = s:read(want)
      local dt = ba.clock() - t0
      if err ~= "timeout" then print("unexpected", d, err) end
      if dt < want then early = early + 1 end
      late[#late + 1] = dt - want
    end
    done = done + 1
    if done == n then
      table.sort(late)
      print(string.format("timeouts done early=%d p50_ms=%d p99_ms=%d max_ms=%d",
        early, late[#late // 2], late[math.ceil(#late * 0.99)], late[#late]))
    end
  end)
end
"""


def timeouts_under_load():
    """Runs TIMEOUT_SCRIPT while an echo server in another process is kept busy;
    returns the script's exit code and output."""
    port = free_port()
    stop = threading.Event()
    with Remora(path=os.path.join(EXAMPLES, "echo.lua"), args=[port], port=port):
        def load():   # keep the machine busy with echo traffic meanwhile
            s = socket.create_connection(("127.0.0.1", port))
            blob = os.urandom(65536)
            while not stop.is_set():
                s.sendall(blob)
                recv_all(s, len(blob))
        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            # The timer process is loaded by its own 200 waiters and shares
            # the two cores with the echo traffic.
            return run(TIMEOUT_SCRIPT, timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join()


@case
def read_timeouts_fire_on_time_under_load():
    late_ms = 100 if os.environ.get("REMORA_SANITIZER") else 10   # sanitizers slow every step
    for attempt in range(2):   # a second measurement when the host itself stalled the first
        code, out = timeouts_under_load()
        m = re.search(r"early=(\d+) p50_ms=(\d+) p99_ms=(\d+) max_ms=(\d+)", out)
        check(code == 0 and m, out)
        print("# read(ms) lateness under load: " + m.group(0))
        check(m.group(1) == "0", "a read(ms) returned early: " + out)
        if int(m.group(3)) <= late_ms:
            break
    # Within 10 ms of their time, 99 in 100; a rare straggler is the machine's
    # scheduler setting the whole process aside, not the dispatcher.
    check(int(m.group(3)) <= late_ms, "p99 lateness %s ms: %s" % (m.group(3), out))


CONNECTED_TIMEOUT_SCRIPT = r"""
local port = tonumber(arg[1])
ba.socket.bind(port):event(function(l)
  local c = l:accept()
  c:event(function(c)
    local t0 = ba.clock()
    local d, err = c:read(150)
    print(string.format("first read: %s after %d ms", tostring(err), ba.clock() - t0))
    d, err = c:read(2000)     -- the socket stays open after a timeout
    print("second read: " .. tostring(d))
    c:write("bye")
  end, "s")
end)
print("ready")
"""


@case
def read_timeout_leaves_socket_open():
    port = free_port()
    with Remora(CONNECTED_TIMEOUT_SCRIPT, args=[port], ready="ready") as r:
        s = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.4)
        s.sendall(b"late data")
        check(recv_all(s, 3) == b"bye", r.log())
        time.sleep(0.1)
        log = r.log()
        m = re.search(r"first read: timeout after (\d+) ms", log)
        check(m and 150 <= int(m.group(1)) <= 170, log)
        check("second read: late data" in log, log)


SHUTDOWN_SCRIPT = r"""
local port = tonumber(arg[1])
ba.socket.bind(port):event(function(l)
  local c = l:accept()
  local d, err = c:read()
  print("reader got: " .. tostring(err))
  -- a wait begun after shutdown ends at once, cleanly
  print("connect after shutdown", pcall(ba.socket.connect, "127.0.0.1", port, {timeout = 1000}))
end)
ba.socket.event(function(s)
  local d, err = s:read(60000)
  print("sleeper got: " .. tostring(err))
end)
print("ready")
"""


@case
def sigterm_resumes_waiters_with_sysshutdown():
    port = free_port()
    with Remora(SHUTDOWN_SCRIPT, args=[port], ready="ready") as r:
        s = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.2)
        t0 = time.time()
        code = r.stop()
        check(code == 0, "exit code %s" % code)
        check(time.time() - t0 < 2, "shutdown took too long")
        log = r.log()
        check("reader got: sysshutdown" in log and "sleeper got: sysshutdown" in log, log)
        check("connect after shutdown\tfalse\tsysshutdown" in log, log)


@case
def script_ends_when_nothing_is_left():
    code, out = run("""
        local t0 = ba.clock()
        ba.socket.event(function(s) s:read(100) print('slept') end)
        print('main done')
    """, timeout=10)
    check(code == 0 and out.index("main done") < out.index("slept"), out)


@case
def invalid_yield_is_an_error_not_a_hang():
    code, out = run("""
        ba.socket.event(function(s) coroutine.yield() print('unreachable') end)
        print('still running')
    """, timeout=10)
    check(code == 0 and "invalid yield" in out and "unreachable" not in out and "still running" in out, out)


@case
def udp_echo_example():
    port = free_port()
    with Remora(path=os.path.join(EXAMPLES, "udp-echo.lua"), args=[port]) as r:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(0.5)
        got = None
        for attempt in range(20):     # the server may still be starting
            u.sendto(b"datagram %d" % attempt, ("127.0.0.1", port))
            try:
                got = u.recvfrom(100)[0]
                break
            except socket.timeout:
                pass
        check(got and got.startswith(b"datagram"), "no echo: " + r.log())


@case
def time_client_and_server_examples():
    port = free_port()
    with Remora(path=os.path.join(EXAMPLES, "time-server.lua"), args=[port], port=port):
        s = socket.create_connection(("127.0.0.1", port))
        raw = recv_all(s)
        check(len(raw) == 4 and abs(struct.unpack("!I", raw)[0] - 2208988800 - time.time()) < 5, repr(raw))
        code, out = run(open(os.path.join(EXAMPLES, "time-client.lua")).read(), args=["127.0.0.1", port])
        check(code == 0 and re.search(r"time: \d{4}-\d\d-\d\d", out), out)


GUARD_SCRIPT = r"""
local victim, t0 = nil, ba.clock()
ba.timer(function()
  victim = coroutine.running()
  ba.sleep(300)
  print(string.format("victim woke after %d ms", ba.clock() - t0))
  local user = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
  local a, x = coroutine.resume(user, 1)
  local b, y = coroutine.resume(user, 5)
  print("user", a, x, b, y, coroutine.close(user))
end):set(1, true)
ba.timer(function()
  print("resume", coroutine.resume(victim, "garbage"))
  print("close", coroutine.close(victim))
end):set(50, true)
ba.timer(function() os.exit(0) end):set(500, true)
"""


@case
def coroutine_resume_and_close_refuse_a_waiting_remora_coroutine():
    code, out = run(GUARD_SCRIPT, timeout=10)
    check(code == 0 and "resume\tfalse\tcannot resume" in out and "close\tfalse\tcannot" in out, out)
    m = re.search(r"victim woke after (\d+) ms", out)
    check(m and int(m.group(1)) >= 300, "the sleep was not cut short: " + out)
    check("user\ttrue\t2\ttrue\t10\ttrue" in out, "plain coroutines still resume and close: " + out)
    check("dead coroutine" not in out, out)


@case
def timer_example_ticks_every_500ms():
    code, out = run(open(os.path.join(EXAMPLES, "timer.lua")).read(), args=[3], timeout=10)
    ms = [int(x) for x in re.findall(r"tick \d+ at (\d+) ms", out)]
    check(code == 0 and len(ms) == 3, out)
    # Never early; late only by what a stalled shared host may add.
    check(all(490 <= b - a <= 750 for a, b in zip(ms, ms[1:])), out)


API_SCRIPT = r"""
local function eq(a, b, what) if a ~= b then print("MISMATCH " .. what .. ": " .. tostring(a) .. " ~= " .. tostring(b)) end end
local S = ba.socket
eq(S.n2h(4, S.h2n(4, 0x01020304)), 0x01020304, "n2h/h2n")
eq(S.h2n(2, 0x4142), "AB", "h2n 2")
eq(S.n2h(2, "xxAB", 3), 0x4142, "n2h offset")
eq(S.toip("127.0.0.1"), "127.0.0.1", "toip numeric")
eq(S.toip("localhost"), "127.0.0.1", "toip name")
local ok, err = pcall(S.n2h, 9, "x")
eq(ok, false, "n2h size check")
-- connect refused, and timeout-free errors
local s, e = S.connect("127.0.0.1", 1)
eq(s, nil, "refused") eq(e, "cannotconnect", "refused reason")
s, e = S.connect("no-such-host.invalid", 80, {timeout = 5000})
eq(s, nil, "unresolvable") eq(e, "cannotresolve", "unresolvable reason")
-- bind conflicts
local l = S.bind(0)
local lport = select(2, l:sockname())
eq(S.bind(lport), nil, "bind twice")
-- a connected pair: state, names, options, queuelen, disable/enable
l:event(function(l)
  local c = l:accept()
  c:event(function(c)
    eq(c:state(), "exec", "state exec")
    eq(c:owner(), true, "owner")
    local d = c:read()
    c:write("got " .. d)
    eq(c:queuelen(), 16384, "queuelen default")
    eq(c:queuelen(100), 16384, "queuelen set")
    eq(c:queuelen(), 100, "queuelen new")
  end, "s")
end)
local cli = S.connect("127.0.0.1", lport)
eq(select(2, cli:peername()), lport, "peername port")
eq(cli:setoption("tcp-nodelay", true), true, "nodelay")
eq(pcall(cli.setoption, cli, "no-such-option"), false, "unknown option raises")
cli:write("hi")
eq(cli:read(2000), "got hi", "round trip")
eq(cli:read(2000), nil, "peer closed")
eq(cli:state(), "terminated", "terminated")
eq(S.stat().listeners, 0, "the accept coroutine ended and closed its listener")
l:close()
-- a writer that cannot be suspended gets nil, queued when the queue is full
local l2 = S.bind(0)
local p2 = select(2, l2:sockname())
local peer = S.connect("127.0.0.1", p2)
local srv = l2:accept()
eq(S.stat().listeners, 1, "stat listeners")
local refused
coroutine.wrap(function()
  local big = string.rep("q", 1 << 20)
  for i = 1, 64 do
    local ok, queued = srv:write(big)
    if not ok then refused = queued break end
  end
end)()
eq(type(refused), "number", "nowait write refused with a number")
srv:close() peer:close() l2:close()
-- disable()/enable(...) hand values to the owner
local got
local ev = S.event(function(s) got = table.pack(s:disable()) end)
ev:enable("a", 2)
S.sleep(10)
eq(got and got.n, 2, "enable count") eq(got and got[1], "a", "enable value")
print("api done")
"""


@case
def barracuda_api_details():
    code, out = run(API_SCRIPT, timeout=20)
    check(code == 0 and "api done" in out and "MISMATCH" not in out, out)


done()
