import asyncio

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from counter_service import CounterEvent, InvalidCounterName, Names, parse_event
from counter_service.devtools.fleet import RedisProcess
from counter_service.redis.store import CounterStore

NAMES = Names("test")


@pytest.fixture
def fake_store() -> CounterStore:
    return CounterStore(fakeredis.FakeAsyncRedis(), NAMES)


async def test_incr_returns_the_new_value_and_version(fake_store: CounterStore) -> None:
    assert await fake_store.incr("clicks") == CounterEvent("clicks", 1, 1)
    assert await fake_store.incr("clicks", 5) == CounterEvent("clicks", 6, 2)
    assert await fake_store.incr("views") == CounterEvent("views", 1, 1)


async def test_snapshot_reads_unset_counters_as_zero(fake_store: CounterStore) -> None:
    await fake_store.incr("clicks")
    assert await fake_store.snapshot(["clicks", "views"]) == [
        CounterEvent("clicks", 1, 1),
        CounterEvent("views", 0, 0),
    ]


async def test_bad_input_is_refused_before_reaching_redis(fake_store: CounterStore) -> None:
    with pytest.raises(InvalidCounterName):
        await fake_store.incr("no such counter")
    with pytest.raises(ValueError, match="64-bit"):
        await fake_store.incr("clicks", 2**63)
    with pytest.raises(ValueError, match="64-bit"):
        await fake_store.incr("clicks", 1.5)  # type: ignore[arg-type]  # wrong on purpose


async def test_fifty_concurrent_incrementers_lose_nothing(redis_server: RedisProcess) -> None:
    clients = [Redis.from_url(redis_server.url) for _ in range(50)]
    listener = Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(NAMES.channel)
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"  # type: ignore[index]
    try:
        stores = [CounterStore(client, NAMES) for client in clients]

        async def hammer(store: CounterStore) -> list[CounterEvent]:
            return [await store.incr("clicks") for _ in range(40)]

        results = await asyncio.gather(*(hammer(store) for store in stores))
        returned = [event for events in results for event in events]
        assert sorted(e.value for e in returned) == list(range(1, 2001))
        assert sorted(e.version for e in returned) == list(range(1, 2001))
        assert await stores[0].snapshot(["clicks"]) == [CounterEvent("clicks", 2000, 2000)]
        published = await _drain(pubsub, 2000)
        by_version = {e.version: e for e in returned}
        assert {e.version: e for e in published} == by_version
    finally:
        await pubsub.aclose()
        await asyncio.gather(listener.aclose(), *(client.aclose() for client in clients))


async def test_values_beyond_float_precision_stay_exact(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    await redis_client.set(NAMES.value("clicks"), 2**62)
    event = await CounterStore(redis_client, NAMES).incr("clicks")
    assert event.value == 2**62 + 1


async def test_the_script_survives_a_flushed_script_cache(redis_client: Redis) -> None:
    store = CounterStore(redis_client, NAMES)
    await store.incr("clicks")
    await redis_client.script_flush()
    assert (await store.incr("clicks")).value == 2


async def test_presence_total_sums_live_workers(redis_client: Redis) -> None:
    store = CounterStore(redis_client, NAMES)
    assert (await store.report_presence("a", 3, 10_000)).value == 3
    total = await store.report_presence("b", 4, 10_000)
    assert total.value == 7
    assert (await store.report_presence("b", 4, 10_000)).version == total.version
    assert (await store.report_presence("a", -1, 10_000)).value == 4


async def test_presence_drops_a_worker_whose_key_expired(redis_client: Redis) -> None:
    store = CounterStore(redis_client, NAMES)
    await store.report_presence("dead", 5, 50)
    await store.report_presence("alive", 2, 10_000)
    await asyncio.sleep(0.1)
    assert (await store.report_presence("alive", 2, 10_000)).value == 2
    assert await redis_client.smembers(NAMES.presence_workers) == {b"alive"}


async def _drain(pubsub: PubSub, count: int) -> list[CounterEvent]:
    events: list[CounterEvent] = []
    while len(events) < count:
        message = await pubsub.get_message(timeout=5)
        assert message is not None, f"only {len(events)} of {count} events were published"
        events.append(parse_event(message["data"]))
    return events
