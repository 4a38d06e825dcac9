import pytest

from benchmarks.stats import (
    Broadcast,
    Shown,
    account_lost,
    clicks_for,
    median,
    parse_int,
    parse_redis_benchmark,
    per_unit,
    percentile,
    sessions_per_core,
    summarize_broadcasts,
    summarize_tracebacks,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("41", 41), ("Views: 7", 7), (12, 12), ("-3", -3), ("", None), (None, None), (True, None)],
)
def test_parse_int(value: object, expected: int | None) -> None:
    assert parse_int(value) == expected


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)


def test_percentile_of_nothing_and_out_of_range() -> None:
    assert percentile([], 50) is None
    assert median([]) is None
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_median_of_odd_count() -> None:
    assert median([5.0, 1.0, 3.0]) == 3.0


def test_per_unit_and_capacity() -> None:
    assert per_unit(1.0, 4) == 0.25
    assert per_unit(1.0, 0) is None
    assert sessions_per_core(50e-6, 1.0) == 20_000
    assert sessions_per_core(50e-6, 10.0) == 2_000
    assert sessions_per_core(None, 1.0) is None
    assert sessions_per_core(0.0, 1.0) is None


@pytest.mark.parametrize(
    ("sessions", "expected"), [(100, 40), (250, 16), (1000, 10), (0, 40), (4000, 10)]
)
def test_clicks_for_is_bounded(sessions: int, expected: int) -> None:
    assert clicks_for(4000, sessions, low=10, high=40) == expected


def test_summarize_broadcasts_uses_complete_clicks_only() -> None:
    summary = summarize_broadcasts(
        [
            Broadcast(expected=4, received=4, last_arrival_s=0.010),
            Broadcast(expected=4, received=3, last_arrival_s=0.500),
            Broadcast(expected=4, received=4, last_arrival_s=0.030),
        ]
    )
    assert summary["complete_clicks"] == 2
    assert summary["delivered"] == 11
    assert summary["delivered_share"] == pytest.approx(11 / 12)
    assert summary["median_last_s"] == pytest.approx(0.020)
    assert summary["median_last_partial_s"] is None


def test_summarize_broadcasts_when_no_click_reached_everyone() -> None:
    summary = summarize_broadcasts(
        [Broadcast(4, 2, 0.05), Broadcast(4, 2, 0.07), Broadcast(4, 0, None)]
    )
    assert summary["median_last_s"] is None
    assert summary["median_last_partial_s"] == pytest.approx(0.06)
    assert summary["delivered_share"] == pytest.approx(4 / 12)
    assert summarize_broadcasts([])["delivered_share"] is None


def test_account_lost() -> None:
    shown = [Shown(0, 1000, 0), Shown(0, 990, 2), Shown(1, 1000, 0), Shown(1, None, 0)]
    row = account_lost(initial=5, increments=1000, final=1000, shown=shown, servers=2)
    assert row["expected"] == 1005
    assert row["lost"] == 5
    assert row["converged"] == [1, 1]
    assert row["clients_per_server"] == [2, 2]
    assert row["decreases"] == 2
    assert row["clients_with_decrease"] == 1


REDIS_BENCHMARK_OUTPUT = (
    "\rINCR: rps=0.0 (overall: 0.0) avg_msec=-nan (overall: -nan)\r"
    "                                                   \r"
    "INCR: 41666.67 requests per second, p50=0.607 msec\n\n"
    "EVALSHA 1f2e 2 a b c clicks 1: 38461.54 requests per second, p50=0.815 msec\n"
)


def test_parse_redis_benchmark_skips_progress_lines() -> None:
    assert parse_redis_benchmark(REDIS_BENCHMARK_OUTPUT) == {
        "INCR": 41666.67,
        "INCR p50 ms": 0.607,
        "EVALSHA 1f2e 2 a b c clicks 1": 38461.54,
        "EVALSHA 1f2e 2 a b c clicks 1 p50 ms": 0.815,
    }


def test_parse_redis_benchmark_of_an_error() -> None:
    assert parse_redis_benchmark("Error from server: NOSCRIPT No matching script.") == {}


def test_summarize_tracebacks() -> None:
    log = "\n".join(
        [
            "INFO started",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            "    raise",
            "websockets.exceptions.ConnectionClosedOK: received 1000 (OK)",
            "",
            "The above exception was the direct cause of the following exception:",
            "",
            "Traceback (most recent call last):",
            '  File "y.py", line 2, in g',
            "redis.exceptions.ConnectionError: No connection available.",
            "Traceback (most recent call last):",
            '  File "y.py", line 2, in g',
            "redis.exceptions.ConnectionError: No connection available.",
            "INFO done",
        ]
    )
    count, top, first = summarize_tracebacks(log)
    assert count == 2
    assert top == "redis.exceptions.ConnectionError: No connection available."
    assert first is not None
    assert first.splitlines()[0] == "Traceback (most recent call last):"
    assert first.splitlines()[-1].startswith("websockets.exceptions.ConnectionClosedOK")


def test_summarize_tracebacks_of_a_clean_log() -> None:
    assert summarize_tracebacks("all good\n") == (0, None, None)
