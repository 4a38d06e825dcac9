"""A running `counter-service up` as a subprocess, for the tests that drive the whole
stack (tests/e2e/test_stack.py, tests/browser/)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

COMMAND = [sys.executable, "-m", "counter_service", "up"]
STEP = 30.0  # correctness deadline per step, not speed: only reached when something is broken
REPLICA_LINE = re.compile(r"replica (\d+) pid=(\d+) url=(\S+) worker=(\S+)")
PID_LINE = re.compile(r"(?:redis|replica \d+|nginx) pid=(\d+)")


@dataclass(frozen=True)
class Replica:
    number: int
    pid: int
    worker: str


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
    """A running `counter-service up` and every line it printed (read by a thread)."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
        return [Replica(int(m[1]), int(m[2]), m[4]) for m in matches if m]

    def started_pids(self) -> list[int]:
        """Every PID `up` printed, and nginx's workers."""
        pids = [int(m[1]) for m in map(PID_LINE.match, self.lines) if m]
        nginx = int(self.wait_for(r"nginx pid=(\d+)")[1])
        return pids + children_of(nginx)

    def stop(self) -> int:
        """SIGTERM, and the exit status; kills what is left if `up` does not stop."""
        pids = self.started_pids()
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
