import asyncio
import time
from pathlib import Path

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from counter_service.devtools.fleet import RedisProcess
from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    InvalidCounterName,
    NotReplicated,
    StoreUnavailable,
)
from counter_service.events import CounterEvent, parse_event
from counter_service.names import Names
from counter_service.redis.store import CounterStore

NAMES = Names("test")


@pytest.fixture
def fake_store() -> CounterStore:
    return CounterStore(fakeredis.FakeAsyncRedis(), NAMES)


@pytest.fixture
def store(redis_client: Redis) -> CounterStore:
    return CounterStore(redis_client, NAMES)


async def test_incr_returns_the_new_value_and_version(fake_store: CounterStore) -> None:
    assert await fake_store.incr("clicks") == CounterEvent("clicks", 1, 1)
    assert await fake_store.incr("clicks", 5) == CounterEvent("clicks", 6, 2)
    assert await fake_store.incr("likes:post-42", -2) == CounterEvent("likes:post-42", -2, 1)


async def test_read_many_reads_unset_counters_as_zero(fake_store: CounterStore) -> None:
    await fake_store.incr("clicks")
    assert await fake_store.read_many(["clicks", "views"]) == [
        CounterEvent("clicks", 1, 1),
        CounterEvent("views", 0, 0),
    ]


async def test_bad_input_is_refused_before_reaching_redis(fake_store: CounterStore) -> None:
    with pytest.raises(InvalidCounterName):
        await fake_store.incr("no such counter")
    with pytest.raises(InvalidCounterName):
        await fake_store.incr("{clicks}")  # braces would break the cluster hash tag
    with pytest.raises(ValueError, match="64-bit"):
        await fake_store.incr("clicks", 2**63)
    with pytest.raises(ValueError, match="64-bit"):
        await fake_store.incr("clicks", 1.5)  # type: ignore[arg-type]  # wrong on purpose


async def test_fifty_concurrent_incrementers_lose_nothing(redis_server: RedisProcess) -> None:
    clients = [Redis.from_url(redis_server.url) for _ in range(50)]
    listener = Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(NAMES.counter_channel("clicks"))
    assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"  # type: ignore[index]
    try:
        stores = [CounterStore(client, NAMES) for client in clients]

        async def hammer(store: CounterStore) -> list[CounterEvent]:
            return [await store.incr("clicks") for _ in range(40)]

        results = await asyncio.gather(*(hammer(store) for store in stores))
        returned = [event for events in results for event in events]
        assert sorted(e.value for e in returned) == list(range(1, 2001))
        assert sorted(e.version for e in returned) == list(range(1, 2001))
        assert await stores[0].read("clicks") == CounterEvent("clicks", 2000, 2000)
        published = await _drain(pubsub, 2000)
        assert {e.version: e for e in published} == {e.version: e for e in returned}
    finally:
        await pubsub.aclose()
        await asyncio.gather(listener.aclose(), *(client.aclose() for client in clients))


async def test_events_carry_redis_time_of_publication(
    store: CounterStore, redis_client: Redis
) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(NAMES.counter_channel("clicks"))
    try:
        await pubsub.get_message(timeout=5)
        await store.incr("clicks")
        [event] = await _drain(pubsub, 1)
        assert event.published_ms is not None
        assert abs(event.published_ms / 1000 - time.time()) < 60  # same clock, same machine
    finally:
        await pubsub.aclose()


async def test_values_beyond_float_precision_stay_exact(
    store: CounterStore, redis_client: Redis
) -> None:
    await redis_client.set(NAMES.value("clicks"), 2**62)
    assert (await store.incr("clicks")).value == 2**62 + 1


async def test_the_script_survives_a_flushed_script_cache(
    store: CounterStore, redis_client: Redis
) -> None:
    await store.incr("clicks")
    await redis_client.script_flush()
    assert (await store.incr("clicks")).value == 2


def test_keys_of_one_counter_share_a_cluster_slot() -> None:
    for name in ("clicks", "likes:post-42", "a.b-c_d"):
        assert key_slot(NAMES.value(name).encode()) == key_slot(NAMES.version(name).encode())
    assert key_slot(NAMES.value("a").encode()) != key_slot(NAMES.value("b").encode())


CORRUPTIONS = [
    ("value", "set", "abc", 'holds "abc", not an integer'),
    ("value", "set", "1.5", 'holds "1.5", not an integer'),
    ("value", "set", "99999999999999999999", "outside a 64-bit integer"),
    ("value", "set", "9223372036854775808", "outside a 64-bit integer"),
    ("value", "set", "-9223372036854775809", "outside a 64-bit integer"),
    ("value", "rpush", "1", "holds a list, not a counter"),
    ("version", "set", "x1", 'holds "x1", not an integer'),
    ("version", "set", "-3", 'holds "-3", not an integer'),
    ("version", "hset", "f", "holds a hash, not a counter"),
]


