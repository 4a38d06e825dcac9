"""nginx for the local stack: the routing file that compose uses too
(deploy/nginx/counter-service.conf), the files it includes, written into a temporary
directory, and the nginx master process, reconfigured by its PID when readiness changes."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from counter_service.devtools.fleet import HOST, _Process

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
SHARED_CONF = DEPLOY_DIR / "nginx" / "counter-service.conf"
SITE_DIR = "counter-service"
# Passive health of every replica; deploy/nginx/compose/servers.conf has the same.
SERVER_PARAMS = "max_fails=1 fail_timeout=10s"
# Distributions install nginx where a normal user's PATH does not look.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def find_nginx() -> str | None:
    """The nginx binary on PATH or in the usual sbin directories, or None."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS]))


def in_rotation(ready: Sequence[bool]) -> list[bool]:
    """Which replicas get new sessions: the ready ones, or all of them when none is ready,
    so that pages still render and show that the store is unreachable."""
    return list(ready) if any(ready) else [True] * len(ready)


def servers_conf(ports: Sequence[int], ready: Sequence[bool]) -> str:
    """The upstream's `server` lines for replicas on `ports`; `down` ones get no requests."""
    lines = ["# Written by counter-service up; `down`: not ready, no new sessions."]
    for port, routed in zip(ports, in_rotation(ready), strict=True):
        lines.append(f"server {HOST}:{port} {SERVER_PARAMS}{'' if routed else ' down'};")
    return "\n".join(lines) + "\n"


def listen_conf(port: int) -> str:
    """The `listen` directive: loopback only."""
    return f"listen {HOST}:{port};\n"


def main_conf(directory: Path, shared: Path = SHARED_CONF) -> str:
    """Process-level settings with every path inside `directory`, then the shared routing."""
    temp = "".join(f'    {name}_temp_path "{directory}/temp/{name}";\n' for name in TEMP_PATHS)
    return (
        "# Written by counter-service up: what the nginx image's main file does in compose.\n"
        f"{_user_line()}worker_processes 1;\n"
        f'pid "{directory}/nginx.pid";\n'
        "error_log stderr notice;\n"
        "events {\n    worker_connections 4096;\n}\n"
        "http {\n"
        f'    access_log "{directory}/access.log";\n'
        f"{temp}"
        f'    include "{shared}";\n'
        "}\n"
    )


def _user_line() -> str:
    """As root, nginx would run its workers as `nobody`, who cannot use our 0700 temporary
    directory: keep them as the current user, like the rest of the stack."""
    if os.geteuid() != 0:
        return ""
    user, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def write_config(directory: Path, port: int, servers: str, shared: Path = SHARED_CONF) -> Path:
    """Write nginx.conf and its site files into `directory`; return the nginx.conf path."""
    site = directory / SITE_DIR
    site.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)  # nginx creates only the last level
    (site / "listen.conf").write_text(listen_conf(port))
    (site / "servers.conf").write_text(servers)
    config = directory / "nginx.conf"
    config.write_text(main_conf(directory, shared))
    return config


class NginxProcess(_Process):
    """An nginx master on 127.0.0.1:`port` in front of replicas on `ports`."""

    name = "nginx"

    def __init__(self, log_dir: Path, binary: str, port: int, ports: Sequence[int]) -> None:
        super().__init__(log_dir)
        self.binary = binary
        self.port = port
        self.ports = list(ports)
        self.directory = log_dir / "nginx"
        self.config = self.directory / "nginx.conf"
        self.servers = self.directory / SITE_DIR / "servers.conf"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Write the configuration, start the master, and wait until it accepts connections."""
        write_config(self.directory, self.port, servers_conf(self.ports, [True] * len(self.ports)))
        argv = [self.binary, "-p", str(self.directory), "-c", str(self.config), "-e", "stderr"]
        self._spawn([*argv, "-g", "daemon off;"])
        self._wait_until(self._accepting, f"starting to listen on {HOST}:{self.port}")
        return self

    def route(self, ready: Sequence[bool]) -> bool:
        """Send new sessions only to the replicas in rotation for `ready`; True if that
        changed, once the reloaded workers have taken over from the old ones."""
        text = servers_conf(self.ports, ready)
        if self.proc is None or self.servers.read_text() == text:
            return False
        before = self._workers()
        self.servers.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        self._wait_until(lambda: self._reloaded(before), "reloaded")
        return True

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _workers(self) -> set[int]:
        """PIDs of this master's worker processes (children in /proc)."""
        return {pid for pid in _pids() if _parent(pid) == self.pid}

    def _reloaded(self, before: set[int]) -> bool:
        """New workers run and every old one has stopped accepting (its title says so)."""
        now = self._workers()
        old = now & before
        return bool(now - before) and all("shutting down" in _title(pid) for pid in old)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
