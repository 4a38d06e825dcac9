"""One session's clicks history in a searchable form: when it first showed >= a value."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from counter_service.devtools.loadtest.sessions import Slot


@dataclass(frozen=True)
class History:
    """The times a session's clicks number changed, with the running maximum shown."""

    index: int
    process: str
    times: list[float]
    highest: list[int]

    @classmethod
    def of(cls, slot: Slot) -> History:
        """A session's history. Its process is the replica its page names when it does
        (behind a load balancer nothing else tells), else its target's label."""
        highest = list(itertools.accumulate(slot.recorder.click_values, max))
        process = slot.replica or slot.target.process
        return cls(slot.index, process, list(slot.recorder.click_times), highest)

    def first_reaching(self, value: int) -> tuple[float, int] | None:
        """(time, value shown) when this session first showed >= `value`; None if never."""
        at = bisect.bisect_left(self.highest, value)
        return (self.times[at], self.highest[at]) if at < len(self.times) else None
