"""The counter relay's decisions, with a store that returns scripted reads."""

from collections.abc import Iterable

import pytest

from counter_service.events import CounterEvent
from counter_service.pubsub.counters import CounterRelay
from counter_service.redis.store import ReadResult
from counter_service.versions import CounterUpdate


class ScriptedStore:
    def __init__(self) -> None:
        self.truth: dict[str, ReadResult] = {}
        self.reads: list[list[str]] = []

    async def read_many(self, names: Iterable[str]) -> list[ReadResult]:
        names = list(names)
        self.reads.append(names)
        return [self.truth.get(n, CounterEvent(n, 0, 0)) for n in names]


@pytest.fixture
def relay_and_updates() -> tuple[CounterRelay, ScriptedStore, list[CounterUpdate]]:
    store = ScriptedStore()
    updates: list[CounterUpdate] = []
    relay = CounterRelay(store, updates.append)  # type: ignore[arg-type]  # reads are all it uses
    relay.watch("clicks")
    return relay, store, updates


async def held_at(relay: CounterRelay, store: ScriptedStore, value: int, version: int) -> None:
    store.truth["clicks"] = CounterEvent("clicks", value, version)
    await relay.resync()


@pytest.mark.parametrize(
    ("read", "reset"),
    [
        (CounterEvent("clicks", 7, 7), False),  # newer: an ordinary change
        (CounterEvent("clicks", 3, 3), True),  # lower: Redis lost writes
        (CounterEvent("clicks", 60, 5), True),  # same version, other value: a forgery
    ],
)
async def test_only_a_read_that_contradicts_may_move_pages_back(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
    read: CounterEvent,
    reset: bool,
) -> None:
    relay, store, updates = relay_and_updates
    await held_at(relay, store, 5, 5)
    store.truth["clicks"] = read
    await relay.resync()
    assert updates[-1] == CounterUpdate("clicks", read, reset=reset)


async def test_the_next_version_is_applied_and_anything_else_read_back(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
) -> None:
    relay, store, updates = relay_and_updates
    await held_at(relay, store, 5, 5)
    relay.handle(CounterEvent("clicks", 6, 6).encode().encode())
    assert updates[-1] == CounterUpdate.change(CounterEvent("clicks", 6, 6))
    for forged in ((7, 9), (1, 1), (99, 6)):
        relay.handle(CounterEvent("clicks", *forged).encode().encode())
    relay.handle(CounterEvent("clicks", 6, 6).encode().encode())  # a duplicate
    assert relay.stats.suspect == 3
    assert relay.stats.duplicate == 1
    assert updates[-1].event == CounterEvent("clicks", 6, 6)


async def test_events_for_names_nobody_watches_keep_nothing(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
) -> None:
    relay, _, updates = relay_and_updates
    for i in range(100):
        relay.handle(CounterEvent(f"other-{i}", 1, 1).encode().encode())
    assert relay.stats.unwatched == 100
    assert relay.watched == ["clicks"]
    assert updates == []
