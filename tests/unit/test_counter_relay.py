"""The counter relay's decisions, with a store that returns scripted reads."""

from collections.abc import Iterable

import pytest

from counter_service.errors import CorruptCounter
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
    assert (relay.stats.applied, relay.stats.stale, relay.stats.suspect) == (1, 2, 2)
    assert updates[-1].event == CounterEvent("clicks", 6, 6)


@pytest.mark.parametrize(
    ("event", "outcome", "read_back"),
    [
        (CounterEvent("clicks", 6, 6), "applied", False),  # the next version
        (CounterEvent("clicks", 5, 5), "stale", False),  # a duplicate: nothing to learn
        (CounterEvent("clicks", 1, 1), "stale", True),  # lower: Redis may have lost writes
        (CounterEvent("clicks", 9, 9), "suspect", True),  # a gap
        (CounterEvent("clicks", 60, 5), "suspect", True),  # same version, another value
    ],
)
async def test_each_event_is_counted_by_what_its_version_says(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
    event: CounterEvent,
    outcome: str,
    read_back: bool,
) -> None:
    relay, store, _ = relay_and_updates
    await held_at(relay, store, 5, 5)
    relay._wanted.clear()  # the first read, asked by watch(), was done by held_at
    before = dict(vars(relay.stats))
    relay.handle(event.encode().encode())
    changed = {k for k, v in vars(relay.stats).items() if v != before[k]}
    assert changed == {"messages", outcome}
    assert relay._wanted == ({"clicks"} if read_back else set())


async def test_an_event_before_the_first_read_is_suspect(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
) -> None:
    relay, _, updates = relay_and_updates
    relay.handle(CounterEvent("clicks", 1, 1).encode().encode())
    assert relay.stats.suspect == 1
    assert updates == []  # nothing is shown before Redis was asked


async def test_a_broken_counter_is_reported_with_its_problem_alone(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
) -> None:
    relay, store, updates = relay_and_updates
    store.truth["clicks"] = CorruptCounter("clicks", "ns:counter:{clicks}", 'holds "abc"')
    await relay.resync()
    assert updates[-1] == CounterUpdate.broken("clicks", 'holds "abc"')
    store.truth["clicks"] = CounterEvent("clicks", 5, 5)
    await relay.resync()
    assert updates[-1] == CounterUpdate.change(CounterEvent("clicks", 5, 5))
    assert updates[-1].problem is None


async def test_events_for_names_nobody_watches_keep_nothing(
    relay_and_updates: tuple[CounterRelay, ScriptedStore, list[CounterUpdate]],
) -> None:
    relay, _, updates = relay_and_updates
    for i in range(100):
        relay.handle(CounterEvent(f"other-{i}", 1, 1).encode().encode())
    assert relay.stats.unwatched == 100
    assert relay.watched == ["clicks"]
    assert updates == []
