#!/bin/sh
# The Lua relay's cost per MiB in figures that other jobs on the machine do
# not move: user-space instructions and last-level cache misses (valgrind,
# which simulates them), and system calls (strace -c). Wall-clock and CPU
# time are left to bench.py.
#   sh bench/proxy/profile.sh [BUILD] [proxy.lua options...]
#   default options: mode=lua queuelen=262144
# Instructions and misses are the difference of a 272 MiB and a 16 MiB
# transfer, over 256: start-up and shutdown cancel out. The last-level cache
# simulated (PROFILE_LL, default 1048576,16,64) is half of one core's L2 on
# the project's machine (2 MiB): the kernel's socket buffers take the rest,
# and valgrind sees only user space. A relay whose buffers outgrow it shows
# nearly every line of its copy as a miss (DLmw).
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
[ $# -gt 0 ] && shift
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
OPTS=${*:-mode=lua queuelen=262144}
LL=${PROFILE_LL:-1048576,16,64}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cc -O2 -o "$TMP/blast" "$ROOT/bench/proxy/blast.c" -lpthread

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# transfer TOOL BYTES: starts the proxy under TOOL, moves BYTES through it,
# stops it with SIGTERM (the tool's own process when TOOL forks one).
transfer() {
  tool=$1 bytes=$2 sink=$(port) px=$(port)
  case $tool in
  cachegrind)
    valgrind --tool=cachegrind --cache-sim=yes --LL=$LL --cachegrind-out-file="$TMP/$tool.$bytes" \
      "$BUILD/remora" "$ROOT/examples/proxy/proxy.lua" $px 127.0.0.1 $sink $OPTS >/dev/null 2>"$TMP/$tool.$bytes.log" &
    pid=$! ;;
  strace)
    strace -c -f -o "$TMP/strace" "$BUILD/remora" "$ROOT/examples/proxy/proxy.lua" $px 127.0.0.1 $sink $OPTS \
      >/dev/null 2>&1 &
    pid=$! ;;
  esac
  "$TMP/blast" $sink $px $bytes >/dev/null
  if [ $tool = strace ]; then kill -TERM $(pgrep -P $pid); else kill -TERM $pid; fi
  wait $pid || true
}

# total FILE EVENT: the event's total in a cachegrind output file.
total() {
  awk -v ev="$2" '/^events:/ { for (i = 2; i <= NF; i++) if ($i == ev) col = i }
                  /^summary:/ { print $col; exit }' "$1"
}

small=16777216 big=285212672
transfer cachegrind $small
transfer cachegrind $big
transfer strace 1073741824
echo "proxy.lua $OPTS, per MiB relayed:"
for ev in Ir DLmr DLmw; do
  a=$(total "$TMP/cachegrind.$small" $ev) b=$(total "$TMP/cachegrind.$big" $ev)
  echo "  $ev (cachegrind, LL $LL): $(( (b - a) / 256 ))"
done
awk 'NR > 2 && $4 ~ /^[0-9]+$/ && $NF != "total" && $4 / 1024 >= 0.05 {
       printf "  %s (strace -c, 1 GiB): %.2f\n", $NF, $4 / 1024 }' "$TMP/strace"
