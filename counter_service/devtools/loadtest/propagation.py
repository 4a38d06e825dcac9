"""Propagation latency: from a click's acknowledgement until each other session shows a
value at least as high, grouped by same/other process and by second of the run."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from counter_service.devtools.loadtest.acks import Ack
from counter_service.devtools.loadtest.history import History

SAME = "same_process"
OTHER = "other_process"
UNKNOWN = "unknown"
MAX_PAIRS = 1_000_000


@dataclass
class Propagation:
    """Latency samples (seconds) by group and by second since clicking began."""

    groups: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    seconds: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    seen_before_ack: int = 0
    never_seen: int = 0
    acks_used: int = 0


def spread(acks: list[Ack], limit: int) -> list[Ack]:
    """At most `limit` acknowledgements, evenly spaced over the run, in order."""
    if len(acks) <= limit:
        return acks
    step = len(acks) / limit
    return [acks[int(i * step)] for i in range(limit)]


def measure(
    acks: list[Ack], observers: list[History], started_at: float, split_known: bool
) -> Propagation:
    """Every (acknowledged click, other session) pair, up to MAX_PAIRS pairs in all."""
    result = Propagation()
    process = {o.index: o.process for o in observers}
    chosen = spread(sorted(acks, key=lambda a: a.acked_at), MAX_PAIRS // max(1, len(observers)))
    for ack in chosen:
        second = int(ack.acked_at - started_at)
        for observer in observers:
            if observer.index != ack.clicker:
                group = _group(split_known, process.get(ack.clicker), observer.process)
                _add(result, ack, observer, group, second)
    result.acks_used = len(chosen)
    return result


def _group(split_known: bool, clicker: str | None, observer: str) -> str:
    if not split_known or clicker is None:
        return UNKNOWN
    return SAME if clicker == observer else OTHER


def _add(result: Propagation, ack: Ack, observer: History, group: str, second: int) -> None:
    seen = observer.first_reaching(ack.value)
    if seen is None:
        result.never_seen += 1
        return
    latency = seen[0] - ack.acked_at
    if latency < 0:
        result.seen_before_ack += 1
        latency = 0.0
    result.groups[group].append(latency)
    result.seconds[second].append(latency)
