"""A running `counter-service up` (or `counter-service balance`) as a subprocess, for the
tests that drive the whole stack (tests/e2e/test_stack.py, test_balance.py, tests/browser/),
and headless sessions through it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from counter_service.balancer import replica_id
from counter_service.devtools.headless import HeadlessSession

COMMAND = [sys.executable, "-m", "counter_service", "up"]
BALANCE = [sys.executable, "-m", "counter_service", "balance"]
COOKIE = "cs_replica"
STEP = 30.0  # correctness deadline per step, not speed: only reached when something is broken
REPLICA_LINE = re.compile(r"replica (\d+) pid=(\d+) url=(\S+) worker=(\S+)")
PID_LINE = re.compile(r"(?:redis|replica \d+|nginx) pid=(\d+)")


@dataclass(frozen=True)
class Replica:
    number: int
    pid: int
    url: str
    worker: str

    @property
    def id(self) -> str:
        """What nginx's `cs_replica` cookie says for this replica."""
        return replica_id(urlsplit(self.url).netloc)


def alive(pid: int) -> bool:
    """Running (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


class Up:
    """A running `counter-service up` (or `balance`) and every line it printed (read by a
    thread); `popen` goes to subprocess.Popen (a user to run as, say)."""

    def __init__(self, argv: list[str], port: int, **popen: Any) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
        )
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, after: int = 0) -> re.Match[str]:
        """The first line from index `after` on that matches `pattern`."""

        def found() -> re.Match[str] | None:
            return next(filter(None, (re.match(pattern, x) for x in self.lines[after:])), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self.ended, timeout=STEP)
            match = found()
        why = "`up` ended" if self.ended else f"not within {STEP}s"
        assert match, f"no line {pattern!r} ({why}); output:\n" + "\n".join(self.lines)
        return match

    def replicas(self) -> list[Replica]:
        matches = [REPLICA_LINE.fullmatch(line) for line in self.lines]
        return [Replica(int(m[1]), int(m[2]), m[3], m[4]) for m in matches if m]

    def started_pids(self) -> list[int]:
        """Every PID `up` printed, and nginx's workers."""
        pids = [int(m[1]) for m in map(PID_LINE.match, self.lines) if m]
        return pids + self.nginx_workers()

    def nginx_pid(self) -> int:
        return int(self.wait_for(r"nginx pid=(\d+)")[1])

    def nginx_workers(self) -> list[int]:
        masters = [int(m[1]) for m in map(re.compile(r"nginx pid=(\d+)").match, self.lines) if m]
        return [pid for master in masters for pid in children_of(master)]

    def stop(self) -> int:
        """SIGTERM (unless it ended by itself), and the exit status; kills what is left
        if `up` does not stop."""
        pids = self.started_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STEP)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=STEP)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            left = [pid for pid in pids if alive(pid)]
            for pid in left:  # only when `up` failed its job: leave nothing running
                os.kill(pid, signal.SIGKILL)


async def session_on(url: str, cookies: dict[str, str] | None = None) -> HeadlessSession:
    """A session through nginx at `url`, once its page names its replica."""
    session = await HeadlessSession.connect(url, cookies=cookies, timeout=STEP)
    await session.wait_for(lambda s: s.value("replica") is not None, timeout=STEP)
    return session


async def visit(url: str, cookies: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Open a session and close it: (its replica, the cookies it ends with)."""
    async with await session_on(url, cookies) as session:
        return str(session.value("replica")), session.cookies


async def new_browsers(url: str, count: int) -> list[tuple[str, dict[str, str]]]:
    """`count` new browsers at once: where each landed, and its cookies."""
    return list(await asyncio.gather(*(visit(url) for _ in range(count))))
