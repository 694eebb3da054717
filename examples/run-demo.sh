#!/bin/sh
# Starts the demo: the example site (examples/www) on 127.0.0.1:8080 and the
# screen-share app (examples/screenshare) on 127.0.0.1:8081, or on
# $REMORA_DEMO_ADDR and $REMORA_SHARE_ADDR. The display shared is $DISPLAY when
# it answers, else a virtual one with a clock and a terminal on it.
BUILD=${1:-build}
ADDR=${REMORA_DEMO_ADDR:-127.0.0.1:8080}
SHARE=${REMORA_SHARE_ADDR:-127.0.0.1:8081}
cd "$(dirname "$0")/.." || exit 1
echo "remora demo: open http://$ADDR/ (Ctrl-C stops it)"
echo "screen share: the URL with its token is printed below"
exec sh examples/screenshare/.xdemo.sh "$BUILD/remora" --dev -l "$ADDR" examples/www -l "$SHARE" examples/screenshare
