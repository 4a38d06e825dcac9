import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from counter_service.devtools.fleet import RedisProcess, free_ports
from counter_service.devtools.topologies import (
    ClusterSet,
    ToolMissing,
    create_acl_user,
    with_credentials,
)
from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    InvalidCounterName,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from counter_service.events import CounterEvent, parse_event
from counter_service.names import Names
from counter_service.redis.connections import Connections, connections_for
from counter_service.redis.diagnosis import diagnose
from counter_service.redis.store import CounterStore
from counter_service.settings import Settings
from tests.e2e.test_production_redis import documented_acl_rule

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


def unreachable_sentinels() -> Connections:
    """Connections through two sentinels nobody runs: redis-py's error then quotes the
    repr of each sentinel's client, thousands of characters."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    return connections_for(Settings(redis_url=f"redis+sentinel://{hosts}/mymaster/0"), "t")


async def test_store_errors_quote_redis_on_one_short_line() -> None:
    connections = unreachable_sentinels()
    store = CounterStore(connections.commands, NAMES)
    try:
        failures = []
        for call in (store.incr("clicks"), store.read("clicks"), store.probe("w")):
            with pytest.raises(StoreUnavailable) as caught:
                await call
            failures.append(caught.value)
        with pytest.raises(StoreUnavailable) as caught:
            await store.report_presence("w", -1, 1000)
        failures.append(caught.value)
    finally:
        await connections.aclose()
    for failure in failures:
        assert str(failure).startswith("Redis is unreachable: No master found for 'mymaster'")
        assert len(str(failure)) < 300, str(failure)
        assert "<redis." in str(failure.__cause__)  # what redis-py said is kept whole


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


# Refusals inside the scripts: what Redis said, never a corrupt counter.


async def test_out_of_memory_inside_the_script_is_a_store_error_saying_so(
    store: CounterStore, redis_client: Redis
) -> None:
    await store.incr("clicks")
    await redis_client.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreError, match=r"maxmemory.*\(INCRBY\)"):
            await store.incr("clicks")
    finally:
        await redis_client.config_set("maxmemory", "0")
    assert await redis_client.get(NAMES.value("clicks")) == b"1"


async def test_a_read_only_replica_is_a_store_error_saying_so(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    replica = RedisProcess(tmp_path, args=["--replicaof", "127.0.0.1", str(redis_server.port)])
    client = Redis.from_url(replica.start().url)
    try:
        with pytest.raises(StoreError, match="read only replica"):
            await CounterStore(client, NAMES).incr("clicks")
    finally:
        await client.aclose()
        replica.stop()


@pytest.fixture
async def acl_store(redis_server: RedisProcess) -> AsyncIterator[tuple[CounterStore, Redis]]:
    """A store logged in as a user with the documented rule but INCRBY and WAIT, and an
    admin client to change that user."""
    rule = [t for t in documented_acl_rule() if t != "+incrby"]
    rule = [t.replace("counter-service", NAMES.namespace) for t in rule]
    url = await create_acl_user(redis_server.url, "dora", "pw", rule)
    user, admin = Redis.from_url(url), Redis.from_url(redis_server.url)
    try:
        yield CounterStore(user, NAMES), admin
    finally:
        await user.aclose()
        await admin.aclose()


async def test_a_missing_permission_inside_the_script_names_the_command(
    acl_store: tuple[CounterStore, Redis],
) -> None:
    store, _ = acl_store
    with pytest.raises(StoreError) as caught:
        await store.incr("clicks")
    assert "(INCRBY)" in str(caught.value)
    assert diagnose(caught.value) is not None
    assert "add +incrby to its ACL rule" in str(diagnose(caught.value))


async def test_refusals_are_kept_for_readiness_until_the_call_succeeds_again(
    acl_store: tuple[CounterStore, Redis],
) -> None:
    store, admin = acl_store
    assert (await store.read("clicks")).value == 0
    with pytest.raises(StoreError):
        await store.incr("clicks")
    [error] = store.errors()
    assert "+incrby" in str(diagnose(error))
    await admin.execute_command("ACL", "SETUSER", "dora", "+incrby")
    await store.incr("clicks")
    assert store.errors() == []


async def test_a_refused_wait_is_a_store_error_not_a_missing_replica(
    acl_store: tuple[CounterStore, Redis],
) -> None:
    store, admin = acl_store
    await admin.execute_command("ACL", "SETUSER", "dora", "+incrby")
    waiting = CounterStore(store._client, NAMES, wait_replicas=1, wait_timeout_ms=10)
    with pytest.raises(StoreError) as caught:
        await waiting.incr("clicks")
    assert not isinstance(caught.value, NotReplicated)
    assert "+wait" in str(diagnose(caught.value))


async def test_a_wrong_password_is_a_refusal_not_an_outage(redis_server: RedisProcess) -> None:
    await create_acl_user(redis_server.url, "erin", "right", ["~*", "+@all"])
    client = Redis.from_url(with_credentials(redis_server.url, "erin", "wrong"))
    try:
        with pytest.raises(StoreError) as caught:
            await CounterStore(client, NAMES).incr("clicks")
    finally:
        await client.aclose()
    assert not isinstance(caught.value, StoreUnavailable)
    assert "password" in str(diagnose(caught.value))


async def test_the_probe_runs_every_script_and_touches_no_counter(
    store: CounterStore, redis_client: Redis
) -> None:
    await store.incr("probe", 5)  # a counter that happens to share the probe's hash tag
    before = sorted(await redis_client.keys("*"))
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(NAMES.counter_channel("probe"))
    try:
        await pubsub.get_message(timeout=5)  # the confirmation
        await store.probe("a-probe")
        assert await pubsub.get_message(timeout=0.2) is None  # nothing on counter channels
    finally:
        await pubsub.aclose()
    assert sorted(await redis_client.keys("*")) == before
    assert await store.read("probe") == CounterEvent("probe", 5, 1)


# A slot that migrates: redis-py's own ASK handling, and the store's.


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSet]:
    try:
        topology = ClusterSet(Path(tempfile.mkdtemp(prefix="store-")), replicas_per_master=0)
        topology.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture
async def cluster_client(cluster: ClusterSet) -> AsyncIterator[RedisCluster]:
    seeds = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes]
    client = RedisCluster(startup_nodes=seeds)
    try:
        yield client
    finally:
        await client.aclose()


async def migrating(cluster: ClusterSet, client: RedisCluster, key: str) -> tuple[int, int]:
    """Start moving `key`'s slot, keys and all, to another master, with two idle pooled
    connections to it in `client` (what a busy worker has); (slot, target port)."""
    slot = key_slot(key.encode())
    source = cluster.master_for_slot(slot).port
    target = next(node.port for node in cluster.nodes if node.port != source)
    node = client.get_node(host="127.0.0.1", port=target)
    assert node is not None
    await asyncio.gather(*(client.execute_command("PING", target_nodes=node) for _ in range(2)))
    await asyncio.to_thread(cluster.start_migration, slot, target)
    return slot, target


def test_redis_pys_cluster_nodes_hand_out_another_connection_after_asking() -> None:
    """Pins why `store._on_node` follows ASK itself: redis-py 8.1's asyncio cluster sends
    ASKING with one `execute_command` and the command with the next, and a node hands out
    its longest-idle connection, so with two idle ones the command goes without ASKING.
    When this fails, check whether redis-py's own ASK handling works and drop ours."""
    node = ClusterNode("127.0.0.1", 1)  # nothing connects
    first, second = node.acquire_connection(), node.acquire_connection()
    node.release(first)
    node.release(second)
    asking = node.acquire_connection()
    node.release(asking)
    assert node.acquire_connection() is not asking


