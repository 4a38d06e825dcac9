import logging

import pytest

from counter_service.logs import SummarizedWarnings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_kind_is_one_line_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    warnings = SummarizedWarnings(logging.getLogger("t"), window_s=10, clock=clock)
    for i in range(1000):
        clock.now = i * 0.001
        warnings.warn("store down", "a click was not counted: %s", f"error {i}")
    clock.now = 12.0
    warnings.warn("store down", "a click was not counted: %s", "later")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "a click was not counted: error 0",
        "a click was not counted: later (and 999 more like it in the last 12s)",
    ]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)


def test_kinds_are_summarised_apart(caplog: pytest.LogCaptureFixture) -> None:
    warnings = SummarizedWarnings(logging.getLogger("t"), clock=Clock())
    warnings.warn("a", "first a")
    warnings.warn("b", "first b")
    warnings.warn("a", "second a")
    assert [r.getMessage() for r in caplog.records] == ["first a", "first b"]
