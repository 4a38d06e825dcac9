#!/usr/bin/env bash
# The test suite starts its own redis-server processes; make sure the binary exists.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing: installing it with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  exit 0
fi
echo "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server," >&2
echo "macOS: brew install redis) and run the command again." >&2
exit 1
