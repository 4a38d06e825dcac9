"""Two real workers on production Redis topologies: Sentinel with a failover, a Cluster with
sharded pub/sub and a failover, a least-privilege ACL user, and TLS."""

import asyncio
import contextlib
import json
import urllib.error
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
    ClusterSet,
    SentinelSet,
    TlsRedis,
    ToolMissing,
    create_acl_user,
    make_certificates,
)
from counter_service.names import Names
from counter_service.settings import DEFAULT_NAMESPACE
from tests.e2e.apps.pubsub_app import COUNTERS
from tests.support import eventually

pytestmark = pytest.mark.e2e

WAIT_S = 45.0
APP = "tests.e2e.apps.pubsub_app:app"
NAMES = Names(DEFAULT_NAMESPACE)
README = Path(__file__).resolve().parents[2] / "README.md"


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
async def sessions_of(servers: list[ServerProcess]) -> AsyncIterator[list[Peer]]:
    peers = await peers_on(servers)
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
        with workers(tmp_path, sentinels.url) as servers:
            pids = [s.pid for s in servers]
            async with sessions_of(servers) as peers:
                stop = asyncio.Event()
                clicking = asyncio.ensure_future(click_until(peers, stop))
                await peers[0].session.wait_for(lambda _s: (peers[0].shows("c0") or 0) > 20, WAIT_S)
                statuses: list[int] = []
                await asyncio.to_thread(sentinels.kill_master)
                watching = asyncio.ensure_future(_watch_readiness(servers[0], statuses))
                new_port = await asyncio.to_thread(sentinels.wait_for_failover)
                await eventually(lambda: all(ready(s)[0] == 200 for s in servers), WAIT_S, "ready")
                await asyncio.sleep(0.5)
                stop.set()
                await clicking
                watching.cancel()
                truth = await _value_on(new_port, "c0")
                await converge(peers, "c0", truth)
                assert 503 in statuses  # readiness told the truth while no master answered
            assert [s.pid for s in servers] == pids  # no worker was restarted
            assert all(s.running for s in servers)
    finally:
        await asyncio.to_thread(sentinels.stop)


async def _watch_readiness(server: ServerProcess, into: list[int]) -> None:
    while True:
        into.append((await asyncio.to_thread(ready, server))[0])
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


async def test_a_cluster_spreads_counters_and_topics_and_survives_a_failover(
    tmp_path: Path,
) -> None:
    cluster = ClusterSet(tmp_path, masters=3, replicas_per_master=1)
    await asyncio.to_thread(cluster.start)
    sharded = Names(DEFAULT_NAMESPACE, sharded=True)
    topics = [f"t{i}" for i in range(6)]
    try:
        counter_masters = spread(cluster, {c: sharded.value(c) for c in COUNTERS})
        topic_masters = spread(cluster, {t: sharded.topic_channel(t) for t in topics})
        assert len(set(counter_masters.values())) >= 2
        assert len(set(topic_masters.values())) >= 2
        with workers(tmp_path, cluster.url) as servers:
            async with sessions_of(servers) as peers:
                await _exchange(cluster, peers, topics, round_=1)
                await _count(peers, cluster, expected=1)
                victim = await asyncio.to_thread(cluster.kill_master_of, sharded.value("c0"))
                await asyncio.to_thread(cluster.wait_for_promotion)
                await eventually(lambda: all(ready(s)[0] == 200 for s in servers), WAIT_S, "ready")
                await _count(peers, cluster, expected=2)
                await _exchange(cluster, peers, topics, round_=2)
                assert victim.port == counter_masters["c0"]
                await _connections_are_bounded_by_shards(cluster, servers)
        _keys_share_a_slot(cluster, sharded)
    finally:
        await asyncio.to_thread(cluster.stop)


