#!/bin/sh
# The test runner: every C unit test binary in BUILD/tests and every integration
# script in tests/integration, on both dispatcher backends. Each test prints one
# line per case, "ok NAME" or "FAIL NAME: why"; a file that dies without saying
# so counts as one failure. The last line is "N passed, N failed".
#   REMORA_TESTS="word..."  run only the files whose path contains one of the words
#   REMORA_BACKENDS     backends to run (default "epoll poll")
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export REMORA_BIN="$ROOT/$BUILD/remora" REMORA_BUILD="$ROOT/$BUILD" REMORA_ROOT="$ROOT"
export PYTHONDONTWRITEBYTECODE=1
OUT=$(mktemp -d)
passed=0; failed=0

wanted() { # path: does it contain one of $REMORA_TESTS (all if unset)?
  [ -z "${REMORA_TESTS:-}" ] && return 0
  for w in $REMORA_TESTS; do
    case "$1" in *"$w"*) return 0 ;; esac
  done
  return 1
}

run_one() { # label command...
  label=$1; shift
  log="$OUT/$(echo "$label" | tr '/ ' '__').log"
  timeout -k 5 ${REMORA_TEST_TIMEOUT:-300} "$@" >"$log" 2>&1
  rc=$?
  p=$(grep -c '^ok ' "$log"); f=$(grep -c '^FAIL ' "$log")
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    f=1; echo "FAIL $label: exited with status $rc" >>"$log"
  fi
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$f" != 0 ]; then
    echo "== $label: $p passed, $f failed"; grep -v '^ok ' "$log" | tail -40
  else
    echo "== $label: $p passed"
  fi
}

for backend in ${REMORA_BACKENDS:-epoll poll}; do
  export REMORA_BACKEND=$backend
  for t in "$ROOT/$BUILD"/tests/test_*; do
    [ -x "$t" ] && wanted "$t" || continue
    run_one "$backend unit/$(basename "$t")" "$t"
  done
  for t in "$ROOT"/tests/integration/test_*.py; do
    [ -f "$t" ] && wanted "$t" || continue
    run_one "$backend integration/$(basename "$t")" /usr/bin/python3 "$t"
  done
done
rm -rf "$OUT"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
