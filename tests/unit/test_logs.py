import logging

import pytest

from counter_service.logs import SummarizedWarnings
from tests.support import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


async def test_a_burst_that_stops_is_counted_when_its_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warnings = SummarizedWarnings(logging.getLogger("t"), window_s=0.2)
    for i in range(100):
        warnings.warn("store down", "a click was not counted: %s", f"error {i}")
    assert messages(caplog) == ["a click was not counted: error 0"]
    await eventually(lambda: len(caplog.records) == 2, what="the summary, with no warning after")
    assert messages(caplog)[1] == (
        "a click was not counted: error 99 (99 more like it in the last 0.2s)"
    )
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)


def test_a_steady_stream_is_one_line_per_fixed_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    warnings = SummarizedWarnings(logging.getLogger("t"), window_s=10, clock=clock)
    for i in range(70):  # every 0.5 s for 35 s; no event loop here, so no timer
        clock.now = i * 0.5
        warnings.warn("store down", "not counted: %d", i)
    warnings.flush()
    assert messages(caplog) == [
        "not counted: 0",
        "not counted: 19 (19 more like it in the last 10s)",
        "not counted: 39 (20 more like it in the last 10s)",
        "not counted: 59 (20 more like it in the last 10s)",
        "not counted: 69 (10 more like it in the last 10s)",
    ]


def test_a_warning_after_a_quiet_window_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    warnings = SummarizedWarnings(logging.getLogger("t"), window_s=10, clock=clock)
    warnings.warn("a", "first")
    clock.now = 5.0
    warnings.warn("a", "held back")
    clock.now = 25.0  # the summary window [10, 20) stayed empty
    warnings.warn("a", "again")
    assert messages(caplog) == [
        "first",
        "held back (1 more like it in the last 10s)",
        "again",
    ]


def test_kinds_are_summarised_apart(caplog: pytest.LogCaptureFixture) -> None:
    warnings = SummarizedWarnings(logging.getLogger("t"), clock=Clock())
    warnings.warn("a", "first a")
    warnings.warn("b", "first b")
    warnings.warn("a", "second a")
    assert messages(caplog) == ["first a", "first b"]
    warnings.flush()
    assert messages(caplog)[2:] == ["second a (1 more like it in the last 10s)"]
