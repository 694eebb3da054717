#!/bin/sh
# Starts the demo site (examples/www) on 127.0.0.1:8080, or on $REMORA_DEMO_ADDR.
BUILD=${1:-build}
ADDR=${REMORA_DEMO_ADDR:-127.0.0.1:8080}
cd "$(dirname "$0")/.." || exit 1
echo "remora demo: open http://$ADDR/ (Ctrl-C stops it)"
exec "$BUILD/remora" --dev -l "$ADDR" examples/www
