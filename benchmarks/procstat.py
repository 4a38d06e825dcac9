"""CPU time of processes from `/proc/PID/stat` (utime + stime, all threads)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int]:
    """`(utime, stime)` in clock ticks from the text of `/proc/PID/stat`.

    The command name (field 2) is in parentheses and may hold spaces or parentheses,
    so fields are counted from the last ')': utime and stime are fields 14 and 15."""
    end = text.rindex(")")
    fields = text[end + 2 :].split()
    return int(fields[11]), int(fields[12])


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """User + system CPU seconds used so far by process `pid` (every thread)."""
    utime, stime = parse_stat((proc / str(pid) / "stat").read_text())
    return (utime + stime) / CLOCK_TICKS


def snapshot(pids: Iterable[int], proc: Path = Path("/proc")) -> dict[int, float]:
    """CPU seconds of each process; a process that is gone reads as absent."""
    taken: dict[int, float] = {}
    for pid in pids:
        try:
            taken[pid] = cpu_seconds(pid, proc)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return taken


def used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds used between two snapshots, summed over processes present in both."""
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def rss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """Resident set size of process `pid` in bytes (`VmRSS` of /proc/PID/status)."""
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")
