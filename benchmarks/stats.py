"""Pure helpers: percentiles, ratios, result accounting and parsing of tool output."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_INT_RE = re.compile(r"-?\d+")
_RPS_RE = re.compile(r"^(?P<name>.+?):\s+(?P<rps>[\d.]+)\s+requests per second", re.M)
_P50_RE = re.compile(r"p50=(?P<ms>[\d.]+)\s*msec")


def parse_int(value: Any) -> int | None:
    """The first integer in `str(value)` (as the headless client reads a Text), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    match = _INT_RE.search(str(value))
    return None if match is None else int(match.group())


def percentile(values: Iterable[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) with linear interpolation between ranks; None if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def per_unit(total: float, count: int) -> float | None:
    """`total / count`, or None when nothing was counted."""
    return None if count <= 0 else total / count


def sessions_per_core(cpu_per_update_s: float | None, updates_per_s: float) -> int | None:
    """Sessions one fully used core can keep up to date when each gets `updates_per_s`
    updates a second, at a measured CPU cost of `cpu_per_update_s` per delivered update."""
    if not cpu_per_update_s or cpu_per_update_s <= 0 or updates_per_s <= 0:
        return None
    return int(1.0 / (cpu_per_update_s * updates_per_s))


def clicks_for(updates: int, sessions: int, low: int, high: int) -> int:
    """Clicks needed for about `updates` delivered updates to `sessions`, within
    `low..high` (CPU time is counted in 10 ms ticks: small sizes need more clicks)."""
    return max(low, min(high, math.ceil(updates / max(1, sessions))))


@dataclass(frozen=True)
class Broadcast:
    """One click's delivery: how many sessions showed it and when the last one did."""

    expected: int
    received: int
    last_arrival_s: float | None
    """Seconds from sending the click until the last session that showed it did."""

    @property
    def complete(self) -> bool:
        return self.received >= self.expected


def summarize_broadcasts(broadcasts: Sequence[Broadcast]) -> dict[str, Any]:
    """Median time until the last session saw a click, over clicks every session saw;
    when no click reached everyone, the median time to the last one that did arrive."""
    complete = [b.last_arrival_s for b in broadcasts if b.complete and b.last_arrival_s]
    partial = [b.last_arrival_s for b in broadcasts if b.last_arrival_s is not None]
    expected = sum(b.expected for b in broadcasts)
    received = sum(b.received for b in broadcasts)
    return {
        "clicks": len(broadcasts),
        "complete_clicks": len(complete),
        "delivered": received,
        "delivered_share": None if expected == 0 else received / expected,
        "median_last_s": median(complete) if complete else None,
        "median_last_partial_s": median(partial) if not complete and partial else None,
    }


@dataclass(frozen=True)
class Shown:
    """What one client showed at the end of a run."""

    server: int
    value: int | None
    decreases: int


def account_lost(
    initial: int, increments: int, final: int, shown: Sequence[Shown], servers: int
) -> dict[str, Any]:
    """Expected vs final counter, clients showing the final value per server process,
    and how often any client's shown value went down."""
    expected = initial + increments
    converged = [
        sum(1 for s in shown if s.server == i and s.value == final) for i in range(servers)
    ]
    per_server = [sum(1 for s in shown if s.server == i) for i in range(servers)]
    return {
        "expected": expected,
        "final": final,
        "lost": expected - final,
        "converged": converged,
        "clients_per_server": per_server,
        "decreases": sum(s.decreases for s in shown),
        "clients_with_decrease": sum(1 for s in shown if s.decreases),
    }


def parse_redis_benchmark(output: str) -> dict[str, float]:
    """`{test name: requests per second}` from `redis-benchmark -q` output; a p50 in
    milliseconds, when printed, as `{name} p50 ms`. Progress lines ending in CR are skipped."""
    results: dict[str, float] = {}
    for line in output.replace("\r", "\n").splitlines():
        match = _RPS_RE.match(line.strip())
        if match is None:
            continue
        name = match["name"].strip()
        results[name] = float(match["rps"])
        p50 = _P50_RE.search(line)
        if p50 is not None:
            results[f"{name} p50 ms"] = float(p50["ms"])
    return results


_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def summarize_tracebacks(log: str) -> tuple[int, str | None, str | None]:
    """Errors with a traceback in a log (a chain of exceptions counts once), the most
    frequent exception line (`module.SomeError: message`, the first unindented line
    after a traceback's frames), and the first traceback up to that line."""
    lines = log.splitlines()
    finals: list[int] = []
    start: int | None = None
    for index, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            start = index
        elif start is not None and line and not line[0].isspace():
            finals.append(index)
            start = None
    chained = sum(1 for line in lines if line.startswith(_CHAINED))
    count = sum(1 for line in lines if line.startswith(_TRACEBACK)) - chained
    if not finals:
        return max(0, count), None, None
    texts = [lines[i].strip() for i in finals]
    top = max(set(texts), key=lambda text: (texts.count(text), text))
    first_start = next(i for i, line in enumerate(lines) if line.startswith(_TRACEBACK))
    return max(0, count), top, "\n".join(lines[first_start : finals[0] + 1])[-2000:]
