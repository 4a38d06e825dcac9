"""Latest state per counter, so that nothing older than what is shown is ever shown."""

from __future__ import annotations

from dataclasses import dataclass

from counter_service.events import CounterEvent


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """A change handed to pages. `reset` marks a resync read from Redis after a
    (re)subscribe: it is the truth even when its version is lower than what a page
    shows (Redis restarted empty, or a failover lost the newest writes)."""

    event: CounterEvent
    reset: bool = False


class LatestValues:
    """The newest event seen per counter; stale and duplicate events are refused."""

    def __init__(self) -> None:
        self._latest: dict[str, CounterEvent] = {}

    def offer(self, event: CounterEvent) -> bool:
        """Keep `event` if it is newer than the one held; return whether it was kept."""
        held = self._latest.get(event.name)
        if held is not None and event.version <= held.version:
            return False
        self._latest[event.name] = event
        return True

    def accept(self, update: CounterUpdate) -> bool:
        """Apply an update: a reset replaces unconditionally (True if anything changed),
        anything else goes through `offer`."""
        if not update.reset:
            return self.offer(update.event)
        changed = self._latest.get(update.event.name) != update.event
        self._latest[update.event.name] = update.event
        return changed

    def get(self, name: str) -> CounterEvent | None:
        """The newest event held for counter `name`, if any."""
        return self._latest.get(name)

    def value(self, name: str) -> int:
        """The newest value held for counter `name`, 0 if none."""
        event = self._latest.get(name)
        return 0 if event is None else event.value
