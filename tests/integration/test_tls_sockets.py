"""TLS on ba.socket against real peers: a remora client against openssl
s_server (verification, wrong CA, ALPN), openssl s_client against a remora
TLS listener (SNI between two certificates, resumption), STARTTLS-style
upgrades both ways (remora pair, Python's ssl), and failing handshakes that
close only their own connection."""
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from lib import Remora, case, check, done, free_port, run, wait_port

TMP = tempfile.mkdtemp(prefix="remora-tls-")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=30)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", os.path.join(TMP, name + ".key"), "-out", os.path.join(TMP, name + ".crt"),
            "-days", "2", "-subj", "/CN=" + name)


def make_cert(cn, ca="ca"):
    p = os.path.join(TMP, cn)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p + ".key",
            "-out", p + ".csr", "-subj", "/CN=" + cn)
    with open(p + ".ext", "w") as f:
        f.write("subjectAltName=DNS:%s,IP:127.0.0.1\n" % cn)
    openssl("x509", "-req", "-in", p + ".csr", "-CA", os.path.join(TMP, ca + ".crt"), "-CAkey",
            os.path.join(TMP, ca + ".key"), "-CAcreateserial", "-out", p + ".crt", "-days", "2",
            "-extfile", p + ".ext")


make_ca("ca")
make_ca("otherca")
make_cert("localhost")
make_cert("other.test")

PRELUDE = """
io.stdout:setvbuf("line")
local dir = %r
local function server_ssl(opts)
  opts = opts or {}
  opts.server = true
  local ssl = ba.create.sharkssl(nil, opts)
  assert(ssl:addcert(ba.create.sharkcert(dir .. "/localhost.crt", dir .. "/localhost.key")))
  assert(ssl:addcert(ba.create.sharkcert(nil, dir .. "/other.test.crt", dir .. "/other.test.key")))
  return ssl
end
local function client_ssl(ca, opts)
  local store = ba.create.certstore()
  assert(store:addcert(dir .. "/" .. ca .. ".crt"))
  return ba.create.sharkssl(store, opts or {})
end
""" % TMP


