#!/bin/sh
# Installs the Debian packages remora needs to build and test, when any is missing.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -e
PKGS="build-essential pkg-config liblua5.4-dev lua5.4 libmbedtls-dev zlib1g-dev lua-cjson
libjpeg62-turbo-dev libx11-dev libxext-dev libxdamage-dev libxtst-dev
curl wrk openssl python3 python3-websockets chromium xvfb x11-apps xterm xdotool clang libclang-rt-14-dev"
[ "$1" = "--list" ] && { echo $PKGS; exit 0; }
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# Node.js may come from another packaging (with npm inside it); Debian's npm
# package would conflict with that, so only the commands are checked.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "deps: missing packages; run as root:"
  echo "  apt-get install -y$missing"
  exit 1
fi
