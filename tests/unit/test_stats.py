import asyncio
import math
import random
import time

import pytest

from counter_service.loop_lag import LoopLag
from counter_service.stats import histogram_quantile, percentile


def naive_percentile(samples: list[float], p: float) -> float:
    """The definition itself: the smallest sample with at least p% of samples <= it."""
    return min(x for x in samples if sum(1 for y in samples if y <= x) >= p / 100 * len(samples))


@pytest.mark.parametrize(
    ("p", "expected"), [(0, 15), (5, 15), (30, 20), (40, 20), (50, 35), (90, 50), (100, 50)]
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert percentile([15, 20, 35, 40, 50], p) == expected


def test_percentile_matches_its_definition_on_random_samples() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 10, 99, 100, 101, 1000):
        samples = [round(rng.expovariate(1.0), 2) for _ in range(size)]
        ordered = sorted(samples)
        for p in (1, 10, 50, 90, 99, 99.9, 100):
            assert percentile(ordered, p) == naive_percentile(samples, p), (size, p)


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert [percentile([7.5], p) for p in (0, 50, 99, 100)] == [7.5] * 4


@pytest.mark.parametrize("p", [-1, 100.5, math.nan])
def test_percentile_rejects_p_outside_0_100(p: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1, 2, 3], p)


def test_percentile_of_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_loop_lag_summary_is_in_milliseconds_over_a_bounded_window() -> None:
    lag = LoopLag(window=3)
    for seconds in (0.5, 0.001, 0.002, 0.004, -0.001):
        lag.record(seconds)
    assert lag.summary_ms() == {"p50": 2.0, "p99": 4.0, "max": 4.0, "samples": 3}


async def test_a_blocked_loop_shows_up_as_lag() -> None:
    lag = LoopLag(interval=0.01)
    await lag.start()
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.2)  # noqa: ASYNC251  # block the loop on purpose
        await asyncio.sleep(0.05)
    finally:
        await lag.stop()
    assert lag.summary_ms()["max"] >= 150


def test_the_lag_histogram_is_cumulative_and_answers_threshold_questions() -> None:
    lag = LoopLag()
    for ms in (0.5, 3, 3, 80, 100, 101, 20_000):
        lag.record(ms / 1000)
    histogram = lag.histogram()
    bounds, cumulative = histogram["le_ms"], histogram["cumulative"]
    assert isinstance(bounds, list)
    assert isinstance(cumulative, list)
    assert cumulative[-1] == 7
    assert cumulative[bounds.index(5)] == 3
    assert cumulative[bounds.index(100)] == 5  # 100 ms itself is "<= 100"
    assert histogram_quantile(bounds, cumulative, 50) == 100
    assert histogram_quantile(bounds, cumulative, 80) == 250
    assert histogram_quantile(bounds, cumulative, 99) == math.inf
    assert histogram_quantile(bounds, [0] * (len(bounds) + 1), 99) == 0.0