@pytest.mark.parametrize(("which", "command", "content", "problem"), CORRUPTIONS)
async def test_a_corrupt_key_fails_the_increment_without_writing_anything(
    store: CounterStore, redis_client: Redis, which: str, command: str, content: str, problem: str
) -> None:
    await store.incr("clicks", 7)
    key = NAMES.value("clicks") if which == "value" else NAMES.version("clicks")
    await redis_client.delete(key)
    if command == "hset":
        await redis_client.hset(key, "field", content)
    else:
        await redis_client.execute_command(command.upper(), key, content)
    before = {
        k: await redis_client.dump(k) for k in (NAMES.value("clicks"), NAMES.version("clicks"))
    }
    with pytest.raises(CorruptCounter) as caught:
        await store.incr("clicks")
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert key in str(caught.value)
    after = {k: await redis_client.dump(k) for k in before}
    assert after == before
    [read] = await store.read_many(["clicks"])
    assert isinstance(read, CorruptCounter)
    assert await store.incr("views") == CounterEvent("views", 1, 1)  # others unaffected


async def test_repairing_a_corrupt_key_heals_the_counter(
    store: CounterStore, redis_client: Redis
) -> None:
    await redis_client.set(NAMES.value("clicks"), "abc")
    with pytest.raises(CorruptCounter):
        await store.incr("clicks")
    await redis_client.set(NAMES.value("clicks"), "41")
    assert (await store.incr("clicks")).value == 42


async def test_an_overflow_is_refused_without_writing(
    store: CounterStore, redis_client: Redis
) -> None:
    await redis_client.set(NAMES.value("clicks"), 2**63 - 1)
    with pytest.raises(CounterOverflow):
        await store.incr("clicks")
    assert await redis_client.get(NAMES.value("clicks")) == str(2**63 - 1).encode()
    assert await redis_client.get(NAMES.version("clicks")) is None


async def test_an_unreachable_redis_raises_store_unavailable(redis_server: RedisProcess) -> None:
    client = Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    store = CounterStore(client, NAMES)
    await store.incr("clicks")
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.incr("clicks")
        with pytest.raises(StoreUnavailable):
            await store.read_many(["clicks"])
    finally:
        await client.aclose()


async def test_presence_total_sums_live_workers(store: CounterStore) -> None:
    assert (await store.report_presence("a", 3, 10_000)).value == 3
    total = await store.report_presence("b", 4, 10_000)
    assert total.value == 7
    assert (await store.report_presence("b", 4, 10_000)).version == total.version
    assert (await store.report_presence("a", -1, 10_000)).value == 4


async def test_presence_drops_a_worker_whose_key_expired(
    store: CounterStore, redis_client: Redis
) -> None:
    await store.report_presence("dead", 5, 50)
    await store.report_presence("alive", 2, 10_000)
    await asyncio.sleep(0.1)
    assert (await store.report_presence("alive", 2, 10_000)).value == 2
    assert await redis_client.hkeys(NAMES.presence) == [b"alive"]


async def test_presence_repairs_its_own_corrupt_keys(
    store: CounterStore, redis_client: Redis
) -> None:
    await redis_client.set(NAMES.value("online"), "abc")
    await redis_client.rpush(NAMES.version("online"), "x")
    await redis_client.hset(NAMES.presence, "forged", "not a count")
    assert (await store.report_presence("a", 3, 10_000)).value == 3
    assert await store.read("online") == CounterEvent("online", 3, 1)


async def _drain(pubsub: PubSub, count: int) -> list[CounterEvent]:
    events: list[CounterEvent] = []
    while len(events) < count:
        message = await pubsub.get_message(timeout=5)
        assert message is not None, f"only {len(events)} of {count} events were published"
        if message["type"] == "message":
            events.append(parse_event(message["data"]))
    return events


async def test_wait_acknowledges_only_what_a_replica_has(tmp_path: Path) -> None:
    # A master otherwise waits 5 s for more replicas before it starts a sync.
    master = RedisProcess(tmp_path, args=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisProcess(tmp_path, args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    client = Redis.from_url(master.url)
    try:
        replicas: dict[str, object] = {}

        async def online() -> bool:
            replicas.update(await client.info("replication"))
            return "online" in str(replicas.get("slave0"))

        for _ in range(400):  # until the master counts the replica as in sync
            if await online():
                break
            await asyncio.sleep(0.05)
        assert await online(), replicas
        # A deadline for correctness on a loaded machine, not a speed claim.
        patient = CounterStore(client, NAMES, wait_replicas=1, wait_timeout_ms=10_000)
        assert (await patient.incr("clicks")).value == 1
        replica.stop()
        store = CounterStore(client, NAMES, wait_replicas=1, wait_timeout_ms=200)
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            await store.incr("clicks")
        assert await client.get(NAMES.value("clicks")) == b"2"  # it counted on the master
    finally:
        await client.aclose()
        replica.stop()
        master.stop()
