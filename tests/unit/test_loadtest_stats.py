"""Unit tests of the load test's statistics: percentiles, acknowledgement, propagation,
loss accounting and convergence. No servers."""

from __future__ import annotations

import pytest

from counter_service.devtools.loadtest import accounting, stats
from counter_service.devtools.loadtest.acks import Ack, acknowledge
from counter_service.devtools.loadtest.clicker import Click, schedule
from counter_service.devtools.loadtest.history import History
from counter_service.devtools.loadtest.monitors import lag_reading
from counter_service.devtools.loadtest.propagation import OTHER, SAME, UNKNOWN, measure, spread
from counter_service.devtools.loadtest.recorder import Recorder


def test_summarize_reports_milliseconds_of_unsorted_samples() -> None:
    summary = stats.summarize([0.003, 0.001, 0.002] + [0.010] * 97)
    assert summary == stats.LatencyStats(100, 10.0, 10.0, 10.0, 10.0)
    assert stats.summarize([0.002, 0.001]).as_dict() == {
        "count": 2,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": 2.0,
        "max_ms": 2.0,
    }


def test_summarize_of_nothing_has_no_figures() -> None:
    assert stats.summarize([]) == stats.LatencyStats(0, None, None, None, None)


def test_per_second_buckets_are_sorted_by_second() -> None:
    buckets = stats.per_second({2: [0.001], 0: [0.004, 0.002]})
    assert [(b.second, b.stats.count, b.stats.max_ms) for b in buckets] == [
        (0, 2, 4.0),
        (2, 1, 1.0),
    ]


def test_schedule_spreads_the_rate_over_clickers_within_the_duration() -> None:
    plans = [schedule(i, 4, 40.0, 2.0) for i in range(4)]
    offsets = sorted(o for plan in plans for o in plan)
    assert len(offsets) == 80
    assert all(0 <= o < 2.0 for o in offsets)
    assert offsets == pytest.approx([n / 40 for n in range(80)])
    assert plans[1][:2] == pytest.approx([0.025, 0.125])


def test_schedule_of_a_clicker_that_would_start_after_the_end_is_empty() -> None:
    assert schedule(5, 10, 1.0, 2.0) == []


def test_recorder_keeps_numbers_history_and_status() -> None:
    recorder = Recorder()
    for key, value, at in [
        ("clicks", "0", 1.0),
        ("views", "3", 1.0),
        ("increment", None, 1.0),
        ("clicks", "2", 2.0),
        ("online", "not a number", 2.0),
        ("status", "store down", 3.0),
    ]:
        recorder(key, value, at)
    assert recorder.values == {"clicks": 2, "views": 3}
    assert recorder.first == {"clicks": 0, "views": 3}
    assert (recorder.click_times, recorder.click_values) == ([1.0, 2.0], [0, 2])
    assert recorder.status == "store down"
    assert not recorder.rendered()
    recorder("online", "1", 4.0)
    assert recorder.rendered()


def history(index: int, process: str, points: list[tuple[float, int]]) -> History:
    times = [t for t, _ in points]
    highest = [max(v for _, v in points[: i + 1]) for i in range(len(points))]
    return History(index, process, times, highest)


def test_history_finds_the_first_time_a_value_was_reached_even_if_it_went_back() -> None:
    seen = history(0, "a", [(1.0, 0), (2.0, 5), (3.0, 3), (4.0, 9)])
    assert seen.first_reaching(0) == (1.0, 0)
    assert seen.first_reaching(4) == (2.0, 5)
    assert seen.first_reaching(5) == (2.0, 5)
    assert seen.first_reaching(6) == (4.0, 9)
    assert seen.first_reaching(10) is None


