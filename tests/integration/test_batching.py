import asyncio
from collections.abc import Sequence

import fakeredis
import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import RedisProcess
from counter_service.errors import Busy, CorruptCounter, InvalidCounterName, StoreUnavailable
from counter_service.events import CounterEvent
from counter_service.names import Names
from counter_service.redis.batching import IncrementBatcher
from counter_service.redis.store import CounterStore

NAMES = Names("batchtest")


class CountingStore(CounterStore):
    def __init__(self, client: Redis) -> None:
        super().__init__(client, NAMES)
        self.batches: list[int] = []

    async def incr_many(self, items: Sequence[tuple[str, int]]) -> list[CounterEvent | Exception]:
        self.batches.append(len(items))
        return await super().incr_many(items)


async def test_a_burst_shares_round_trips_and_every_caller_gets_its_own_result() -> None:
    store = CountingStore(fakeredis.FakeAsyncRedis())
    batcher = IncrementBatcher(store, max_batch=40)
    events = await asyncio.gather(*(batcher.incr("clicks") for _ in range(100)))
    assert sorted(e.version for e in events) == list(range(1, 101))
    assert all(e.value == e.version for e in events)
    assert store.batches == [40, 40, 20]  # every caller queued before the first batch left
    await batcher.incr("views")
    assert store.batches[-1] == 1  # alone, an increment goes out at once


async def test_bad_input_fails_only_its_own_caller() -> None:
    batcher = IncrementBatcher(CounterStore(fakeredis.FakeAsyncRedis(), NAMES))
    good, bad, also_good = await asyncio.gather(
        batcher.incr("clicks"),
        batcher.incr("Not A Name"),
        batcher.incr("clicks"),
        return_exceptions=True,
    )
    assert isinstance(bad, InvalidCounterName)
    assert {good, also_good} == {CounterEvent("clicks", 1, 1), CounterEvent("clicks", 2, 2)}


async def test_a_redis_error_on_one_increment_stays_with_it(redis_client: Redis) -> None:
    await redis_client.hset(NAMES.value("views"), "not", "a number")
    batcher = IncrementBatcher(CounterStore(redis_client, NAMES))
    first, broken, last = await asyncio.gather(
        batcher.incr("clicks"),
        batcher.incr("views"),
        batcher.incr("clicks"),
        return_exceptions=True,
    )
    assert isinstance(broken, CorruptCounter)
    assert {first, last} == {CounterEvent("clicks", 1, 1), CounterEvent("clicks", 2, 2)}


async def test_a_dead_connection_fails_the_batch_and_later_batches_recover(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    batcher = IncrementBatcher(CounterStore(redis_client, NAMES))
    await batcher.incr("clicks")
    redis_server.stop()
    results = await asyncio.gather(
        *(batcher.incr("clicks") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    redis_server.start()
    assert (await batcher.incr("clicks")).value == 1  # a fresh, empty Redis


async def test_stop_fails_waiting_callers() -> None:
    store = CounterStore(fakeredis.FakeAsyncRedis(), NAMES)
    batcher = IncrementBatcher(store)
    waiting = [asyncio.ensure_future(batcher.incr("clicks")) for _ in range(3)]
    await asyncio.sleep(0)
    await batcher.stop()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results), results


async def test_fifty_concurrent_callers_through_one_batcher_lose_nothing(
    redis_client: Redis,
) -> None:
    batcher = IncrementBatcher(CounterStore(redis_client, NAMES))

    async def caller() -> list[CounterEvent]:
        return [await batcher.incr("clicks") for _ in range(40)]

    events = [e for batch in await asyncio.gather(*(caller() for _ in range(50))) for e in batch]
    assert sorted(e.version for e in events) == list(range(1, 2001))
    assert await redis_client.get(NAMES.value("clicks")) == b"2000"


@pytest.mark.parametrize("amount", [0, 5, -2])
async def test_amounts_other_than_one_are_applied(amount: int) -> None:
    batcher = IncrementBatcher(CounterStore(fakeredis.FakeAsyncRedis(), NAMES))
    assert (await batcher.incr("clicks", amount)).value == amount


async def test_over_the_bound_an_increment_is_refused_at_once_not_queued() -> None:
    store = CountingStore(fakeredis.FakeAsyncRedis())
    batcher = IncrementBatcher(store, max_batch=10, max_pending=25)
    accepted = [asyncio.ensure_future(batcher.incr("clicks")) for _ in range(25)]
    await asyncio.sleep(0)  # all 25 are pending or in flight now
    with pytest.raises(Busy, match="refused"):
        await batcher.incr("clicks")
    events = await asyncio.gather(*accepted)
    assert sorted(e.value for e in events) == list(range(1, 26))
    assert batcher.pending == 0
    assert (await batcher.incr("clicks")).value == 26  # the bound is about now, not ever