async def _exchange(cluster: ClusterSet, peers: list[Peer], topics: list[str], round_: int) -> None:
    """Every peer listens to every topic; each topic gets one message; all arrive."""
    for peer in peers:
        for topic in topics:
            await peer.run("subscribe_topic", topic=topic)
    # A topic subscription takes effect once Redis confirmed it (README): wait for that.
    sharded = Names(DEFAULT_NAMESPACE, sharded=True)
    channels = [sharded.topic_channel(t) for t in topics]
    await eventually(lambda: _subscribers(cluster, channels) >= 2, WAIT_S, "subscribed")
    for i, topic in enumerate(topics):
        await peers[i % len(peers)].run("send_all_on_topic", topic=topic, message=round_)
    for peer in peers:
        await peer.session.wait_for(
            lambda _s, p=peer: all([t, round_] in p.log() for t in topics), WAIT_S
        )


def _subscribers(cluster: ClusterSet, channels: list[str]) -> int:
    """The fewest workers subscribed to any of `channels` (asked of their shards)."""
    fewest = None
    for channel in channels:
        client = SyncRedis(host="127.0.0.1", port=cluster.master_for_key(channel).port)
        try:
            _, count = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        finally:
            client.close()
        fewest = count if fewest is None else min(fewest, count)
    return fewest or 0


async def _count(peers: list[Peer], cluster: ClusterSet, expected: int) -> None:
    """Each peer increments one counter once per call: every counter reaches
    `expected` times its share on every session, equal to the store."""
    for i, peer in enumerate(peers):
        for name in COUNTERS[i :: len(peers)]:
            await peer.run("incr", name=name)
    nodes = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes if node.running]
    client = RedisCluster(startup_nodes=nodes)
    try:
        for name in COUNTERS:
            stored = int(await client.get(Names(DEFAULT_NAMESPACE, True).value(name)) or 0)
            assert stored == expected
            await converge(peers, name, stored)
    finally:
        await client.aclose()


async def _connections_are_bounded_by_shards(
    cluster: ClusterSet, servers: list[ServerProcess]
) -> None:
    for node in cluster.nodes:
        if not node.running:
            continue
        client = Redis(host="127.0.0.1", port=node.port)
        try:
            names = [c["name"] for c in await client.client_list() if c["name"].startswith("cs:")]
        finally:
            await client.aclose()
        per_worker: dict[str, int] = {}
        for name in names:
            worker = name.rsplit(":", 1)[0]
            per_worker[worker] = per_worker.get(worker, 0) + 1
        # Per node: the commands pool (max_connections 2, plus 3 that cannot wait for
        # it: presence, publisher, PING), the relay's subscription and the connection
        # that maps its channels to shards; whatever the sessions.
        assert all(count <= 7 for count in per_worker.values()), per_worker


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


def documented_acl_rule() -> list[str]:
    """The ACL rule as the README gives it, without the user name and password."""
    lines = README.read_text().splitlines()
    line = next(text for text in lines if text.startswith("ACL SETUSER "))
    tokens = line.split()[3:]
    return [t for t in tokens if t != "on" and not t.startswith(">")]


async def test_the_documented_acl_rule_is_enough_and_no_more(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    url = await create_acl_user(
        redis_server.url, "counter-service", "s3cret", documented_acl_rule()
    )
    with workers(tmp_path, url) as servers:
        async with sessions_of(servers) as peers:
            await peers[0].run("incr", name="c1")
            await converge(peers, "c1", 1)
            for peer in peers:
                await peer.run("subscribe_topic", topic="news")
            await peers[1].run("send_all_on_topic", topic="news", message="hi")
            for peer in peers:
                await peer.session.wait_for(lambda _s, p=peer: ["news", "hi"] in p.log(), WAIT_S)
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
    env = {
        "COUNTER_TLS_CA_FILE": str(certificates.ca_cert),
        "COUNTER_TLS_CERT_FILE": str(certificates.client_cert),
        "COUNTER_TLS_KEY_FILE": str(certificates.client_key),
    }
    try:
        with workers(tmp_path, server.url, env) as servers:
            async with sessions_of(servers) as peers:
                await peers[0].run("incr", name="c2")
                await converge(peers, "c2", 1)
    finally:
        server.stop()
