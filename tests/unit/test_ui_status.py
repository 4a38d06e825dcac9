"""What the counter page's status line and banner say (ui.status), without Flet."""

from __future__ import annotations

import pytest

from counter_service import (
    Busy,
    CorruptCounter,
    CounterOverflow,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from ui import status
from ui.status import StatusLine

LABELS = {"clicks": "Clicks", "views": "Views"}
CORRUPT = CorruptCounter("clicks", "ns:counter:{clicks}", 'holds "abc", not an integer')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def line(clock: Clock) -> StatusLine:
    return StatusLine(LABELS, clock)


def test_a_click_counted_but_not_replicated_says_so_and_never_asks_to_click_again() -> None:
    text = status.click_failed(NotReplicated("only 0 of 1 replicas confirmed it"))
    assert "counted" in text
    assert "not counted" not in text
    assert "again" not in text.lower()


def test_a_lost_answer_does_not_claim_the_click_was_not_counted() -> None:
    text = status.click_failed(StoreUnavailable("Redis is unreachable: timeout"))
    assert "not counted" not in text
    assert "may or may not" in text


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (StoreError("Redis refused: OOM"), status.REFUSED),
        (Busy("1000 increments are waiting"), status.BUSY),
        (StoreUnavailable("gone"), status.NO_ANSWER),
        (NotReplicated("late"), status.NOT_REPLICATED),
    ],
)
def test_each_failure_has_its_own_line(error: Exception, expected: str) -> None:
    assert status.click_failed(error) == expected


def test_each_failure_line_is_distinct() -> None:
    lines = [status.NO_ANSWER, status.REFUSED, status.NOT_REPLICATED, status.BUSY]
    lines += [status.SLOW_DOWN, status.broken("Clicks", "holds a list, not a counter")]
    assert len(set(lines)) == len(lines)


def test_any_other_failure_says_what_it_was() -> None:
    assert "outside" in status.click_failed(CounterOverflow("outside a 64-bit integer"))


def test_a_broken_counter_is_named_once_with_its_problem(line: StatusLine) -> None:
    assert line.counter_changed("clicks", CORRUPT.problem)
    assert (
        line.text
        == 'The Clicks counter is broken in the store: its Redis key holds "abc", not an integer.'
    )
    assert line.text.count("broken") == 1


def test_the_broken_line_clears_once_the_counter_heals(line: StatusLine) -> None:
    line.counter_changed("clicks", CORRUPT.problem)
    assert not line.counter_changed("clicks", CORRUPT.problem)  # nothing new to show
    assert line.counter_changed("clicks", None)
    assert line.text == ""
    assert not line.counter_changed("views", None)  # healthy all along: nothing to redo


def test_a_click_on_a_broken_counter_says_it_is_broken_until_it_heals(line: StatusLine) -> None:
    line.clicked("clicks", CORRUPT)
    assert "Clicks counter is broken" in line.text
    line.counter_changed("clicks", None)  # repaired: the page was shown a good value
    assert line.text == ""


def test_a_failed_click_is_forgotten_after_the_next_one_counts(line: StatusLine) -> None:
    line.clicked("clicks", Busy("full"))
    assert line.text == status.BUSY
    line.clicked("clicks", None)
    assert line.text == ""


def test_a_broken_counter_shows_again_once_a_failed_click_is_history(line: StatusLine) -> None:
    line.counter_changed("views", "holds a list, not a counter")
    line.clicked("clicks", StoreError("refused"))
    assert line.text == status.REFUSED
    line.clicked("clicks", None)
    assert "Views counter is broken" in line.text


def test_the_pages_own_count_asks_nothing_of_the_visitor(line: StatusLine) -> None:
    for error in (StoreUnavailable("down"), Busy("full"), NotReplicated("late"), StoreError("x")):
        line.counted_itself("views", error)
        assert line.text == ""
    line.counted_itself("views", CorruptCounter("views", "k", "holds a set, not a counter"))
    assert "Views counter is broken" in line.text


def test_the_store_coming_back_settles_only_what_a_lost_answer_left_open(
    line: StatusLine,
) -> None:
    line.clicked("clicks", StoreUnavailable("down"))
    line.store_back()
    assert line.text == ""
    line.clicked("clicks", StoreError("refused"))
    line.store_back()
    assert line.text == status.REFUSED


def test_slow_down_stays_for_the_hold_after_the_last_refusal(
    line: StatusLine, clock: Clock
) -> None:
    line.throttled()
    assert line.slow_down_left() == status.SLOW_DOWN_HOLD_S
    clock.now += 0.02
    line.clicked("clicks", None)  # an accepted click between refusals
    assert line.text == status.SLOW_DOWN
    clock.now += 1.0
    line.throttled()  # refusals go on
    clock.now += status.SLOW_DOWN_HOLD_S - 0.01
    assert line.text == status.SLOW_DOWN
    assert 0 < line.slow_down_left() < 0.011
    clock.now += 0.02
    assert line.text == ""
    assert line.slow_down_left() == 0


def test_the_banner_never_claims_last_known_numbers_when_none_are_known() -> None:
    assert status.banner(known=True) == status.STALE
    assert "last known" in status.STALE
    assert status.banner(known=False) == status.UNKNOWN
    assert "last known" not in status.UNKNOWN
