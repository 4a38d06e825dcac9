import asyncio
import time

import pytest

from counter_service.loop_lag import LoopLag
from counter_service.stats import percentile


def test_nearest_rank_percentiles() -> None:
    samples = [15, 20, 35, 40, 50]
    assert percentile(samples, 30) == 20
    assert percentile(samples, 40) == 20
    assert percentile(samples, 50) == 35
    assert percentile(samples, 100) == 50
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 1) == 7
    assert percentile([], 50) == 0.0


@pytest.mark.parametrize("p", [0, -1, 101])
def test_out_of_range_percentiles_are_refused(p: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        percentile([1.0], p)


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