class SServer:
    """openssl s_server on a free port, reversing each line it reads."""

    def __init__(self, *extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:%d" % self.port, "-cert", os.path.join(TMP, "localhost.crt"),
             "-key", os.path.join(TMP, "localhost.key"), "-rev", "-quiet"] + list(extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


CLIENT = PRELUDE + """
local port = tonumber(arg[1])
ba.socket.event(function()
  local s, err = ba.socket.connect("localhost", port, {shark = client_ssl("ca"), alpn = "baz,bar", timeout = 5000})
  if not s then print("connect failed", err) return end
  local c = s:certificate()
  print("alpn", s:alpn(), "trusted", s:trusted(), s:trusted("localhost"), s:trusted("elsewhere.test"))
  print("cert", c.subject, c.issuer, #c.sha256, "cipher", (s:cipher()))
  s:write("hello tls\\n")
  print("echo", s:read(5000))
  s:close()
  local s2, err2, detail = ba.socket.connect("localhost", port, {shark = client_ssl("otherca"), timeout = 5000})
  print("wrongca", s2, err2, detail ~= nil)
  local s3 = ba.socket.connect("localhost", port, {shark = client_ssl("otherca", {verify = false}), timeout = 5000})
  print("optout", s3 ~= nil, s3 and s3:trusted())
  os.exit(0)
end)
"""


@case
def client_verifies_openssl_server_with_alpn_and_refuses_wrong_ca():
    with SServer("-alpn", "foo,bar") as srv:
        rc, out = run(CLIENT, args=[srv.port], timeout=30)
        check(rc == 0, "exit %s:\n%s" % (rc, out))
        check("alpn\tbar\ttrusted\ttrue\ttrue\tfalse" in out, out)
        check("cert\tCN=localhost\tCN=ca\t64\tcipher\tTLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" in out, out)
        check("echo\tslt olleh" in out, out)
        check("wrongca\tnil\tsslnottrusted\ttrue" in out, out)
        check("optout\ttrue\tfalse" in out, out)


WORKER_CLIENT = PRELUDE + """
local port = tonumber(arg[1])
ba.thread.run(function()
  local s, err = ba.socket.connect("localhost", port, {shark = client_ssl("ca"), timeout = 5000})
  print("worker connect", s ~= nil, err, s and s:trusted())
  s:write("hello tls\\n")
  print("worker echo", s:read(5000))
  s:close()
  local p = assert(ba.socket.connect("127.0.0.1", port, {timeout = 5000}))
  print("worker upgrade", p:upgrade(client_ssl("ca"), nil, "localhost"))
  p:write("abc\\n")
  print("worker echo2", p:read(5000))
  p:close()
  local bad, why = ba.socket.connect("localhost", port, {shark = client_ssl("otherca"), timeout = 5000})
  print("worker wrongca", bad, why)
end)
"""


@case
def a_worker_thread_connects_upgrades_and_reads_over_tls():
    with SServer() as srv:
        rc, out = run(WORKER_CLIENT, args=[srv.port], timeout=30)
        check(rc == 0, "exit %s:\n%s" % (rc, out))
        check("worker connect\ttrue\tnil\ttrue" in out, out)
        check("worker echo\tslt olleh" in out, out)
        check("worker upgrade\ttrue" in out and "worker echo2\tcba" in out, out)
        check("worker wrongca\tnil\tsslnottrusted" in out, out)


SERVER = PRELUDE + """
local port = tonumber(arg[1])
local hs_timeout = tonumber(arg[2] or "10000")
local l = assert(ba.socket.bind(port, {shark = server_ssl({timeout = hs_timeout}), intf = "127.0.0.1"}))
l:event(function(l)
  while true do
    local c = l:accept()
    if not c then return end
    c:event(function(c)
      local first = true
      while true do
        local d, err = c:read()
        if not d then print("conn ended", err) return end
        if first then
          print("handshake ok", "resumed", c:isresumed(), "cipher", (c:cipher()))
          first = false
        end
        c:write((c:isresumed() and "R:" or "F:") .. d)
        if d:find("bye") then c:close() return end
      end
    end, "s")
  end
end)
print("ready")
"""


def s_client(port, *extra, data=b"ping bye\n"):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile",
                        os.path.join(TMP, "ca.crt"), "-verify_return_error", "-ign_eof"] + list(extra),
                       input=data, capture_output=True, timeout=20)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


@case
def openssl_client_sni_chooses_between_two_certificates():
    port = free_port()
    with Remora(SERVER, args=[port], ready="ready") as r:
        out = s_client(port, "-servername", "other.test", "-verify_hostname", "other.test")
        check("subject=CN = other.test" in out and "Verify return code: 0 (ok)" in out, out)
        check("F:ping bye" in out, out)
        out = s_client(port, "-servername", "localhost", "-verify_hostname", "localhost")
        check("subject=CN = localhost" in out and "F:ping bye" in out, out)
        out = s_client(port)   # no SNI: the first certificate
        check("subject=CN = localhost" in out, out)
        check(r.alive(), "server died")


@case
def resumption_reported_by_isresumed():
    port = free_port()
    sess = os.path.join(TMP, "sess.pem")
    with Remora(SERVER, args=[port], ready="ready") as r:
        out = s_client(port, "-sess_out", sess, "-no_ticket")
        check("F:ping bye" in out, out)
        out = s_client(port, "-sess_in", sess, "-no_ticket")
        check("Reused, TLSv1.2" in out and "R:ping bye" in out, "session-id resumption:\n" + out)
        out = s_client(port, "-sess_out", sess)
        out = s_client(port, "-sess_in", sess)
        check("Reused, TLSv1.2" in out and "R:ping bye" in out, "ticket resumption:\n" + out)
        check(r.log().count("resumed\ttrue") == 2, r.log())
    # a remora client resumes by itself on its second connection to the same place
    client = PRELUDE + """
local port = tonumber(arg[1])
local ssl = client_ssl("ca")
ba.socket.event(function()
  for i = 1, 2 do
    local s, err = ba.socket.connect("localhost", port, {shark = ssl})
    print("client", i, s and s:isresumed(), err)
    s:write("x\\n") s:read() s:close()
  end
  os.exit(0)
end)
"""
    with Remora(SERVER, args=[port], ready="ready"):
        rc, out = run(client, args=[port])
        check("client\t1\tfalse" in out and "client\t2\ttrue" in out, out)


