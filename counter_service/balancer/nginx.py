"""The nginx master process of the balancer: its files in one directory, started in its
own process group (so that stopping it leaves no worker, even when the master died), and
reloaded with SIGHUP once a changed configuration has passed `nginx -t`."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from counter_service.balancer.config import (
    LISTEN_FILE,
    REPLICAS_FILE,
    SITE_DIR,
    MainOptions,
    listen_conf,
    main_conf,
)
from counter_service.balancer.foreground import exit_status

# Distributions install nginx where a normal user's PATH does not look.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
# The levels at which nginx says why it stopped or refused to start; [error] and below are
# about single requests.
SEVERE = re.compile(r"\[(?:emerg|alert|crit)\]")


class NginxError(RuntimeError):
    """nginx did not start, exited, or refused a configuration; the message says why."""


def find_nginx() -> str | None:
    """The nginx binary on PATH or in the usual sbin directories, or None."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS]))


class Nginx:
    """One nginx master listening on `host:port`, its files in `directory`."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        routing: Path,
        listen: tuple[str, int],
        options: MainOptions | None = None,
        log: Path | None = None,
    ) -> None:
        self.binary, self.directory, self.routing = binary, directory, routing
        self.host, self.port = listen
        self.options = options or MainOptions()
        self.log = log
        """nginx's stderr goes here (None: the balancer's own stderr)."""
        self.config = directory / "nginx.conf"
        self.replicas_file = directory / SITE_DIR / REPLICAS_FILE
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write(self, replicas: str) -> None:
        """Lay out the main file, the listen file, `replicas` and the temp directory."""
        (self.directory / SITE_DIR).mkdir(parents=True, exist_ok=True)
        (self.directory / "temp").mkdir(exist_ok=True)  # nginx creates only the last level
        (self.directory / SITE_DIR / LISTEN_FILE).write_text(listen_conf(self.host, self.port))
        self.replicas_file.write_text(replicas)
        self.config.write_text(main_conf(self.directory, self.routing, self.options))

    def test(self) -> None:
        """`nginx -t` of the files as they are; NginxError with nginx's words if it fails."""
        done = subprocess.run(
            [*self._argv(), "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise NginxError(f"nginx refused the configuration: {done.stderr.strip()}")

    def start(self, replicas: str) -> None:
        """Write the files, start the master, and wait until it accepts connections."""
        self.write(replicas)
        with self._stderr() as stderr:
            self.proc = subprocess.Popen(
                [*self._argv(), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own group: killpg reaches orphaned workers
            )
        self._wait_until(self._accepting, f"listening on {self.host}:{self.port}")

    def reload(self, replicas: str) -> None:
        """Swap in `replicas` and return once the new workers have taken over."""
        if self.proc is None:
            raise NginxError("nginx is not running")
        previous = self.replicas_file.read_text()
        self.replicas_file.write_text(replicas)
        try:
            self.test()
        except NginxError:
            self.replicas_file.write_text(previous)  # what the running nginx has
            raise
        before = self.workers()
        self.proc.send_signal(signal.SIGHUP)
        self._wait_until(lambda: self._reloaded(before), "reloaded")

    def stop(self) -> None:
        """SIGTERM to the master, then SIGKILL to whatever is left of its group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        group, self.proc = self.proc.pid, None
        self._wait_for(lambda: not _group_alive(group), STOP_TIMEOUT_S)

    def workers(self) -> set[int]:
        """PIDs of this master's worker processes (its children in /proc)."""
        return {pid for pid in _pids() if _stat(pid)[1:2] == [str(self.pid)]}

    def log_errors(self, lines: int = 3) -> list[str]:
        """The last [emerg], [alert] and [crit] lines of nginx's log file (none when nginx
        writes to our stderr, where the user reads them anyway)."""
        if self.log is None or not self.log.exists():
            return []
        text = self.log.read_text(errors="replace")
        return [line.strip() for line in text.splitlines() if SEVERE.search(line)][-lines:]

    def error(self, what: str) -> NginxError:
        """An NginxError saying `what`, on one line, with the errors of nginx's log when
        it has a log file of its own."""
        if self.log is None:
            return NginxError(what)
        errors = self.log_errors()
        found = "; ".join(errors) if errors else "no [emerg], [alert] or [crit] line in its log"
        return NginxError(f"{what}: {found}")

    def exit_status(self) -> str:
        """How the master ended, in words ("running" while it runs)."""
        code = None if self.proc is None else self.proc.poll()
        return "running" if code is None else exit_status(code)

    def _argv(self) -> list[str]:
        return [self.binary, "-p", str(self.directory), "-c", str(self.config), "-e", "stderr"]

    def _stderr(self) -> contextlib.AbstractContextManager[IO[bytes] | None]:
        if self.log is None:
            return contextlib.nullcontext()
        return open(self.log, "ab")  # closed by the caller; the child keeps its copy

    def _accepting(self) -> bool:
        try:
            with socket.create_connection((WILDCARDS.get(self.host, self.host), self.port), 0.5):
                return True
        except OSError:
            return False

    def _reloaded(self, before: set[int]) -> bool:
        """New workers run and every old one has stopped accepting (its title says so)."""
        now = self.workers()
        return bool(now - before) and all("shutting down" in _title(pid) for pid in now & before)

    def _wait_until(self, done: Callable[[], bool], what: str) -> None:
        def ended() -> bool:
            if not self.running:
                raise self.error(f"nginx exited ({self.exit_status()}) while {what}")
            return done()

        if not self._wait_for(ended, START_TIMEOUT_S):
            raise self.error(f"nginx not {what} after {START_TIMEOUT_S:.0f}s")

    @staticmethod
    def _wait_for(done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # polling a process's state: there is nothing to wait on
        return True


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command: state, parent, process group, ... ([] if gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _group_alive(group: int) -> bool:
    """Whether a process of `group` runs (a zombie waiting for its reaper does not)."""
    return any(s[2:3] == [str(group)] and s[0] != "Z" for s in map(_stat, _pids()))


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
