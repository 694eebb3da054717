"""The embedding hosts of examples/embed, built by `make examples`: the
firmware host (its own poll() loop, a device timer, the binary protocol from C
and a Lua script with cosockets, one thread) and the arena host (a fixed
256 KiB arena that runs out). Real clients over loopback; each host is stopped
with SIGTERM and must give back every byte it allocated."""
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from lib import ROOT, case, check, done

BUILD = os.environ.get("REMORA_BUILD", os.path.join(ROOT, "build"))
BACKEND = os.environ.get("REMORA_BACKEND", "epoll")
LUA = os.path.join(ROOT, "examples", "embed", "firmware.lua")


class Host:
    """A host binary; waits for its "protocol on port N" line."""

    def __init__(self, name, args):
        self.logf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([os.path.join(BUILD, "examples", name)] + [str(a) for a in args],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        self.port = int(self.wait_for("protocol on port ").split("protocol on port ")[1].split(",")[0])

    def log(self):
        self.logf.seek(0)
        return self.logf.read().decode(errors="replace")

    def wait_for(self, text, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log().splitlines():
                if text in line:
                    return line
            check(self.proc.poll() is None, "host exited early:\n" + self.log())
            time.sleep(0.02)
        raise AssertionError("never saw %r:\n%s" % (text, self.log()))

    def stop(self):
        """SIGTERM; returns the exit code (0: everything freed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            return None
        b += d
    return b


def frame(op, body=b""):
    return struct.pack(">H", len(op) + len(body)) + op + body


def response(s):
    """(status, body), or None at end of stream."""
    head = recv_exact(s, 2)
    if head is None:
        return None
    body = recv_exact(s, struct.unpack(">H", head)[0])
    return None if body is None else (body[0], body[1:])


def ask(s, op, body=b""):
    s.sendall(frame(op, body))
    return response(s)


def stats(port):
    with connect(port) as s:
        status, body = ask(s, b"S")
    check(status == 0, "stats failed")
    return dict(kv.split("=", 1) for kv in body.decode().split())


def refused(s):
    """A refused peer reads end of stream (or a reset) instead of an answer."""
    try:
        return ask(s, b"E", b"x") is None
    except (ConnectionResetError, BrokenPipeError):
        return True


def wait_until(fn, timeout=5, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(what + " never came true")

def ask_line(s, text):
    s.sendall(text + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(4096)
        check(d, "closed")
        buf += d
    return buf.decode()

def stats_or_none(port):
    try:
        return stats(port)
    except (AssertionError, OSError, TypeError):
        return None


def firmware(*args):
    return Host("firmware", ["-p", 0, "-t", 20] + list(args) + [LUA, 0])


@case
def firmware_binary_protocol():
    with firmware() as h:
        with connect(h.port) as s:
            check(ask(s, b"E", b"hello") == (0, b"hello"), "echo")
            big = (bytes(range(256)) * 4)[:1023]        # opcode + 1023 bytes: max_frame exactly
            check(ask(s, b"E", big) == (0, big), "binary echo of the largest request")
            s.sendall(frame(b"E", b"one") + frame(b"E", b"two") + frame(b"Q"))   # pipelined
            check(response(s) == (0, b"one") and response(s) == (0, b"two"), "pipelined answers in order")
            check(response(s) == (1, b"unknown opcode"), "unknown opcode answered as an error")
            for byte in frame(b"E", b"split"):          # a request trickling in byte by byte
                s.sendall(bytes([byte]))
            check(response(s) == (0, b"split"), "request split at every byte")
        with connect(h.port) as s:
            s.sendall(struct.pack(">H", 5000) + b"E" * 100)   # longer than max_frame (1024)
            check(response(s) == (1, b"bad length"), "oversized request gets an error")
            check(s.recv(16) == b"", "and the connection is closed")
        st = stats(h.port)
        check(st["backend"] == BACKEND, "backend %s" % st["backend"])
        ticks = int(st["ticks"])
        wait_until(lambda: int(stats(h.port)["ticks"]) > ticks, what="device ticks advancing")
        check(h.stop() == 0, "exit code, log:\n" + h.log())
        check("0 bytes still allocated" in h.log(), "memory given back:\n" + h.log())


@case
def firmware_lua_cosockets():
    with firmware() as h:
        lport = int(h.wait_for("line server on port").rsplit(" ", 1)[1])
        with connect(lport) as s:
            s.sendall(b"first line\nsecond")
            s.sendall(b" line\n")
            buf = b""
            while buf.count(b"\n") < 2:
                d = s.recv(4096)
                check(d, "line server closed early:\n" + h.log())
                buf += d
            lines = buf.decode().splitlines()
            check(lines[0].startswith("echo=first line ") and lines[1].startswith("echo=second line "),
                  "echoed through the C protocol: %r" % lines)
            check("backend=" + BACKEND in lines[0], "stats from C: %r" % lines[0])
        # the Lua timer runs on the same loop
        with connect(lport) as s:
            beats = lambda: int(ask_line(s, b"x").split("beats=")[1].split()[0])
            first = beats()
            wait_until(lambda: beats() > first, what="Lua timer beats advancing")
        check(h.stop() == 0 and "0 bytes still allocated" in h.log(), "clean stop:\n" + h.log())



@case
def firmware_connection_cap():
    # -c 3: the cap counts every rm_conn of the loop, C and Lua alike
    with firmware("-c", 3) as h:
        keep = [connect(h.port) for _ in range(3)]
        for s in keep:
            check(ask(s, b"E", b"in") == (0, b"in"), "connections under the cap work")
        extra = connect(h.port)
        check(refused(extra), "a connection past the cap is refused")
        extra.close()
        check(ask(keep[0], b"E", b"still") == (0, b"still"), "existing connection still works")
        keep.pop().close()

        def new_one_works():
            s = connect(h.port)
            try:
                return not refused(s)
            finally:
                s.close()
        wait_until(new_one_works, what="a new connection accepted after one closed")
        h.wait_for("the cap; refusing")
        for s in keep:
            s.close()
        check(h.stop() == 0, "clean stop:\n" + h.log())


@case
def firmware_slow_reader_is_bounded():
    # A peer that sends requests and never reads: the host stops reading it
    # once -q bytes of answers wait, so its memory stays bounded; nothing is lost.
    with firmware("-q", 16384) as h:
        base = int(stats(h.port)["mem"])
        s = connect(h.port)
        s.setblocking(False)
        body = b"z" * 1000
        req = frame(b"E", body)
        sent = 0
        deadline = time.time() + 5
        stalls = 0
        while time.time() < deadline and stalls < 20:
            try:
                n = s.send(req[sent % len(req):] if sent % len(req) else req)
                sent += n
                stalls = 0
            except BlockingIOError:
                stalls += 1
                time.sleep(0.01)
        check(sent > 1 << 20 or stalls >= 20, "sent %d" % sent)
        grown = int(stats(h.port)["mem"]) - base
        check(grown < 64 * 1024, "memory grew by %d bytes for a peer that does not read" % grown)
        # Finish the last request while a reader takes the answers.
        s.setblocking(True)
        s.settimeout(10)
        total = -(-sent // len(req))
        answers = []
        reader = threading.Thread(target=lambda: answers.extend(response(s) for _ in range(total)))
        reader.start()
        s.sendall(req[sent % len(req):] if sent % len(req) else b"")
        reader.join(20)
        check(len(answers) == total and all(a == (0, body) for a in answers),
              "%d answers of %d intact" % (sum(a == (0, body) for a in answers), total))
        s.close()
        check(h.stop() == 0, "clean stop:\n" + h.log())


@case
def arena_runs_out_and_recovers():
    with Host("arena", ["-p", 0]) as h:
        if not os.environ.get("REMORA_SANITIZER"):
            rss = int(open("/proc/%d/status" % h.proc.pid).read().split("VmRSS:")[1].split()[0])
            check(rss < 2048, "idle RSS %d KiB" % rss)
        first = connect(h.port)
        check(ask(first, b"E", b"first") == (0, b"first"), "first connection")
        conns, refusal = [first], False
        for _ in range(300):                 # 256 KiB holds about 58 connections of 4 KiB
            s = connect(h.port)
            if refused(s):
                s.close()
                refusal = True
                break
            conns.append(s)
        check(refusal, "the arena never ran out with %d connections" % len(conns))
        check(len(conns) > 10, "only %d connections fit" % len(conns))
        for s in (first, conns[-1]):
            check(ask(s, b"E", b"still here") == (0, b"still here"), "open connections keep working")
        st = stats_or_none(h.port)
        if st:   # the stats connection itself may be refused while the arena is full
            check(int(st["refused"]) >= 1, "refusals counted")
        h.wait_for("out of memory, refusing")
        for s in conns[1:11]:
            s.close()

        def new_one_works():
            s = connect(h.port)
            try:
                return not refused(s)
            finally:
                s.close()
        wait_until(new_one_works, what="memory given back makes room again")
        check(ask(first, b"E", b"after") == (0, b"after"), "first connection after recovery")
        for s in [first] + conns[11:]:
            s.close()
        check(h.stop() == 0, "exit code:\n" + h.log())
        check("0 arena bytes still in use" in h.log(), "arena given back:\n" + h.log())



done()