UPGRADE = PRELUDE + """
local port = tonumber(arg[1])
local sssl, cssl = server_ssl(), client_ssl("ca")
local l = assert(ba.socket.bind(port, {intf = "127.0.0.1"}))
l:event(function(l)
  while true do
    local c = l:accept()
    if not c then return end
    c:event(function(c)
      local line = c:read()
      if line ~= "STARTTLS\\n" then print("server got", line) return end
      c:write("OK\\n")
      local ok, err = c:upgrade(sssl)
      if not ok then print("server upgrade failed", err) return end
      while true do
        local d = c:read()
        if not d then return end
        c:write("tls:" .. d)
      end
    end, "s")
  end
end)
if arg[2] == "pair" then
  ba.socket.event(function()
    local s = assert(ba.socket.connect("127.0.0.1", port))
    s:write("STARTTLS\\n")
    print("plain", s:read())
    print("upgrade", s:upgrade(cssl, nil, "localhost"))
    print("trusted", s:trusted(), (s:certificate().subject))
    s:write("secret")
    print("reply", s:read())
    os.exit(0)
  end)
end
print("ready")
"""


@case
def upgrade_mid_stream_remora_pair():
    port = free_port()
    rc, out = run(UPGRADE, args=[port, "pair"], timeout=30)
    check(rc == 0, "exit %s:\n%s" % (rc, out))
    check("plain\tOK\n" in out and "upgrade\ttrue" in out and "trusted\ttrue\tCN=localhost" in out, out)
    check("reply\ttls:secret" in out, out)


@case
def upgrade_mid_stream_python_ssl_client():
    port = free_port()
    with Remora(UPGRADE, args=[port], ready="ready") as r:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        raw.sendall(b"STARTTLS\n")
        check(raw.recv(100) == b"OK\n")
        ctx = ssl.create_default_context(cafile=os.path.join(TMP, "ca.crt"))
        t = ctx.wrap_socket(raw, server_hostname="localhost")
        t.sendall(b"over tls")
        check(t.recv(100) == b"tls:over tls")
        check(t.getpeercert()["subject"][0][0][1] == "localhost")
        t.close()
        check(r.alive())


def good_exchange(port):
    ctx = ssl.create_default_context(cafile=os.path.join(TMP, "ca.crt"))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                         server_hostname="localhost") as t:
        t.sendall(b"still here")
        return t.recv(100)


def wait_log(r, text, timeout=10):
    deadline = time.time() + timeout
    while text not in r.log():
        check(time.time() < deadline, "log never showed %r:\n%s" % (text, r.log()))
        time.sleep(0.05)


@case
def failing_handshakes_close_only_their_connection():
    port = free_port()
    with Remora(SERVER, args=[port, 800], ready="ready") as r:
        # a client that stalls mid-handshake: half a ClientHello, then nothing
        stall = socket.create_connection(("127.0.0.1", port))
        stall.sendall(bytes.fromhex("160301020001"))
        # garbage instead of a ClientHello
        g = socket.create_connection(("127.0.0.1", port), timeout=10)
        g.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        g.recv(100)   # an alert or the end
        g.close()
        wait_log(r, "conn ended\tsslhandshake")
        # a client that does not trust the server: it sends an alert
        ctx = ssl.create_default_context(cafile=os.path.join(TMP, "otherca.crt"))
        try:
            ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
            check(False, "the handshake should have failed")
        except ssl.SSLError:
            pass
        # It sends its alert after the server's certificate, which may be
        # while the server still sends the rest of its flight: then the
        # server meets a reset, not the alert.
        deadline = time.time() + 10
        while "conn ended\tsslalertrecv" not in r.log() and r.log().count("conn ended\tsslhandshake") < 2:
            check(time.time() < deadline, "no failure logged:\n" + r.log())
            time.sleep(0.05)
        check(good_exchange(port) == b"F:still here", "the listener stopped serving")
        wait_log(r, "conn ended\ttimeout")
        stall.settimeout(10)
        check(stall.recv(100) == b"", "the stalled connection stays open")
        check(good_exchange(port) == b"F:still here", "the listener stopped serving")
        check("tls: handshake with 127.0.0.1:" in r.log(), r.log())
        check(r.alive())


