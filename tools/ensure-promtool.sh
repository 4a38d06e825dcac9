#!/usr/bin/env bash
# ensure-promtool.sh BIN_DIR
# Put Prometheus's promtool (it checks the Grafana dashboard's queries) into BIN_DIR,
# taken out of Debian's prometheus package without installing the package: installing
# it would also start a Prometheus server. Optional: without apt, the test is skipped.
set -euo pipefail
bin_dir=$(cd "$1" && pwd)
if command -v promtool >/dev/null 2>&1 || [ -x "$bin_dir/promtool" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "promtool is not installed: the dashboard's query check is skipped." >&2
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] && apt-get update -qq
  apt-get download prometheus >/dev/null 2>&1 || {
    echo "could not download Debian's prometheus package: the dashboard's query check is skipped." >&2
    exit 0
  }
fi
dpkg-deb -x prometheus_*.deb extracted
install -m 0755 extracted/usr/bin/promtool "$bin_dir/promtool"
echo "promtool installed into $bin_dir" >&2
