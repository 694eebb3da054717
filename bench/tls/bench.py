"""TLS handshakes: remora against nginx, same ECDSA P-256 certificate, TLS 1.2,
one server process (one nginx worker) each, on loopback.

For each server it runs `openssl s_time` twice: -new (full handshakes) and
-reuse (resumed handshakes), and reports handshakes per second of wall time
and per second of *server* CPU (utime+stime of the server's processes over
the run, from /proc), the figure that does not depend on how fast the single
client is. Usage: python3 bench/tls/bench.py [seconds per run, default 5]."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REMORA = os.environ.get("REMORA_BIN", os.path.join(ROOT, "build", "remora"))
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
TICK = os.sysconf("SC_CLK_TCK")

SERVER_LUA = """
local port, dir = tonumber(arg[1]), arg[2]
local ssl = ba.create.sharkssl(nil, {server = true})
assert(ssl:addcert(ba.create.sharkcert(dir .. "/cert.pem", dir .. "/key.pem")))
ba.socket.bind(port, {shark = ssl, intf = "127.0.0.1", backlog = 1024}):event(function(l)
  while true do
    local c = l:accept()
    if not c then return end
    c:setoption("tcp-nodelay", true)   -- the handshake flight goes out in several writes
    c:event(function(c)
      while c:read() do end   -- s_time handshakes and closes
    end, "s")
  end
end)
"""

NGINX_CONF = """
daemon off; worker_processes 1; pid %(dir)s/nginx.pid; error_log %(dir)s/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(dir)s; proxy_temp_path %(dir)s; fastcgi_temp_path %(dir)s;
  uwsgi_temp_path %(dir)s; scgi_temp_path %(dir)s;
  server {
    listen 127.0.0.1:%(port)d ssl;
    ssl_certificate %(dir)s/cert.pem; ssl_certificate_key %(dir)s/key.pem;
    ssl_protocols TLSv1.2; ssl_prefer_server_ciphers on;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;
    ssl_session_cache shared:S:10m; ssl_session_tickets on;
    location / { return 200 "ok"; }
  }
}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])   # utime, stime
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def s_time(port, mode):
    out = subprocess.run(["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, mode, "-time", str(SECONDS),
                          "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                         capture_output=True, text=True, timeout=SECONDS * 4 + 30).stdout
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    if not m:
        raise RuntimeError("s_time said:\n" + out)
    return int(m.group(1)), float(m.group(2))


def measure(name, port, pids):
    rows = []
    for mode, label in (("-new", "full"), ("-reuse", "resumed")):
        before = cpu_ticks(pids)
        n, secs = s_time(port, mode)
        cpu = (cpu_ticks(pids) - before) / TICK
        rows.append((name, label, n / secs, n / cpu if cpu else float("nan"), cpu))
    return rows


def main():
    d = tempfile.mkdtemp(prefix="remora-bench-tls-")
    rows = []
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", d + "/key.pem", "-out", d + "/cert.pem", "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True)
        with open(d + "/server.lua", "w") as f:
            f.write(SERVER_LUA)
        port = free_port()
        r = subprocess.Popen([REMORA, d + "/server.lua", str(port), d], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            rows += measure("remora", port, [r.pid])
        finally:
            r.send_signal(signal.SIGTERM)
            r.wait()
        if shutil.which("nginx"):
            port = free_port()
            with open(d + "/nginx.conf", "w") as f:
                f.write(NGINX_CONF % {"dir": d, "port": port})
            n = subprocess.Popen(["nginx", "-c", d + "/nginx.conf", "-p", d], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            try:
                wait_port(port)
                rows += measure("nginx", port, [n.pid] + children(n.pid))
            finally:
                n.send_signal(signal.SIGQUIT)
                n.wait()
        else:
            print("nginx not installed: remora only")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("%-7s %-8s %14s %18s %10s" % ("server", "kind", "handshakes/s", "per server CPU-s", "server CPU"))
    for name, label, rate, per_cpu, cpu in rows:
        print("%-7s %-8s %14.0f %18.0f %9.2fs" % (name, label, rate, per_cpu, cpu))


main()