def test_clicks_are_acknowledged_in_send_order_thresholds() -> None:
    # Baseline 10: the clicks sent 1st, 2nd and 3rd are acknowledged by 11, 12 and 13.
    clicks = [Click(0, 1.0, 11), Click(1, 1.1, 12), Click(0, 1.2, 13), Click(1, 1.3, 14)]
    histories = {
        0: history(0, "a", [(0.5, 10), (1.05, 11), (1.5, 13)]),
        1: history(1, "b", [(0.5, 10), (1.15, 11), (1.2, 12), (9.0, 14)]),
    }
    acks, missing = acknowledge(clicks, histories, timeout=5.0)
    assert acks == [Ack(0, 1.0, 1.05, 11), Ack(1, 1.1, 1.2, 12), Ack(0, 1.2, 1.5, 13)]
    assert missing == {"acknowledged after more than 5s": 1}


def test_a_click_whose_session_never_showed_its_threshold_is_not_acknowledged() -> None:
    clicks = [Click(0, 1.0, 11), Click(7, 1.0, 12)]
    acks, missing = acknowledge(clicks, {0: history(0, "a", [(0.5, 10)])}, timeout=5.0)
    assert acks == []
    assert missing == {"never acknowledged": 2}


def test_propagation_measures_every_other_session_split_by_process() -> None:
    observers = [
        history(0, "p1", [(0.0, 0), (1.010, 1), (2.050, 2)]),  # clicker
        history(1, "p1", [(0.0, 0), (1.030, 1), (2.060, 2)]),
        history(2, "p2", [(0.0, 0), (1.005, 2)]),  # saw both before the acks
        history(3, "p2", [(0.0, 0), (1.100, 1)]),  # never saw 2
    ]
    acks = [Ack(0, 1.0, 1.010, 1), Ack(0, 2.0, 2.050, 2)]
    result = measure(acks, observers, started_at=1.0, split_known=True)
    assert result.groups[SAME] == pytest.approx([0.020, 0.010])
    assert result.groups[OTHER] == pytest.approx([0.0, 0.090, 0.0])
    assert (result.seen_before_ack, result.never_seen, result.acks_used) == (2, 1, 2)
    assert sorted(result.seconds) == [0, 1]


def test_propagation_without_a_known_split_is_one_unknown_group() -> None:
    observers = [history(0, "unknown", [(1.0, 1)]), history(1, "unknown", [(1.5, 1)])]
    result = measure([Ack(0, 0.9, 1.0, 1)], observers, started_at=0.0, split_known=False)
    assert dict(result.groups) == {UNKNOWN: [0.5]}


def test_spread_keeps_at_most_the_limit_evenly() -> None:
    acks = [Ack(0, float(i), float(i), i) for i in range(10)]
    assert spread(acks, 20) == acks
    assert [a.value for a in spread(acks, 5)] == [0, 2, 4, 6, 8]


def test_expected_totals_add_what_the_run_did() -> None:
    start = {"clicks": 5, "views": 100, "online": 2}
    expected = accounting.expected_totals(start, sent=80, opened=20, live=19)
    assert expected == {"clicks": 85, "views": 120, "online": 21}


def test_loss_is_counted_against_the_store_when_known() -> None:
    check = accounting.check_counter("clicks", 0, 100, [97, 100, None], store=97)
    assert (check.observed, check.observed_from, check.lost, check.extra) == (97, "redis", 3, 0)
    assert (check.sessions, check.sessions_showing_expected) == (3, 1)
    assert (check.shown_min, check.shown_max) == (97, 100)


def test_loss_and_excess_without_a_store_use_the_highest_value_shown() -> None:
    lost = accounting.check_counter("clicks", 0, 100, [90, 95], store=None)
    assert (lost.observed, lost.observed_from, lost.lost, lost.extra) == (95, "sessions", 5, 0)
    extra = accounting.check_counter("views", 0, 20, [21, 20], store=None)
    assert (extra.lost, extra.extra) == (0, 1)
    exact = accounting.check_counter("online", 0, 20, [20, 20], store=20)
    assert (exact.lost, exact.extra, exact.sessions_showing_expected) == (0, 0, 2)


def test_nothing_observed_counts_everything_as_lost() -> None:
    check = accounting.check_counter("clicks", 0, 3, [None], store=None)
    assert (check.observed, check.lost) == (None, 3)


