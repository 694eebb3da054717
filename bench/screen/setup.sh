#!/bin/sh
# Installs what the screen benchmark needs besides make deps: the peer
# (x11vnc, noVNC with websockify) and numpy for SSIM. As root it runs
# apt-get; otherwise it prints the command.
PKGS="x11vnc novnc websockify python3-numpy x11-apps xterm xdotool xvfb"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "bench/screen: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "bench/screen: missing packages; run as root: apt-get install -y$missing" >&2
  exit 1
fi
