#!/bin/sh
# The LSP hello's cost per request in figures that other jobs on the machine
# do not move: user-space instructions (callgrind) and system calls (perf's
# syscall tracepoints, which do not slow the server the way strace does).
# Wall-clock and CPU time are left to bench.py.
#   sh bench/http/profile.sh [BUILD] [wrk options...]
#   e.g. sh bench/http/profile.sh build -H "Connection: close"
# Instructions: callgrind's counters zeroed after a 2 s warm-up, then
# `wrk -t1 -c8 -d6s`, divided by wrk's request count. System calls: `wrk -t1
# -c32 -d3s` under `perf stat -e 'syscalls:sys_enter_*'`, per sendmsg (one
# per answer): perf attaches its tracepoints while the run has begun, so
# wrk's count would undercount its window.
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-build}
[ $# -gt 0 ] && shift
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/app" "$TMP/state"
printf '<?lsp response:write("hello") ?>' > "$TMP/app/hello.lsp"

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
requests() { grep -o '[0-9]* requests in' "$1" | cut -d' ' -f1; }

p=$(port)
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg" "$BUILD/remora" --state "$TMP/state" \
  -l 127.0.0.1:$p "$TMP/app" >"$TMP/cg.log" 2>&1 &
pid=$!
sleep 3
wrk -t1 -c8 -d2s "$@" http://127.0.0.1:$p/hello.lsp >/dev/null
callgrind_control -z $pid >/dev/null 2>&1
wrk -t1 -c8 -d6s "$@" http://127.0.0.1:$p/hello.lsp >"$TMP/wrk"
callgrind_control -d $pid >/dev/null 2>&1
kill $pid
wait $pid 2>/dev/null || true
if grep -q Non-2xx "$TMP/wrk"; then echo "answers other than 200: see $TMP/cg.log" >&2; exit 1; fi
total=$(callgrind_annotate "$TMP/cg.1" 2>/dev/null | grep 'PROGRAM TOTALS' | tr -d ',' | awk '{print $1}')
echo "instructions per request: $((total / $(requests "$TMP/wrk"))) ($(requests "$TMP/wrk") requests)"

p=$(port)
"$BUILD/remora" --state "$TMP/state" -l 127.0.0.1:$p "$TMP/app" >/dev/null 2>&1 &
pid=$!
sleep 0.5
wrk -t1 -c32 -d1s "$@" http://127.0.0.1:$p/hello.lsp >/dev/null
perf stat -e 'syscalls:sys_enter_*' -p $pid -- sleep 4 2>"$TMP/perf" &
sleep 0.5
wrk -t1 -c32 -d3s "$@" http://127.0.0.1:$p/hello.lsp >/dev/null
wait $!
kill $pid
awk '$1 ~ /^[0-9,]+$/ { gsub(",", "", $1); n[$2] = $1 }
     END { per = n["syscalls:sys_enter_sendmsg"]; if (!per) { print "no answers seen"; exit 1 }
           for (k in n) if (n[k] / per >= 0.01) { t += n[k] / per; printf "  %-24s %.2f\n", substr(k, 20), n[k] / per }
           printf "system calls per request: %.2f\n", t }' "$TMP/perf"
