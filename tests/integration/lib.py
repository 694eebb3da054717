"""Shared helpers for the integration tests: start the real remora binary on a
script, talk to it over loopback, and report each case as "ok NAME" or
"FAIL NAME: why" (the format tests/run.sh counts)."""
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.environ.get("REMORA_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
failures = 0


def free_port():
    """A free port below the kernel's ephemeral range (32768 and up here), so
    that the source ports of heavy client traffic never take it first."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("remora exited early with %s:\n%s" % (proc.returncode, proc.log()))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d never opened" % port)


class Remora:
    """remora running a script (text or path) with arguments; a context manager
    that stops it with SIGTERM and keeps its log."""

    def __init__(self, script=None, path=None, args=(), port=None, env=None, ready=None):
        """port: wait until it accepts (that probe costs the server one
        connection); ready: wait until the log shows this text instead."""
        self.port = port
        self.ready = ready
        if script is not None:
            fd, path = tempfile.mkstemp(suffix=".lua")
            os.write(fd, script.encode())
            os.close(fd)
            self.tmp = path
        else:
            self.tmp = None
        self.logf = tempfile.TemporaryFile()
        e = dict(os.environ)
        e.update(env or {})
        cmd = [BIN] + ([path] if path else []) + [str(a) for a in args]   # no script: options only
        self.proc = subprocess.Popen(cmd, stdout=self.logf,
                                     stderr=subprocess.STDOUT, cwd=ROOT, env=e)
        self.proc.log = self.log
        self.exitcode = None

    def __enter__(self):
        if self.ready:
            deadline = time.time() + 30   # generous: sanitizer builds start slowly
            while self.ready not in self.log():
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("remora never became ready:\n" + self.log())
                time.sleep(0.02)
        elif self.port:
            wait_port(self.port, proc=self.proc)
        return self

    def log(self):
        self.logf.seek(0)
        return self.logf.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.exitcode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exitcode = self.proc.wait()
        return self.exitcode

    def __exit__(self, *exc):
        self.stop()
        if self.tmp:
            os.unlink(self.tmp)
        check_sanitizers(self.log())
        return False


def run(script, args=(), timeout=20, env=None):
    """Runs a script that ends by itself; returns (exit code, output)."""
    with Remora(script, args=args, env=env) as r:
        try:
            r.exitcode = r.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
            return None, r.log()
        return r.exitcode, r.log()


SANITIZER_MARKS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:")


def check_sanitizers(log):
    """A sanitizer report in remora's output fails the case that produced it."""
    for mark in SANITIZER_MARKS:
        if mark in log:
            i = log.index(mark)
            raise AssertionError("sanitizer report:\n" + log[max(0, i - 200):i + 3000])


def case(fn):
    """Runs one test case; an exception or a false check is a failure."""
    global failures
    name = fn.__name__
    try:
        fn()
        print("ok", name, flush=True)
    except Exception as e:
        failures += 1
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print("FAIL %s: %s" % (name, detail), flush=True)
        traceback.print_exc(file=sys.stdout)
    return fn


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def recv_all(sock, n=None, timeout=10):
    """Reads until n bytes (or end of stream when n is None)."""
    sock.settimeout(timeout)
    chunks, got = [], 0
    while n is None or got < n:
        d = sock.recv(1 << 16 if n is None else min(1 << 16, n - got))
        if not d:
            break
        chunks.append(d)
        got += len(d)
    return b"".join(chunks)


def done():
    sys.exit(1 if failures else 0)
