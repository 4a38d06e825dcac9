"""Small statistics shared by metrics, the load test and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `samples`; 0.0 if empty.

    Nearest rank returns a value that was actually observed, so p100 is the maximum."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p!r} must be in (0, 100]")
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return float(ordered[math.ceil(p / 100 * len(ordered)) - 1])