@case
def worker_thread_tls_connect_to_nothing_says_cannotconnect():
    script = PRELUDE + """
local ssl = client_ssl("ca")
ba.thread.run(function()
  print("worker", pcall(ba.socket.connect, "127.0.0.1", 1, {shark = ssl}))
  os.exit(0)
end)
"""
    rc, out = run(script, timeout=20)
    check("worker\ttrue\tnil\tcannotconnect" in out, out)


class RecordCounter:
    """A keep-alive HTTPS client over a raw socket that counts the TLS
    application-data records of each answer (ssl's memory BIOs see the bytes
    before they are decrypted)."""

    def __init__(self, port):
        ctx = ssl.create_default_context(cafile=os.path.join(TMP, "ca.crt"))
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.raw = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.push()
                self.inc.write(self.sock.recv(65536))
        self.push()

    def push(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def get(self, path):
        """(records, answer) for one GET; the answer has a Content-Length."""
        self.tls.write(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
        self.push()
        answer, records = b"", 0
        while not complete(answer):
            data = self.sock.recv(65536)
            check(data, "the server closed after %r" % answer[:200])
            self.raw += data
            while len(self.raw) >= 5 and len(self.raw) >= 5 + int.from_bytes(self.raw[3:5], "big"):
                end = 5 + int.from_bytes(self.raw[3:5], "big")
                records += self.raw[0] == 23   # application data
                self.inc.write(self.raw[:end])
                self.raw = self.raw[end:]
            try:
                while True:
                    answer += self.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
        return records, answer


def complete(answer):
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
    return len(body) >= int(length[0].split(b":")[1])


@case
def https_answers_travel_in_one_record_each():
    app = os.path.join(TMP, "app")
    os.makedirs(app, exist_ok=True)
    files = {"small.txt": b"hello", "larger.txt": b"0123456789abcdef" * 400}
    for name, data in files.items():
        with open(os.path.join(app, name), "wb") as f:
            f.write(data)
    with open(os.path.join(app, "page.lsp"), "w") as f:
        f.write('<?lsp response:write(string.rep("x", tonumber(request:data("n")))) ?>')
    port, tls = free_port(), free_port()
    args = ["--state", os.path.join(TMP, "state"), "--cert", os.path.join(TMP, "localhost.crt"),
            "--key", os.path.join(TMP, "localhost.key"), "-l", "127.0.0.1:%d" % port, app,
            "--tls-listen", "127.0.0.1:%d" % tls]
    with Remora(args=args, ready="https://") as r:
        c = RecordCounter(tls)
        for _ in range(2):   # the second round on a parked (idle) session
            for name, data in files.items():
                records, answer = c.get("/" + name)
                check(answer.endswith(b"\r\n\r\n" + data), "%s: %r" % (name, answer[:300]))
                check(records == 1, "%s took %d records" % (name, records))
            for n in (5, 6400):
                records, answer = c.get("/page.lsp?n=%d" % n)
                check(answer.endswith(b"\r\n\r\n" + b"x" * n), "page %d: %r" % (n, answer[:300]))
                check(records == 1, "a page of %d bytes took %d records" % (n, records))
        check(r.alive())


try:
    done()
finally:
    shutil.rmtree(TMP, ignore_errors=True)
