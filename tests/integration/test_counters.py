"""Redis is the truth and the channel only a hint: a real service on a real redis-server,
attacked with forged events, flushes, deleted and corrupt keys."""

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import RedisProcess
from counter_service.errors import CorruptCounter
from counter_service.events import CounterEvent
from counter_service.names import Names
from counter_service.service import CounterService
from counter_service.settings import Settings
from counter_service.versions import CounterUpdate
from tests.support import eventually

NS = "ctest"
RECONCILE_S = 1.0


class Watcher:
    """A service watching some counters, recording every update it delivers."""

    def __init__(self, service: CounterService) -> None:
        self.service = service
        self.updates: list[CounterUpdate] = []
        service.subscribe(self.updates.extend)

    def shows(self, name: str, value: int | None) -> bool:
        latest = self.service.latest(name)
        return latest is not None and latest.value == value

    def history(self, name: str) -> list[int | None]:
        return [u.value for u in self.updates if u.name == name]


@pytest.fixture
async def watcher(redis_server: RedisProcess) -> AsyncIterator[Watcher]:
    settings = Settings(redis_url=redis_server.url, namespace=NS, reconcile_s=RECONCILE_S)
    async with CounterService(settings) as service:
        await eventually(lambda: service.ready, what="service ready")
        for name in ("clicks", "views"):
            service.watch(name)
        w = Watcher(service)
        await eventually(lambda: w.shows("clicks", 0) and w.shows("views", 0), what="first read")
        yield w


def channel(watcher: Watcher) -> str:
    """Where the counters' changes go out (one channel on a single server)."""
    return watcher.service.names.counter_channel("clicks")


def forged(name: str, value: int, version: int) -> str:
    return CounterEvent(name, value, version).encode()


async def clicks(watcher: Watcher, count: int) -> None:
    for _ in range(count):
        await watcher.service.incr("clicks")


async def test_changes_arrive_in_version_order(watcher: Watcher) -> None:
    await clicks(watcher, 20)
    await eventually(lambda: watcher.shows("clicks", 20))
    seen = [v for v in watcher.history("clicks") if v is not None]
    assert seen == sorted(seen)


async def test_a_forged_huge_version_is_never_shown(watcher: Watcher, redis_client: Redis) -> None:
    await clicks(watcher, 3)
    await eventually(lambda: watcher.shows("clicks", 3))
    await redis_client.publish(channel(watcher), forged("clicks", -5, 99999999))
    await clicks(watcher, 1)
    await eventually(lambda: watcher.shows("clicks", 4), what="real clicks still count")
    assert -5 not in watcher.history("clicks")
    assert watcher.service.counters.stats.suspect >= 1


async def test_a_forged_next_version_is_corrected_by_the_next_click(
    watcher: Watcher, redis_client: Redis
) -> None:
    await clicks(watcher, 2)
    await eventually(lambda: watcher.shows("clicks", 2))
    await redis_client.publish(channel(watcher), forged("clicks", 1000, 3))
    await eventually(lambda: watcher.shows("clicks", 1000), what="the forgery is the next version")
    await clicks(watcher, 1)  # version 3 again, another value: read back
    await eventually(lambda: watcher.shows("clicks", 3), what="truth after the next click")


async def test_a_forged_next_version_is_corrected_by_reconciliation(
    watcher: Watcher, redis_client: Redis
) -> None:
    await redis_client.publish(channel(watcher), forged("views", 77, 1))
    await eventually(lambda: watcher.shows("views", 77))
    await eventually(lambda: watcher.shows("views", 0), timeout=3 * RECONCILE_S + 5)


async def test_a_lower_version_makes_it_read_back(watcher: Watcher, redis_client: Redis) -> None:
    await clicks(watcher, 5)
    await eventually(lambda: watcher.shows("clicks", 5))
    reads = watcher.service.counters.stats.readbacks
    await redis_client.publish(channel(watcher), forged("clicks", 1, 1))
    await eventually(lambda: watcher.service.counters.stats.readbacks > reads, what="read back")
    assert watcher.shows("clicks", 5)


async def test_flushdb_is_caught_by_reconciliation_and_by_the_next_click(
    watcher: Watcher, redis_client: Redis
) -> None:
    await clicks(watcher, 5)
    await eventually(lambda: watcher.shows("clicks", 5))
    await redis_client.flushdb()
    await eventually(lambda: watcher.shows("clicks", 0), timeout=3 * RECONCILE_S + 5)
    await clicks(watcher, 5)
    await redis_client.flushdb()
    await clicks(watcher, 1)  # version 1 while 5 is held: lower, read back
    await eventually(lambda: watcher.shows("clicks", 1))


async def test_a_deleted_version_key_converges_on_the_value(
    watcher: Watcher, redis_client: Redis
) -> None:
    await clicks(watcher, 6)
    await eventually(lambda: watcher.shows("clicks", 6))
    await redis_client.delete(watcher.service.names.version("clicks"))
    await clicks(watcher, 1)
    await eventually(lambda: watcher.shows("clicks", 7))
    latest = watcher.service.latest("clicks")
    assert latest is not None
    assert latest.event == CounterEvent("clicks", 7, 1)


