#!/bin/sh
# Installs what the browser tests need: playwright-core from package-lock.json
# (node_modules is not committed). Chromium itself is the Debian package
# (mk/deps.sh). Exits non-zero, saying why, when either is missing.
cd "$(dirname "$0")" || exit 1
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: /usr/bin/chromium is missing (apt-get install chromium, see mk/deps.sh)" >&2
  exit 1
fi
[ -f node_modules/playwright-core/package.json ] && exit 0
command -v npm >/dev/null || { echo "setup: npm is missing" >&2; exit 1; }
npm ci --no-audit --no-fund --silent || { echo "setup: npm ci failed (offline?)" >&2; exit 1; }