def test_convergence_time_is_when_the_last_expected_value_appeared() -> None:
    expected = {"clicks": 10, "views": 2, "online": 2}
    values = {"clicks": 10, "views": 2, "online": 2}
    changed = {"clicks": 5.25, "views": 1.0, "online": 4.0}
    assert accounting.converged_after(values, changed, expected, since=5.0) == 0.25
    assert accounting.converged_after(values, {**changed, "clicks": 4.5}, expected, 5.0) == 0.0
    assert accounting.converged_after({**values, "online": 1}, changed, expected, 5.0) is None
    assert accounting.shows(values, expected)
    assert not accounting.shows({"clicks": 10}, expected)


def test_convergence_curve_and_summary() -> None:
    times = [0.2, None, 0.1, 0.4]
    assert accounting.curve(times) == [(0.1, 0.25), (0.2, 0.5), (0.4, 0.75)]
    summary = accounting.convergence(times, timeout=10.0)
    assert (summary.sessions, summary.converged, summary.all_converged) == (4, 3, False)
    assert summary.all_converged_after_s is None
    done = accounting.convergence([0.2, 0.1], timeout=10.0)
    assert (done.all_converged, done.all_converged_after_s) == (True, 0.2)


def test_converging_after_the_timeout_does_not_count() -> None:
    summary = accounting.convergence([0.5, 12.0], timeout=10.0)
    assert (summary.converged, summary.all_converged) == (1, False)


@pytest.mark.parametrize(
    ("field", "reading"),
    [
        (3.5, (3.5, 3.5)),
        ({"p50": 1.0, "p99": 4.0, "max": 9.0, "samples": 10}, (4.0, 9.0)),
        ({"max": 2}, (2.0, 2.0)),
        (None, None),
        ("12", None),
        (True, None),
        ({"p99": 3.0}, None),
    ],
)
def test_server_loop_lag_is_read_from_a_number_or_a_summary(
    field: object, reading: tuple[float, float] | None
) -> None:
    assert lag_reading(field) == reading


def test_redis_connection_counts_leave_out_the_load_tests_own() -> None:
    from counter_service.devtools.loadtest.monitors import OWN_NAME, RedisConnections

    sampler = RedisConnections("redis://127.0.0.1:1/0")
    sampler._record(
        [
            {"name": OWN_NAME, "sub": "0", "psub": "0"},
            {"name": "cs:w1:commands", "sub": "0", "psub": "0"},
            {"name": "cs:w1:relay", "sub": "1", "psub": "0"},
            {"name": OWN_NAME, "sub": "0", "psub": "0"},
        ]
    )
    assert (sampler.last_total, sampler.max_total, sampler.max_pubsub) == (2, 2, 1)


def test_phase_lag_diffs_the_histograms_around_the_phase() -> None:
    from counter_service.devtools.loadtest.monitors import phase_lag

    bounds = [10, 100, 1000]
    ramp = {"le_ms": bounds, "cumulative": [0, 10, 40, 40]}  # ramp: 30 samples of 100-1000 ms
    start = {"le_ms": bounds, "cumulative": [0, 10, 40, 40]}
    end = {"le_ms": bounds, "cumulative": [99, 109, 140, 140]}  # clicking: 99 fast, 1 slow
    readings = [(1.0, ramp), (2.0, start), (9.0, end)]
    assert phase_lag(readings, 2.0, 9.0) == {
        "p50_le_ms": 10.0,
        "p99_le_ms": 10.0,
        "samples": 100,
        "window_s": 7.0,
    }
    # No reading before the phase: from the first one inside it, and it says how long.
    assert phase_lag(readings[1:], 1.5, 9.0) == {
        "p50_le_ms": 10.0,
        "p99_le_ms": 10.0,
        "samples": 100,
        "window_s": 7.0,
    }
    assert phase_lag(readings, 9.5, 12.0) is None  # nothing read after the phase began
    assert phase_lag([(1.0, {"le_ms": bounds})], 0.5, 2.0) is None
