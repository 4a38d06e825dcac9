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


def histogram_quantile(bounds: Sequence[float], cumulative: Sequence[int], q: float) -> float:
    """Upper bound of the bucket holding the `q`-th percentile (0 < q <= 100).

    `cumulative[i]` counts samples <= `bounds[i]`; one more final count is the total
    (the +Inf bucket). Returns `math.inf` when the percentile lies past the last bound,
    and 0.0 for no samples. Exact for threshold questions ("is p99 <= 100 ms?")."""
    if not 0.0 < q <= 100.0:
        raise ValueError(f"percentile {q} outside (0, 100]")
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return 0.0
    rank = math.ceil(q / 100.0 * total)
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            return float(bound)
    return math.inf
