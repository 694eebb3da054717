"""`make size`: what embedding remora costs, as one table.

Code: text + data + bss (from binutils `size`) and the stripped file size, for
the dispatcher-only library, the dispatcher-only host (arena), the full
library, the firmware host (dispatcher + Lua) and the runner. Memory: VmRSS of
each host idle, and the allocator's bytes per idle connection, read from the
host's own statistics (opcode 'S' of the binary protocol) before and after
opening N connections."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 200


def code_size(path):
    """text+data+bss summed over an object, archive or executable."""
    out = subprocess.run(["size", "-t", path], capture_output=True, text=True, check=True).stdout.splitlines()
    return int(out[-1].split()[3])


def stripped(path):
    with tempfile.NamedTemporaryFile() as t:
        subprocess.run(["strip", "--strip-unneeded", "-o", t.name, path], check=True)
        return os.path.getsize(t.name)


def kib(n):
    return "%.1f KiB" % (n / 1024)


class Host:
    def __init__(self, *args):
        self.proc = subprocess.Popen([os.path.join(BUILD, "examples", args[0])] + list(args[1:]),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        self.port = int(line.split("protocol on port ")[1].split(",")[0])
        time.sleep(0.3)   # let start-up settle before reading RSS

    def rss(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

    def stats(self):
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(struct.pack(">H", 1) + b"S")
            head = s.recv(2, socket.MSG_WAITALL)
            body = s.recv(struct.unpack(">H", head)[0], socket.MSG_WAITALL)
        return dict(kv.split("=", 1) for kv in body[1:].decode().split())

    def per_conn(self, key):
        """Allocator bytes per idle connection, and RSS bytes per connection."""
        before, rss0 = int(self.stats()[key].split("/")[0]), self.rss()
        conns = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(N)]
        for s in conns:   # one round trip each: all of them are accepted and idle now
            s.sendall(struct.pack(">H", 2) + b"Ex")
            s.recv(4, socket.MSG_WAITALL)
        after, rss1 = int(self.stats()[key].split("/")[0]), self.rss()
        for s in conns:
            s.close()
        return (after - before) / N, (rss1 - rss0) / N

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def main():
    lib = lambda name: os.path.join(BUILD, name)
    ex = lambda name: os.path.join(BUILD, "examples", name)
    rows = [("dispatcher-only library (libremora_dispatcher.a)", code_size(lib("libremora_dispatcher.a")),
             stripped(lib("libremora_dispatcher.a"))),
            ("dispatcher-only host (examples/arena)", code_size(ex("arena")), stripped(ex("arena")))]
    own = sum(code_size(os.path.join(BUILD, "obj", "dispatcher", f))
              for f in os.listdir(os.path.join(BUILD, "obj", "dispatcher")) if f.endswith(".o"))
    print("%-52s %12s %12s" % ("code", "text+data+bss", "stripped"))
    for name, code, strip in rows:
        print("%-52s %12s %12s" % (name, kib(code), kib(strip)))
    for name, path in [("full library (libremora.a)", lib("libremora.a")),
                       ("firmware host, with Lua (examples/firmware)", ex("firmware")),
                       ("runner (remora)", lib("remora"))]:
        if os.path.exists(path):
            print("%-52s %12s %12s" % (name, kib(code_size(path)), kib(stripped(path))))
    print("%-52s %12s" % ("  of which the dispatcher's own objects", kib(own)))

    print("\n%-52s %12s %12s" % ("memory (%d idle connections)" % N, "allocator", "RSS"))
    arena = Host("arena", "-p", "0", "-k", "2048", "-f", "16", "-c", str(N + 10))
    idle = arena.rss()
    a_conn, a_rss = arena.per_conn("arena")
    arena.stop()
    print("%-52s %12s %12s" % ("arena host idle (dispatcher only)", "", kib(idle)))
    print("%-52s %10.0f B %10.0f B" % ("  per idle connection (16-byte protocol buffer)", a_conn, a_rss))
    if os.path.exists(ex("firmware")):
        fw = Host("firmware", "-p", "0", "-c", str(N + 10), "examples/embed/firmware.lua", "0")
        idle = fw.rss()
        f_conn, f_rss = fw.per_conn("mem")
        fw.stop()
        print("%-52s %12s %12s" % ("firmware host idle (dispatcher + Lua)", "", kib(idle)))
        print("%-52s %10.0f B %10.0f B" % ("  per idle connection (1 KiB protocol buffer)", f_conn, f_rss))


main()
