"""Where an idle WebSocket's bytes go, in remora alone (not part of make bench):
opens BENCH_IDLE_CONNS connections (default 19,000) as bench.py does and
prints, per connection, the growth of

  RSS                     /proc/PID/status
  malloc's heap           system bytes of arena 0 (malloc_stats, through gdb)
  malloc's bytes in use   in use bytes of arena 0: live C and Lua objects,
                          and Lua garbage not yet collected
  Lua heap                collectgarbage("count") before and after a full
                          collection (an LSP page next to ws.lsp)
  in use after collecting malloc's bytes in use once that page collected:
                          live C and Lua objects only, which varies least
                          from run to run (garbage depends on when the
                          collector last ran)

so that RSS - heap is the mappings outside malloc's heap (arrays big enough
to be mmap'd), heap - in use the heap's holes, in use - Lua the C records.
The figures repeat within a few bytes for a given build.
    python3 bench/idle/account.py [REMORA_BIN]"""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as b  # noqa: E402

h = b.h
GC_PAGE = """<?lsp
local before = collectgarbage("count")
collectgarbage("collect")
print(string.format("%d %d", math.floor(before * 1024), math.floor(collectgarbage("count") * 1024)))
?>"""


def malloc_arena(pid, log):
    """(system, in use) bytes of malloc's main arena; the process prints them."""
    start = os.path.getsize(log)
    subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (void)malloc_stats()"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # its status is 1 even then
    with open(log) as f:
        f.seek(start)
        m = re.search(r"Arena 0:\nsystem bytes += +(\d+)\nin use bytes += +(\d+)", f.read())
    if not m:
        raise RuntimeError("gdb could not make the server print malloc_stats (is ptrace allowed?)")
    return int(m.group(1)), int(m.group(2))


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else h.BIN
    h.raise_fd_limit()
    app = h.tmpdir("idle-account")
    shutil.copy(os.path.join(HERE, "ws.lsp"), app)
    with open(os.path.join(app, "gc.lsp"), "w") as f:
        f.write(GC_PAGE)
    port, n = h.free_port(), b.CONNS
    log = os.path.join(h.tmpdir("idle-account-log"), "remora.log")
    proc = subprocess.Popen([binary, "--state", h.tmpdir("idle-account-state"), "--max-conns", str(n + 100),
                             "-l", "127.0.0.1:%d" % port, app], stderr=open(log, "w"))

    def lua_heap():
        return [int(x) for x in urllib.request.urlopen("http://127.0.0.1:%d/gc.lsp" % port, timeout=30).read().split()]

    try:
        for _ in range(100):
            try:
                lua_heap()
                break
            except OSError:
                time.sleep(0.1)
        lua0 = lua_heap()[1]
        time.sleep(0.3)
        rss0, arena0 = h.rss_kib(proc.pid), malloc_arena(proc.pid, log)
        socks = b.open_all(port, "/ws.lsp", n)
        time.sleep(2)
        rss1, arena1 = h.rss_kib(proc.pid), malloc_arena(proc.pid, log)
        lua1 = lua_heap()
        arena2 = malloc_arena(proc.pid, log)
        b.check_echo(socks)
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait()
    per = lambda a, z: (z - a) / n  # noqa: E731
    print("%d idle WebSockets, bytes per connection:" % n)
    print("  RSS                 %6.0f" % per(rss0 * 1024, rss1 * 1024))
    print("  malloc heap         %6.0f" % per(arena0[0], arena1[0]))
    print("  malloc in use       %6.0f" % per(arena0[1], arena1[1]))
    print("   after a collection %6.0f (live objects only: the steadiest figure)" % per(arena0[1], arena2[1]))
    print("  Lua heap            %6.0f (%.0f garbage)" % (per(lua0, lua1[0]), per(lua1[1], lua1[0])))
    print("  Lua live            %6.0f" % per(lua0, lua1[1]))


if __name__ == "__main__":
    main()
