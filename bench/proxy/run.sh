#!/bin/sh
# Proxy throughput: one multi-GiB TCP stream through remora's proxy (relayed
# in Lua, ba.socket.pipe with splice, ba.socket.pipe with a buffer), nginx's
# stream proxy and HAProxy, and plain loopback as the ceiling. The proxy is
# pinned to CPU 0, the load (bench/proxy/blast.c: sender and sink) to CPU 1.
# Each figure is the median of RUNS runs. Prints a markdown table.
#   sh bench/proxy/run.sh [BUILD]     (make bench-proxy)
#   BYTES (default 4 GiB), RUNS (3), QUEUE (bytes in flight per direction, 256 KiB)
set -e
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
case $BUILD in /*) REMORA=$BUILD/remora ;; *) REMORA=$ROOT/$BUILD/remora ;; esac
BYTES=${BYTES:-4294967296}; RUNS=${RUNS:-3}; QUEUE=${QUEUE:-262144}
SINK=19601; PORT=19602
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
SERVER=

# The peers this compares against (Debian packages), installed when missing.
for p in nginx libnginx-mod-stream haproxy; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench-proxy needs:$missing (apt-get install as root)"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
cc -O2 -o "$WORK/blast" "$ROOT/bench/proxy/blast.c" -lpthread

cat >"$WORK/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
error_log stderr error;
pid $WORK/nginx.pid;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:$PORT; proxy_pass 127.0.0.1:$SINK; proxy_buffer_size $QUEUE; } }
CONF
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  tune.bufsize $QUEUE
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen proxy
  bind 127.0.0.1:$PORT
  server upstream 127.0.0.1:$SINK
CONF

start() { # command...: the proxy on CPU 0, once its port answers
  taskset -c 0 "$@" >"$WORK/server.log" 2>&1 &
  SERVER=$!
  python3 -c "import socket, time
for i in range(100):
    try: socket.create_connection(('127.0.0.1', $PORT)).close(); break
    except OSError: time.sleep(0.05)"
}
stop() { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; SERVER=; }

measure() { # target port: median GB/s of RUNS runs
  for i in $(seq "$RUNS"); do
    taskset -c 1 "$WORK/blast" $SINK "$1" "$BYTES" | sed 's/.*: \([0-9.]*\) GB\/s/\1/'
  done | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

row() { # name GB/s
  printf '| %s | %s | %.2f |\n' "$1" "$2" "$(echo "$2 $CEILING" | awk '{print $1/$2}')"
}

CEILING=$(measure $SINK)
echo "Proxy throughput: $((BYTES >> 20)) MiB per run, one connection, median of $RUNS; queue/buffer $((QUEUE >> 10)) KiB per direction"
echo
echo "| path | GB/s | ratio to loopback |"
echo "|---|---|---|"
row "loopback, no proxy (ceiling)" "$CEILING"
for mode in lua pipe buffer; do
  start "$REMORA" "$ROOT/examples/proxy/proxy.lua" $PORT 127.0.0.1 $SINK mode=$mode queuelen=$QUEUE
  row "remora proxy.lua mode=$mode" "$(measure $PORT)"
  stop
done
start nginx -c "$WORK/nginx.conf" -p "$WORK"
row "nginx $(nginx -v 2>&1 | sed 's/.*\///') stream" "$(measure $PORT)"
stop
start haproxy -db -f "$WORK/haproxy.cfg"
row "HAProxy $(haproxy -v | head -1 | awk '{print $3}')" "$(measure $PORT)"
stop
