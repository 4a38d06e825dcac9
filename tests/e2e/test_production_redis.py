"""Two real workers on production Redis topologies: Sentinel with a failover, a Cluster with
sharded pub/sub and a failover, a least-privilege ACL user, and TLS."""

import asyncio
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoPermissionError

from counter_service.devtools.fleet import RedisProcess, ServerProcess
from counter_service.devtools.headless import FletError, HeadlessSession
from counter_service.devtools.topologies import (
    Certificates,
    ClusterSet,
    SentinelSet,
    TlsRedis,
    ToolMissing,
    create_acl_user,
    create_cluster_acl_user,
    make_certificates,
    probe,
)
from counter_service.names import ONLINE, Names
from counter_service.settings import DEFAULT_NAMESPACE
from tests.e2e.apps.pubsub_app import COUNTERS
from tests.support import eventually

pytestmark = pytest.mark.e2e

WAIT_S = 45.0
APP = "tests.e2e.apps.pubsub_app:app"
NAMES = Names(DEFAULT_NAMESPACE)
SHARDED = Names(DEFAULT_NAMESPACE, sharded=True)
README = Path(__file__).resolve().parents[2] / "README.md"
# Pages converge through pub/sub and the read-backs after a re-subscribe, not through the
# periodic reconciliation (10 s by default): a test must not pass because of it.
NO_RECONCILE = {"COUNTER_RECONCILE_S": "3600"}


