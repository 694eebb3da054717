#!/bin/sh
# Runs COMMAND with a display to share.
#
#   sh examples/screenshare/.xdemo.sh COMMAND [ARGS...]
#
# When DISPLAY names a display that answers, COMMAND runs on it unchanged
# (a real desktop is shared). Otherwise a virtual display (Xvfb, SIZE from
# XDEMO_SIZE, default 1280x800x24) is started with a clock and a terminal
# running top, so a new user sees something live at once; it stops when
# COMMAND ends. The file starts with a dot so the app never serves it.
set -e
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

if [ -n "$DISPLAY" ] && xdpyinfo >/dev/null 2>&1; then
  echo "xdemo: sharing the display $DISPLAY" >&2
  exec "$@"
fi

# The first display number whose lock file and socket are free.
n=${XDEMO_DISPLAY:-42}
while [ -e /tmp/.X$n-lock ] || [ -e /tmp/.X11-unix/X$n ]; do n=$((n + 1)); done
export DISPLAY=:$n

Xvfb "$DISPLAY" -screen 0 "${XDEMO_SIZE:-1280x800x24}" -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
pids=$xvfb
stop() { kill $pids 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM

tries=0
until xdpyinfo >/dev/null 2>&1; do
  tries=$((tries + 1))
  kill -0 $xvfb 2>/dev/null && [ $tries -lt 100 ] || { echo "xdemo: Xvfb did not start on $DISPLAY" >&2; exit 1; }
  sleep 0.05
done
echo "xdemo: virtual display $DISPLAY (${XDEMO_SIZE:-1280x800x24}) with a clock and a terminal" >&2

xterm -geometry 100x30+20+20 -fa Monospace -fs 11 -title demo -e top -d 1 >/dev/null 2>&1 &
pids="$pids $!"
xclock -update 1 -geometry 240x240+880+20 >/dev/null 2>&1 &
pids="$pids $!"

"$@"