async def test_a_flood_of_forged_events_costs_a_read_per_debounce_interval(
    watcher: Watcher, redis_client: Redis
) -> None:
    relay = watcher.service.counters
    started, reads = time.monotonic(), relay.stats.readbacks
    async with redis_client.pipeline(transaction=False) as pipe:
        for version in range(1000, 3000):
            pipe.publish(channel(watcher), forged("clicks", 5, version))
        await pipe.execute()
    await eventually(lambda: relay.stats.messages >= 2000, what="flood received")
    elapsed = time.monotonic() - started
    # One read of one counter per 0.1 s debounce interval at most, plus reconciliation.
    assert relay.stats.readbacks - reads <= elapsed / 0.1 + 2 * (1 + elapsed / RECONCILE_S)
    assert watcher.shows("clicks", 0)


async def test_forged_events_for_unwatched_names_keep_no_state(
    watcher: Watcher, redis_client: Redis
) -> None:
    relay = watcher.service.counters
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(50_000):
            pipe.publish(channel(watcher), forged(f"spam-{i}", i, 1))
        await pipe.execute()
    await eventually(lambda: relay.stats.unwatched >= 50_000, timeout=60, what="spam received")
    assert sorted(relay.watched) == ["clicks", "views"]
    assert len(watcher.service._coalescer) == 0
    assert {u.name for u in watcher.updates} <= {"clicks", "views"}


async def test_a_corrupt_counter_is_reported_and_heals_once_repaired(
    watcher: Watcher, redis_client: Redis
) -> None:
    service = watcher.service
    await clicks(watcher, 2)
    await redis_client.set(service.names.value("clicks"), "abc")
    await eventually(lambda: watcher.shows("clicks", None), timeout=3 * RECONCILE_S + 5)
    latest = service.latest("clicks")
    assert latest is not None
    assert latest.problem is not None
    assert 'holds "abc"' in latest.problem
    with pytest.raises(CorruptCounter):
        await service.incr("clicks")
    assert await redis_client.get(service.names.value("clicks")) == b"abc"  # nothing written
    assert (await service.incr("views")).value == 1  # other counters carry on
    await eventually(lambda: watcher.shows("views", 1))
    assert service.ready
    await redis_client.set(service.names.value("clicks"), "10")
    await eventually(lambda: watcher.shows("clicks", 10), timeout=3 * RECONCILE_S + 5)
    assert (await service.incr("clicks")).value == 11


async def corrupt(redis_client: Redis, names: Names, corruption: str) -> None:
    if corruption == "abc":
        await redis_client.set(names.value("clicks"), "abc")
    elif corruption == "list":
        await redis_client.delete(names.value("clicks"))
        await redis_client.rpush(names.value("clicks"), "1")
    elif corruption == "bad version":
        await redis_client.set(names.version("clicks"), "not-a-number")
    else:
        await redis_client.set(names.version("clicks"), "-3")  # versions only grow from 1


async def dump(redis_client: Redis, names: Names) -> tuple[bytes | None, bytes | None]:
    """Both keys of clicks exactly as Redis holds them."""
    return (
        await redis_client.dump(names.value("clicks")),
        await redis_client.dump(names.version("clicks")),
    )


@pytest.mark.parametrize("corruption", ["abc", "list", "bad version", "negative version"])
async def test_a_corrupt_counter_refuses_increments_without_writing_and_heals(
    watcher: Watcher, redis_client: Redis, corruption: str
) -> None:
    service, names = watcher.service, watcher.service.names
    await clicks(watcher, 3)
    await corrupt(redis_client, names, corruption)
    before = await dump(redis_client, names)
    with pytest.raises(CorruptCounter) as refused:
        await service.incr("clicks")
    assert refused.value.key in (names.value("clicks"), names.version("clicks"))
    assert refused.value.key in str(refused.value)
    assert await dump(redis_client, names) == before  # nothing written, not even a version
    await eventually(lambda: watcher.shows("clicks", None), timeout=3 * RECONCILE_S + 5)
    latest = service.latest("clicks")
    assert latest is not None
    assert latest.problem == refused.value.problem  # the reason alone, not the whole error
    assert (await service.incr("views")).value == 1  # other counters carry on
    await eventually(lambda: watcher.shows("views", 1))
    assert service.ready
    await redis_client.delete(names.value("clicks"), names.version("clicks"))  # repaired
    await eventually(lambda: watcher.shows("clicks", 0), timeout=3 * RECONCILE_S + 5)
    assert (await service.incr("clicks")).value == 1
    await eventually(lambda: watcher.shows("clicks", 1))


async def test_changes_missed_while_unsubscribed_are_read_back(
    watcher: Watcher, redis_client: Redis
) -> None:
    assert await redis_client.client_kill_filter(_type="pubsub") == 1
    await clicks(watcher, 3)  # published to nobody, or just before the resubscribe
    await eventually(lambda: watcher.shows("clicks", 3), what="resync after CLIENT KILL")
    assert watcher.service.subscriber.stats.subscribes >= 2


async def test_a_restart_without_persistence_is_followed_down(
    watcher: Watcher, redis_server: RedisProcess
) -> None:
    await clicks(watcher, 5)
    await eventually(lambda: watcher.shows("clicks", 5))
    redis_server.restart()
    await eventually(lambda: watcher.shows("clicks", 0), what="the lower truth after a restart")
    await eventually(lambda: watcher.service.ready, what="ready again")
    await clicks(watcher, 1)
    await eventually(lambda: watcher.shows("clicks", 1))


async def test_a_counter_nobody_watches_is_forgotten(watcher: Watcher) -> None:
    service = watcher.service
    service.watch("likes:post-42")
    await eventually(lambda: watcher.shows("likes:post-42", 0))
    service.unwatch("likes:post-42")
    assert service.latest("likes:post-42") is None
    assert "likes:post-42" not in service.counters.watched
