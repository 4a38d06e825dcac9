#!/usr/bin/env bash
# `make up` runs a local nginx in front of the replicas; make sure the binary exists.
# Distributions put it in /usr/sbin, which a normal user's PATH may not include.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "nginx is missing: installing it with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  exit 0
fi
echo "nginx is not installed. Install it (Debian/Ubuntu: sudo apt-get install nginx," >&2
echo "macOS: brew install nginx) and run the command again." >&2
exit 1
