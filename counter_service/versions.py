"""What pages are told about a counter, and the newest state one page holds."""

from __future__ import annotations

from dataclasses import dataclass

from counter_service.events import CounterEvent


@dataclass(frozen=True, slots=True)
class CounterUpdate:
    """A counter's new state, handed to pages.

    `reset` marks a state read from Redis: it is the truth even when its version is
    lower than what a page shows (Redis restarted empty, a key was deleted, a failover
    lost the newest writes). `problem` (with `event` None) says the counter is broken
    in Redis: its key holds something that is not a counter."""

    name: str
    event: CounterEvent | None
    reset: bool = False
    problem: str | None = None

    @classmethod
    def change(cls, event: CounterEvent) -> CounterUpdate:
        """A change announced on the channel or returned by an increment."""
        return cls(event.name, event)

    @classmethod
    def truth(cls, event: CounterEvent) -> CounterUpdate:
        """A state read from Redis."""
        return cls(event.name, event, reset=True)

    @classmethod
    def broken(cls, name: str, problem: str) -> CounterUpdate:
        """The counter cannot be read: `problem` says why."""
        return cls(name, None, reset=True, problem=problem)

    @property
    def value(self) -> int | None:
        """The value to show, None for a broken counter."""
        return None if self.event is None else self.event.value


_NOTHING = CounterEvent("", 0, -1)  # a sentinel: no state held at all


class LatestValues:
    """The newest state held per counter; older and duplicate changes are refused."""

    def __init__(self) -> None:
        self._latest: dict[str, CounterEvent | None] = {}

    def accept(self, update: CounterUpdate) -> bool:
        """Apply an update: a reset replaces what is held, a change only if its version
        is newer (or nothing valid is held). True if anything changed."""
        # The hot path of every page: the common case (a newer change) decides on the
        # versions alone, without comparing whole events.
        name, event = update.name, update.event
        held = self._latest.get(name, _NOTHING)
        if held is not None and held is not _NOTHING and event is not None:
            if not update.reset and event.version <= held.version:
                return False
            if update.reset and event == held:
                return False
        elif held is event:  # both None: still broken
            return False
        self._latest[name] = event
        return True

    def get(self, name: str) -> CounterEvent | None:
        """The newest state held for counter `name`, None if none or broken."""
        return self._latest.get(name)

    def forget(self, name: str) -> None:
        """Drop what is held for `name` (nobody shows it any more)."""
        self._latest.pop(name, None)
