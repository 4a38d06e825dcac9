"""What the page's status line and outage banner say, chosen without Flet.

The line answers the latest thing that went wrong: a click that failed says why, and
whether it counted; a broken counter says so until it heals; refused clicks say "slow
down" for a while after the last refusal. The page's own view count never asks the
visitor to do anything: only a broken counter is worth telling them about.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from counter_service import (
    Busy,
    CorruptCounter,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)

NO_ANSWER = "The counter store did not answer: that click may or may not have counted."
REFUSED = "The counter store refused that click; it was not counted."
NOT_REPLICATED = (
    "That click counted, but the store has not copied it to a replica yet;"
    " a failover now could lose it."
)
BUSY = "The server is busy right now; that click was not counted. Try again in a moment."
SLOW_DOWN = "Slow down: clicks that come faster than a person clicks are not counted."
FAILED = "That click was not counted: {error}"
STALE = "Cannot reach the counter store: these are the last known numbers, and may be out of date."
UNKNOWN = "Cannot reach the counter store: the numbers will show once it is back."
SLOW_DOWN_HOLD_S = 2.0
"""How long "slow down" stays after the last refusal (refusals are reported at most
once a second, so a shorter hold would flicker between them)."""

_OUTAGES = frozenset({NO_ANSWER})
"""Messages that the store coming back makes history (the numbers show the truth)."""


def broken(label: str, problem: str) -> str:
    """The line for a counter whose Redis key is not a counter."""
    return f"The {label} counter is broken in the store: its Redis key {problem}."


def click_failed(error: BaseException) -> str:
    """The line for a click that raised `error` (a broken counter has its own line)."""
    # Checked in order: NotReplicated and StoreUnavailable are StoreErrors.
    if isinstance(error, NotReplicated):
        return NOT_REPLICATED  # counted: clicking again would count twice
    if isinstance(error, StoreUnavailable):
        return NO_ANSWER  # it may have been applied before the answer was lost
    if isinstance(error, StoreError):
        return REFUSED
    if isinstance(error, Busy):
        return BUSY
    return FAILED.format(error=error)


def banner(known: bool) -> str:
    """The outage banner: the last known numbers if any are `known`, else none."""
    return STALE if known else UNKNOWN


class StatusLine:
    """The state behind the page's status line: what `text` says now.

    `labels` names counters for people ("clicks" -> "Clicks"); `clock` is monotonic."""

    def __init__(
        self, labels: Mapping[str, str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._labels = labels
        self._clock = clock
        self._broken: dict[str, str] = {}
        self._click = ""
        self._slow_until = float("-inf")

    def clicked(self, name: str, error: BaseException | None) -> None:
        """A click on counter `name` succeeded (`error` None) or failed."""
        if isinstance(error, CorruptCounter):
            self._click = ""
            self.counter_changed(name, error.problem)
        else:
            self._click = "" if error is None else click_failed(error)

    def counted_itself(self, name: str, error: BaseException | None) -> None:
        """The page's own increment of `name` (a view) succeeded or failed."""
        if isinstance(error, CorruptCounter):
            self.counter_changed(name, error.problem)

    def counter_changed(self, name: str, problem: str | None) -> bool:
        """The page now shows counter `name` broken (`problem`) or healthy (None);
        True if that changes what the line may say."""
        if problem is None:
            return self._broken.pop(name, None) is not None
        changed = self._broken.get(name) != problem
        self._broken[name] = problem
        return changed

    def throttled(self) -> None:
        """Events are being refused: "slow down" stays for `SLOW_DOWN_HOLD_S`."""
        self._slow_until = self._clock() + SLOW_DOWN_HOLD_S

    def slow_down_left(self) -> float:
        """Seconds until "slow down" goes, by this line's own clock (0 once it went)."""
        return max(0.0, self._slow_until - self._clock())

    def store_back(self) -> None:
        """The store is reachable again: what a lost answer left unsure is shown now."""
        if self._click in _OUTAGES:
            self._click = ""

    @property
    def text(self) -> str:
        """The line to show now, "" when all is well."""
        if self._clock() < self._slow_until:
            return SLOW_DOWN
        if self._click:
            return self._click
        for name, problem in self._broken.items():
            return broken(self._labels.get(name, name), problem)
        return ""
