"""Small statistics shared by metrics, the load test and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of already sorted values (exact: a sample).

    The smallest value such that at least p% of the samples are <= it, i.e. the
    value of rank ceil(p/100 * n) (1-based); p=0 gives the minimum."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 <= p <= 100.0 or math.isnan(p):
        raise ValueError(f"percentile {p} outside [0, 100]")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]
