"""What one headless session showed: current numbers, when they changed, clicks history."""

from __future__ import annotations

from typing import Any

from ui.contract import CLICKS, ONLINE, STATUS, VIEWS

__all__ = ["CLICKS", "NUMBERS", "ONLINE", "STATUS", "VIEWS"]

NUMBERS = (CLICKS, VIEWS, ONLINE)


def as_int(value: Any) -> int | None:
    """The integer a number control shows (its value is the decimal text), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


class Recorder:
    """The `on_change` callback of one session: O(1) work per change, no I/O.

    Keeps the first and the latest value of each number and when the latest was first
    shown, the page's status text, and every (time, value) the clicks number showed."""

    __slots__ = ("changed_at", "click_times", "click_values", "first", "status", "values")

    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.values: dict[str, int] = {}
        self.changed_at: dict[str, float] = {}
        self.click_times: list[float] = []
        self.click_values: list[int] = []
        self.status = ""

    def __call__(self, key: str, value: Any, at: float) -> None:
        if key == STATUS:
            self.status = "" if value is None else str(value)
            return
        if key not in NUMBERS:
            return
        number = as_int(value)
        if number is None:
            return
        self.first.setdefault(key, number)
        self.values[key] = number
        self.changed_at[key] = at
        if key == CLICKS:
            self.click_times.append(at)
            self.click_values.append(number)

    def rendered(self) -> bool:
        """True once all three numbers are on the page."""
        return len(self.values) == len(NUMBERS)

    def clicks(self) -> int:
        """The clicks number shown now (-1 before it is shown)."""
        return self.values.get(CLICKS, -1)

    def first_click_above(self, value: int, start: int) -> tuple[float, int] | None:
        """(time, value) of the first clicks change from index `start` on that exceeds `value`."""
        for index in range(start, len(self.click_values)):
            if self.click_values[index] > value:
                return self.click_times[index], self.click_values[index]
        return None