async def test_increments_follow_a_slot_while_it_migrates(
    cluster: ClusterSet, cluster_client: RedisCluster
) -> None:
    store = CounterStore(cluster_client, Names("test", sharded=True))
    await store.incr("moving", 5)
    await store.report_presence("w", 1, 10_000)
    slot, target = await migrating(cluster, cluster_client, store._names.value("moving"))
    try:
        assert (await store.incr("moving")).value == 6
        events = await store.incr_many([("moving", 1), ("moving", 1)])  # concurrent calls
        assert sorted(e.value for e in events) == [7, 8]
        assert (await store.read("moving")).value == 8
    finally:
        await asyncio.to_thread(cluster.finish_migration, slot, target)
    assert cluster.master_for_slot(slot).port == target
    assert (await store.incr("moving")).value == 9


async def test_a_login_failure_is_forgotten_once_any_call_gets_through(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    url = await create_acl_user(redis_server.url, "finn", "pw", ["~*", "&*", "+@all"])
    client = Redis.from_url(url)
    store = CounterStore(client, NAMES)
    try:
        await store.read("clicks")
        await redis_client.execute_command("ACL", "SETUSER", "finn", "resetpass", ">new")
        await redis_client.client_kill_filter(user="finn")
        for _ in range(2):  # the first may find its pooled connection closed
            with pytest.raises(StoreError):
                await store.read("clicks")
        [error] = store.errors()
        assert "password" in str(diagnose(error))
        await redis_client.execute_command("ACL", "SETUSER", "finn", "resetpass", ">pw")
        await store.report_presence("w", 1, 10_000)  # not a read: it logged in all the same
        assert store.errors() == []
    finally:
        await client.aclose()
