#!/bin/sh
# Starts the demo: the echo server example until the HTTP layer serves examples/www.
BUILD=${1:-build}
echo "remora demo: echo server on 127.0.0.1:9090 (try: nc 127.0.0.1 9090)"
exec "$BUILD/remora" examples/echo.lua
