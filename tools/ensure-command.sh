#!/usr/bin/env bash
# ensure-command.sh COMMAND PACKAGE [optional]
# Make sure COMMAND exists (distributions put some in /usr/sbin, which a normal user's
# PATH may not include). As root on Debian/Ubuntu, install PACKAGE with apt-get;
# otherwise say how and fail, or only warn when the command is `optional`.
set -euo pipefail
command_name=$1 package=$2 optional=${3:-}
if command -v "$command_name" >/dev/null 2>&1 || [ -x "/usr/sbin/$command_name" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "$command_name is missing: installing $package with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
  exit 0
fi
echo "$command_name is not installed. Install it (Debian/Ubuntu: sudo apt-get install $package)." >&2
if [ "$optional" = optional ]; then
  echo "Going on without it: the tests that need it are skipped." >&2
  exit 0
fi
exit 1