@contextlib.contextmanager
def workers(
    log_dir: Path, url: str, env: dict[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """Two workers of the pubsub test app on `url`, always stopped."""
    servers = [ServerProcess(log_dir, url, extra_env=env, app=APP) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


class Peer:
    """A session of the test app: commands, counters shown, messages received."""

    def __init__(self, session: HeadlessSession) -> None:
        self.session = session
        self.commands = 0

    async def run(self, op: str, **args: Any) -> None:
        self.commands += 1
        await self.session.trigger("cmd", "click", json.dumps({"op": op, **args}))
        done = str(self.commands)
        await self.session.wait_for(lambda s: s.value("done") == done, WAIT_S)

    def shows(self, name: str) -> int | None:
        return self.session.int_value(name)

    def log(self) -> list[Any]:
        return list(json.loads(str(self.session.value("log") or "[]")))


async def peers_on(servers: list[ServerProcess], per_server: int = 2) -> list[Peer]:
    """`per_server` sessions on each server, each showing every counter of the app."""
    urls = [s.url for s in servers] * per_server
    sessions = [await HeadlessSession.connect(url) for url in urls]
    for session in sessions:
        await session.wait_for(lambda s: s.value("done") is not None, WAIT_S)
    return [Peer(s) for s in sessions]


async def converge(peers: list[Peer], name: str, value: int) -> None:
    await asyncio.gather(
        *(p.session.wait_for(lambda _s, p=p: p.shows(name) == value, WAIT_S) for p in peers)
    )


def ready(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=2) as response:
            return response.status, dict(json.load(response))
    except urllib.error.HTTPError as error:
        return error.code, dict(json.load(error))


@contextlib.asynccontextmanager
async def sessions_of(
    servers: list[ServerProcess], per_server: int = 2
) -> AsyncIterator[list[Peer]]:
    peers = await peers_on(servers, per_server)
    try:
        yield peers
    finally:
        await asyncio.gather(*(p.session.close() for p in peers))


# Sentinel


async def click_until(peers: list[Peer], stop: asyncio.Event) -> None:
    """Every peer increments c0 every 20 ms until `stop`; failures are expected while
    the master is down."""

    async def one(peer: Peer) -> None:
        while not stop.is_set():
            with contextlib.suppress(FletError, TimeoutError):
                await peer.session.trigger("cmd", "click", json.dumps({"op": "incr", "name": "c0"}))
            await asyncio.sleep(0.02)

    await asyncio.gather(*(one(p) for p in peers))


async def test_sentinel_failover_converges_every_session_without_a_restart(
    tmp_path: Path,
) -> None:
    sentinels = SentinelSet(tmp_path)
    await asyncio.to_thread(sentinels.start)
    try:
        with workers(tmp_path, sentinels.url, NO_RECONCILE) as servers:
            pids = [s.pid for s in servers]
            async with sessions_of(servers) as peers:
                stop = asyncio.Event()
                clicking = asyncio.ensure_future(click_until(peers, stop))
                await peers[0].session.wait_for(lambda _s: (peers[0].shows("c0") or 0) > 20, WAIT_S)
                answers: list[tuple[int, dict[str, Any]]] = []
                await asyncio.to_thread(sentinels.kill_master)
                watching = asyncio.ensure_future(_watch_readiness(servers[0], answers))
                new_port = await asyncio.to_thread(sentinels.wait_for_failover)
                await eventually(lambda: all(ready(s)[0] == 200 for s in servers), WAIT_S, "ready")
                await asyncio.sleep(0.5)
                stop.set()
                await clicking
                watching.cancel()
                truth = await _value_on(new_port, "c0")
                await converge(peers, "c0", truth)
                # Readiness told the truth while no master answered, and claimed no
                # configuration error during the switch.
                assert 503 in [status for status, _ in answers]
                assert not [body for _, body in answers if "redis_configuration" in body]
            assert [s.pid for s in servers] == pids  # no worker was restarted
            assert all(s.running for s in servers)
    finally:
        await asyncio.to_thread(sentinels.stop)


async def _watch_readiness(server: ServerProcess, into: list[tuple[int, dict[str, Any]]]) -> None:
    while True:
        into.append(await asyncio.to_thread(ready, server))
        await asyncio.sleep(0.1)


async def _value_on(port: int, name: str) -> int:
    client = Redis(host="127.0.0.1", port=port)
    try:
        return int(await client.get(NAMES.value(name)) or 0)
    finally:
        await client.aclose()


# Cluster


def spread(cluster: ClusterSet, keys: dict[str, str]) -> dict[str, int]:
    """The port of the master that holds each key."""
    return {name: cluster.master_for_key(key).port for name, key in keys.items()}


async def test_a_cluster_as_the_documented_user_survives_a_slot_migration_and_a_failover(
    tmp_path: Path,
) -> None:
    cluster = ClusterSet(tmp_path, masters=3, replicas_per_master=1)
    await asyncio.to_thread(cluster.start)
    topics = [f"t{i}" for i in range(6)]
    try:
        counter_masters = spread(cluster, {c: SHARDED.value(c) for c in COUNTERS})
        topic_masters = spread(cluster, {t: SHARDED.topic_channel(t) for t in topics})
        assert len(set(counter_masters.values())) >= 2
        assert len(set(topic_masters.values())) >= 2
        _, rule = documented_acl_rules()
        url = await create_cluster_acl_user(cluster, "counter-service", "s3cret", rule)
        with workers(tmp_path, url, NO_RECONCILE) as servers:
            async with sessions_of(servers) as peers:
                await _exchange(cluster, peers, topics, round_=1)
                await _count(peers, cluster, expected=1)
                await _migrate_during_clicks(cluster, peers, "c1")
                victim = await asyncio.to_thread(cluster.kill_master_of, SHARDED.value("c0"))
                await asyncio.to_thread(cluster.wait_for_promotion)
                await eventually(lambda: all(ready(s)[0] == 200 for s in servers), WAIT_S, "ready")
                await _count(peers, cluster, expected=2, moved=("c1",))
                await _exchange(cluster, peers, topics, round_=2)
                assert victim.port == counter_masters["c0"]
                async with sessions_of(servers, per_server=8):  # more sessions than connections
                    await _connections_are_bounded_by_shards(cluster)
        _keys_share_a_slot(cluster, SHARDED)
        await _refused_beyond_its_rule(cluster, url)
    finally:
        await asyncio.to_thread(cluster.stop)


async def _migrate_during_clicks(cluster: ClusterSet, peers: list[Peer], name: str) -> None:
    """Move `name`'s slot, keys and all, to another master while a session increments it
    (redirected with ASK meanwhile); once the slot has changed hands, every session shows
    the store's value: Redis dropped the slot's subscriptions, and the relay read back."""
    slot = key_slot(SHARDED.value(name).encode())
    source = cluster.master_for_slot(slot).port
    masters = {cluster.master_for_slot(first).port for first in (0, 8000, 16000)}
    target = next(port for port in masters if port != source)
    await asyncio.to_thread(cluster.start_migration, slot, target)
    await peers[0].run("incr", name=name)
    assert not peers[0].session.value("error")  # the ASK redirect was followed
    await asyncio.to_thread(cluster.finish_migration, slot, target)
    assert cluster.master_for_slot(slot).port == target
    stored = await _stored(cluster, name)
    assert stored == 2
    await converge(peers, name, stored)


async def _stored(cluster: ClusterSet, name: str) -> int:
    nodes = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.running]
    client = RedisCluster(startup_nodes=nodes)
    try:
        return int(await client.get(SHARDED.value(name)) or 0)
    finally:
        await client.aclose()


async def _exchange(cluster: ClusterSet, peers: list[Peer], topics: list[str], round_: int) -> None:
    """Every peer listens to every topic; each topic gets one message; all arrive."""
    for peer in peers:
        for topic in topics:
            await peer.run("subscribe_topic", topic=topic)
    # A topic subscription takes effect once Redis confirmed it (README): wait for that.
    channels = [SHARDED.topic_channel(t) for t in topics]
    await eventually(lambda: _subscribers(cluster, channels) >= 2, WAIT_S, "subscribed")
    for i, topic in enumerate(topics):
        await peers[i % len(peers)].run("send_all_on_topic", topic=topic, message=round_)
    for peer in peers:
        await peer.session.wait_for(
            lambda _s, p=peer: all([t, round_] in p.log() for t in topics), WAIT_S
        )


def _subscribers(cluster: ClusterSet, channels: list[str]) -> int:
    """The fewest workers subscribed to any of `channels` (asked of their shards)."""
    counts = [
        probe(cluster.master_for_key(c).port, "PUBSUB", "SHARDNUMSUB", c, tls=cluster.certs)[1]
        for c in channels
    ]
    return min(counts, default=0)


async def _count(
    peers: list[Peer], cluster: ClusterSet, expected: int, moved: tuple[str, ...] = ()
) -> None:
    """Each peer increments one counter once per call: every counter reaches
    `expected` times its share (one more for those `moved` while clicked) on every
    session, equal to the store."""
    for i, peer in enumerate(peers):
        for name in COUNTERS[i :: len(peers)]:
            await peer.run("incr", name=name)
    for name in COUNTERS:
        stored = await _stored(cluster, name)
        assert stored == expected + (name in moved)
        await converge(peers, name, stored)


# Per node and worker, whatever the number of sessions: one relay connection; the commands
# pool (max_connections 2, plus 3 that cannot wait for it: presence, publisher, PING); one
# connection that maps channels to shards. redis-py adds one to each client on the node it
# mapped the cluster from (its startup node object keeps its own connection).
BOUNDS = {"relay": 1, "commands": 2 + 3 + 1, "slots": 1 + 1}


async def _connections_are_bounded_by_shards(cluster: ClusterSet) -> None:
    """No worker holds more connections to any node than `BOUNDS`."""
    for node in cluster.nodes:
        if not node.running:
            continue
        client = Redis(host="127.0.0.1", port=node.port)
        try:
            names = [c["name"] for c in await client.client_list() if c["name"].startswith("cs:")]
        finally:
            await client.aclose()
        kinds: dict[tuple[str, str], int] = {}
        for name in names:
            worker, _, kind = name.rpartition(":")
            kinds[worker, kind] = kinds.get((worker, kind), 0) + 1
        over = {k: n for k, n in kinds.items() if n > BOUNDS[k[1]]}
        assert not over, over


async def _refused_beyond_its_rule(cluster: ClusterSet, url: str) -> None:
    nodes = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.running]
    user = RedisCluster(startup_nodes=nodes, username="counter-service", password="s3cret")
    try:
        with pytest.raises(NoPermissionError):
            await user.flushall()
        with pytest.raises(NoPermissionError):
            await user.get("another-app:{secret}")
        with pytest.raises(NoPermissionError):
            await user.set("another-app:{secret}", "x")
        with pytest.raises(NoPermissionError):
            await user.execute_command("SPUBLISH", "another-app:{events}", "x")
        assert await user.get(SHARDED.value("c0"))  # its own keys it reads
    finally:
        await user.aclose()
    assert url.startswith("redis+cluster://counter-service:s3cret@")


def _keys_share_a_slot(cluster: ClusterSet, names: Names) -> None:
    node = next(n for n in cluster.nodes if n.running)
    client = SyncRedis(host="127.0.0.1", port=node.port)
    try:
        for counter in COUNTERS:
            slots = {
                client.execute_command("CLUSTER KEYSLOT", key)
                for key in (
                    names.value(counter),
                    names.version(counter),
                    names.counter_channel(counter),
                )
            }
            assert slots == {key_slot(names.value(counter).encode())}
    finally:
        client.close()


# ACL


PLAIN_NEEDS = [
    *("+ping", "+client|setname", "+select", "+evalsha", "+script|load", "+script|exists"),
    *("+publish", "+subscribe", "+get", "+set", "+del", "+type", "+incr", "+incrby"),
    *("+time", "+hset", "+hdel", "+hgetall"),
]
"""Every command a single server's (or Sentinel's master's) user needs, and nothing more."""
CLUSTER_NEEDS = [
    *("+ping", "+client|setname", "+evalsha", "+script|load", "+spublish", "+ssubscribe"),
    *("+sunsubscribe", "+get", "+set", "+del", "+type", "+incr", "+incrby", "+time"),
    *("+hset", "+hdel", "+hgetall", "+cluster|slots", "+command", "+asking"),
]
"""The same on a cluster: sharded pub/sub, no SELECT, no pipelined scripts, and what
redis-py needs to map the cluster and follow a slot's keys while they move (ASKING)."""


def documented_acl_rules() -> tuple[list[str], list[str]]:
    """The ACL rules as the README gives them (single server, cluster), without the user
    name and password."""
    lines = [line for line in README.read_text().splitlines() if line.startswith("ACL SETUSER ")]
    plain, cluster = ([t for t in line.split()[3:] if not t.startswith(">")] for line in lines)
    return plain, cluster


def documented_acl_rule() -> list[str]:
    """The single-server ACL rule as the README gives it."""
    return documented_acl_rules()[0]


def test_the_documented_rules_grant_exactly_the_commands_the_service_needs() -> None:
    plain, cluster = documented_acl_rules()
    namespace = [f"~{DEFAULT_NAMESPACE}:*", f"&{DEFAULT_NAMESPACE}:*"]
    for rule, needs in ((plain, PLAIN_NEEDS), (cluster, CLUSTER_NEEDS)):
        assert sorted(t for t in rule if t.startswith("+")) == sorted(needs)
        assert [t for t in rule if t[0] in "~&"] == namespace
        assert {"resetkeys", "resetchannels", "-@all"} <= set(rule)


async def test_the_documented_acl_rule_is_enough_and_no_more(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    admin = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/1")
    # A presence hash that is not one: presence repairs it, which takes +del.
    await admin.set(NAMES.presence, "not a hash")
    url = await create_acl_user(
        redis_server.url, "counter-service", "s3cret", documented_acl_rule()
    )
    url = url.rsplit("/", 1)[0] + "/1"  # a database other than 0 takes +select
    try:
        with workers(tmp_path, url) as servers:
            async with sessions_of(servers) as peers:
                await peers[0].run("incr", name="c1")
                await converge(peers, "c1", 1)
                for peer in peers:
                    await peer.run("subscribe_topic", topic="news")
                await peers[1].run("send_all_on_topic", topic="news", message="hi")
                for peer in peers:
                    await peer.session.wait_for(
                        lambda _s, p=peer: ["news", "hi"] in p.log(), WAIT_S
                    )
                await _eventually_online(admin, len(peers))  # presence: HSET, HGETALL, SET
        assert await admin.hlen(NAMES.presence) == 0  # each worker left presence: HDEL
    finally:
        await admin.aclose()
    await _refused_beyond(url)


async def _eventually_online(admin: Redis, expected: int) -> None:
    async def online() -> int:
        return int(await admin.get(NAMES.value(ONLINE)) or 0)

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (seen := await online()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"online is {seen}, not {expected}"
        await asyncio.sleep(0.05)


async def _refused_beyond(url: str) -> None:
    user = Redis.from_url(url)
    try:
        with pytest.raises(NoPermissionError):
            await user.flushall()
        with pytest.raises(NoPermissionError):
            await user.get("another-app:secret")
        with pytest.raises(NoPermissionError):
            await user.set("another-app:secret", "x")
        with pytest.raises(NoPermissionError):
            await user.publish("another-app:events", "x")
    finally:
        await user.aclose()


# TLS


@pytest.fixture
def certificates(tmp_path: Path) -> Any:
    try:
        return make_certificates(tmp_path / "certs")
    except ToolMissing as exc:
        pytest.skip(str(exc))


async def test_rediss_with_a_custom_ca_and_a_client_certificate(
    tmp_path: Path, certificates: Any
) -> None:
    server = TlsRedis(tmp_path, certificates, require_client_cert=True).start()
    try:
        with workers(tmp_path, server.url, tls_env(certificates)) as servers:
            async with sessions_of(servers) as peers:
                await peers[0].run("incr", name="c2")
                await converge(peers, "c2", 1)
    finally:
        server.stop()


async def test_rediss_cluster_with_the_tls_options_in_the_url(
    tmp_path: Path, certificates: Any
) -> None:
    cluster = ClusterSet(tmp_path, masters=3, replicas_per_master=0, certs=certificates)
    await asyncio.to_thread(cluster.start)
    query = urllib.parse.urlencode(
        {
            "ssl_ca_certs": certificates.ca_cert,
            "ssl_certfile": certificates.client_cert,
            "ssl_keyfile": certificates.client_key,
        }
    )
    try:
        assert cluster.url.startswith("rediss+cluster://")
        with workers(tmp_path, f"{cluster.url}?{query}", NO_RECONCILE) as servers:
            async with sessions_of(servers, per_server=1) as peers:
                await peers[0].run("incr", name="c3")
                await converge(peers, "c3", 1)
                for peer in peers:
                    await peer.run("subscribe_topic", topic="tls")
                await eventually(
                    lambda: _subscribers(cluster, [SHARDED.topic_channel("tls")]) >= 2,
                    WAIT_S,
                    "subscribed",
                )
                await peers[1].run("send_all_on_topic", topic="tls", message="sealed")
                for peer in peers:
                    await peer.session.wait_for(
                        lambda _s, p=peer: ["tls", "sealed"] in p.log(), WAIT_S
                    )
    finally:
        await asyncio.to_thread(cluster.stop)


def tls_env(certificates: Certificates) -> dict[str, str]:
    return {
        "COUNTER_TLS_CA_FILE": str(certificates.ca_cert),
        "COUNTER_TLS_CERT_FILE": str(certificates.client_cert),
        "COUNTER_TLS_KEY_FILE": str(certificates.client_key),
    }


async def test_rediss_sentinel_follows_a_failover_with_verification_and_a_client_certificate(
    tmp_path: Path, certificates: Certificates
) -> None:
    """Every process of the set speaks TLS only and wants a client certificate: the
    sentinels (asked over TLS for the master) as much as the master and its replica."""
    sentinels = SentinelSet(tmp_path, certs=certificates)
    await asyncio.to_thread(sentinels.start)
    try:
        assert sentinels.url.startswith("rediss+sentinel://")
        env = {**NO_RECONCILE, **tls_env(certificates)}
        with workers(tmp_path, sentinels.url, env) as servers:
            async with sessions_of(servers, per_server=1) as peers:
                await peers[0].run("incr", name="c4")
                await converge(peers, "c4", 1)
                await asyncio.to_thread(sentinels.kill_master)
                new_port = await asyncio.to_thread(sentinels.wait_for_failover)
                await eventually(lambda: all(ready(s)[0] == 200 for s in servers), WAIT_S, "ready")
                await peers[1].run("incr", name="c4")
                assert not peers[1].session.value("error")
                stored = probe(new_port, "GET", NAMES.value("c4"), tls=certificates)
                assert int(stored) >= 1  # 2, unless the first was not replicated in time
                await converge(peers, "c4", int(stored))
    finally:
        await asyncio.to_thread(sentinels.stop)
