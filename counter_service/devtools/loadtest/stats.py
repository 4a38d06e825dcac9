"""Latency summaries (nearest-rank percentiles) and per-second buckets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from counter_service.stats import percentile

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class LatencyStats:
    """Count, p50/p90/p99 and max of a set of latency samples, in milliseconds."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def summarize(seconds: Iterable[float]) -> LatencyStats:
    """Summarize latency samples given in seconds (no samples: every figure None)."""
    ordered = sorted(seconds)
    if not ordered:
        return LatencyStats(0, None, None, None, None)
    p50, p90, p99 = (_ms(percentile(ordered, p)) for p in PERCENTILES)
    return LatencyStats(len(ordered), p50, p90, p99, _ms(ordered[-1]))


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass(frozen=True)
class Bucket:
    """The latency summary of the samples whose click was acknowledged in one second."""

    second: int
    stats: LatencyStats


def per_second(buckets: dict[int, list[float]]) -> list[Bucket]:
    """Summaries of per-second sample lists (key: whole seconds since clicking began)."""
    return [Bucket(second, summarize(buckets[second])) for second in sorted(buckets)]
