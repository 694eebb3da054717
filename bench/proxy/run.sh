#!/bin/sh
# make bench-proxy: bench/proxy/bench.py (proxy throughput, remora against
# nginx stream, HAProxy and an nginx Lua proxy) with the remora of BUILD.
# Installs the peers (Debian packages) when missing.
#   sh bench/proxy/run.sh [BUILD]     BENCH_PROXY_BYTES, BENCH_PROXY_QUEUE, BENCH_RUNS
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
for p in nginx libnginx-mod-stream libnginx-mod-http-lua haproxy; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench-proxy needs:$missing (apt-get install as root)"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
REMORA_BIN=$BUILD/remora exec /usr/bin/python3 "$ROOT/bench/proxy/bench.py"
