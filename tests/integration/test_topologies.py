"""The Redis topologies of counter_service.devtools.topologies really are what they claim:
a Sentinel set that fails over, a cluster that hands a dead master's slots to its replica,
a TLS server that verifies both ends, and ACL users limited to what their rule allows."""

import asyncio
import dataclasses
import socket
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, AuthenticationError, ConnectionError, NoPermissionError

from counter_service.devtools.fleet import HOST, FleetError, RedisProcess, free_port
from counter_service.devtools.topologies import (
    Certificates,
    ClusterSet,
    SentinelProcess,
    SentinelSet,
    TlsRedis,
    ToolMissing,
    create_acl_user,
    make_certificates,
    probe,
)

SERVICE = "mymaster"
NO_RETRY = Retry(NoBackoff(), 0)


@asynccontextmanager
async def direct(port: int) -> AsyncIterator[Redis]:
    """A client of one server, bypassing any cluster or sentinel routing."""
    client = Redis(host=HOST, port=port, retry=NO_RETRY)
    try:
        yield client
    finally:
        await client.aclose()


async def role(port: int) -> str:
    async with direct(port) as client:
        reply = await client.execute_command("ROLE")
    return str(reply[0].decode())


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# Sentinel ------------------------------------------------------------------------------------


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    with SentinelSet(tmp_path, service=SERVICE) as topology:
        yield topology


@asynccontextmanager
async def sentinel_client(topology: SentinelSet) -> AsyncIterator[Sentinel]:
    sentinel = Sentinel(topology.sentinel_addresses, socket_timeout=1.0)
    try:
        yield sentinel
    finally:
        await sentinel.aclose()


def test_sentinel_url_names_every_sentinel_the_service_and_the_db(tmp_path: Path) -> None:
    topology = SentinelSet(tmp_path, service="counters")  # not started: no process needed
    url = urllib.parse.urlsplit(topology.url)
    hosts = [host.rpartition(":") for host in url.netloc.split(",")]

    assert url.scheme == "redis+sentinel"
    assert [(host, int(port)) for host, _, port in hosts] == topology.sentinel_addresses
    assert len(topology.sentinel_addresses) == 3
    assert url.path == "/counters/0"


async def test_sentinels_report_the_master_and_its_replica_in_sync(
    sentinel_set: SentinelSet,
) -> None:
    async with sentinel_client(sentinel_set) as sentinel:
        master = await sentinel.discover_master(SERVICE)
        replicas = await sentinel.discover_replicas(SERVICE)

    assert master == (HOST, sentinel_set.master.port)
    assert replicas == [(HOST, sentinel_set.replica.port)]
    assert await role(sentinel_set.master.port) == "master"
    assert await role(sentinel_set.replica.port) == "slave"


async def test_killing_the_master_makes_sentinels_promote_the_replica(
    sentinel_set: SentinelSet,
) -> None:
    replica_port = sentinel_set.replica.port
    async with direct(sentinel_set.master.port) as master:
        await master.set("survivor", "yes")
        assert await master.wait(1, 5000) == 1  # on the replica before the master dies

    sentinel_set.kill_master()
    promoted = await asyncio.to_thread(sentinel_set.wait_for_failover)

    assert promoted == replica_port == sentinel_set.master.port
    assert await role(promoted) == "master"
    async with sentinel_client(sentinel_set) as sentinel:
        assert await sentinel.discover_master(SERVICE) == (HOST, promoted)
        client = sentinel.master_for(SERVICE, retry=NO_RETRY)
        try:
            assert await client.get("survivor") == b"yes"
        finally:
            await client.aclose()


def test_a_set_that_cannot_start_stops_what_it_had_started(tmp_path: Path) -> None:
    topology = SentinelSet(tmp_path, service="two words")  # a config line Sentinel refuses

    with pytest.raises(FleetError, match="sentinel"):
        topology.start()

    assert not any(process.running for process in topology.processes)
    assert all(refuses_connections(node.port) for node in topology.nodes)


# Cluster -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """One cluster for the tests that only read and write keys (a fresh one to kill)."""
    with ClusterSet(tmp_path_factory.mktemp("cluster")) as topology:
        yield topology


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    with ClusterSet(tmp_path) as topology:
        yield topology


@asynccontextmanager
async def cluster_client(topology: ClusterSet) -> AsyncIterator[RedisCluster]:
    seeds = [ClusterNode(HOST, node.port) for node in topology.nodes if node.running]
    client = RedisCluster(startup_nodes=seeds)
    try:
        yield client
    finally:
        await client.aclose()


async def test_cluster_url_names_every_node_as_a_seed(cluster: ClusterSet) -> None:
    url = urllib.parse.urlsplit(cluster.url)

    assert url.scheme == "redis+cluster"
    assert url.netloc.split(",") == [f"{HOST}:{node.port}" for node in cluster.nodes]


async def test_every_node_sees_all_slots_served_by_three_masters_with_replicas(
    cluster: ClusterSet,
) -> None:
    for node in cluster.nodes:
        async with direct(node.port) as client:
            info = await client.cluster("INFO")
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_ok"]) == 16384
        assert int(info["cluster_size"]) == 3  # masters serving slots
        assert int(info["cluster_known_nodes"]) == 6


async def test_keys_with_different_hash_tags_land_on_several_masters(
    cluster: ClusterSet,
) -> None:
    keys = [f"{{tag-{n}}}:value" for n in range(8)]
    async with cluster_client(cluster) as client:
        for key in keys:
            await client.set(key, key)
            # redis-py routes by the same slot table the tooling reads.
            assert client.get_node_from_key(key).port == cluster.master_for_key(key).port

    masters = {cluster.master_for_key(key).port for key in keys}
    assert len(masters) >= 2
    for key in keys:  # stored where the tooling says: a wrong master answers MOVED
        async with direct(cluster.master_for_key(key).port) as client:
            assert await client.get(key) == key.encode()


async def test_killing_a_master_hands_its_slots_to_its_replica(
    fresh_cluster: ClusterSet,
) -> None:
    key = "{failover}:value"
    async with direct(fresh_cluster.master_for_key(key).port) as master:
        await master.set(key, "kept")
        assert await master.wait(1, 5000) == 1  # on the replica before the master dies

    victim = fresh_cluster.kill_master_of(key)
    promoted = await asyncio.to_thread(fresh_cluster.wait_for_promotion)

    assert promoted.port != victim.port
    assert not victim.running
    assert fresh_cluster.master_for_key(key).port == promoted.port
    assert await role(promoted.port) == "master"
    async with cluster_client(fresh_cluster) as client:
        assert await client.get(key) == b"kept"


async def test_a_slot_migration_moves_its_keys_then_hands_the_slot_over(
    cluster: ClusterSet,
) -> None:
    key = "{migrating}:value"
    slot = key_slot(key.encode())
    source = cluster.master_for_slot(slot).port
    target = next(n.port for n in cluster.nodes if n.port != source and n.port in masters(cluster))
    async with cluster_client(cluster) as client:
        await client.set(key, "moved along")
    assert cluster.start_migration(slot, target) == source
    async with direct(source) as owner:
        with pytest.raises(AskError, match=f"{slot} 127.0.0.1:{target}"):
            await owner.get(key)  # the key left: the owner sends clients on
    async with direct(target) as importer, importer.pipeline(transaction=False) as pipe:
        pipe.execute_command("ASKING")
        pipe.get(key)
        assert await pipe.execute() == [True, b"moved along"]
    cluster.finish_migration(slot, target)
    assert cluster.master_for_slot(slot).port == target
    async with cluster_client(cluster) as client:
        assert await client.get(key) == b"moved along"


def masters(cluster: ClusterSet) -> set[int]:
    return {cluster.master_for_slot(first).port for first in (0, 8000, 16000)}


def test_a_cluster_needs_three_masters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="three masters"):
        ClusterSet(tmp_path, masters=2)


# TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    try:
        return make_certificates(tmp_path_factory.mktemp("certs"))
    except ToolMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(params=[True, False], ids=["client-cert-required", "client-cert-optional"])
def tls_server(
    tmp_path: Path, certificates: Certificates, request: pytest.FixtureRequest
) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path, certificates, require_client_cert=request.param).start()
    try:
        yield server
    finally:
        server.stop()


async def ping(url: str, **kwargs: object) -> bool:
    client = Redis.from_url(url, retry=NO_RETRY, **kwargs)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def test_a_client_that_trusts_the_ca_connects_with_verification(
    tls_server: TlsRedis, certificates: Certificates
) -> None:
    assert tls_server.url.startswith("rediss://127.0.0.1:")
    assert await ping(tls_server.url, **certificates.client_kwargs())


async def test_a_client_that_trusts_another_ca_fails_verification(
    tls_server: TlsRedis, certificates: Certificates
) -> None:
    kwargs = certificates.client_kwargs(trust=certificates.other_ca_cert)

    with pytest.raises(ConnectionError, match="certificate verify failed"):
        await ping(tls_server.url, **kwargs)


async def test_a_client_without_a_certificate_is_refused_only_when_one_is_required(
    tls_server: TlsRedis, certificates: Certificates
) -> None:
    kwargs = certificates.client_kwargs(client_cert=False)

    if tls_server.require_client_cert:
        with pytest.raises(ConnectionError):
            await ping(tls_server.url, **kwargs)
    else:
        assert await ping(tls_server.url, **kwargs)


async def test_a_certificate_for_another_host_fails_on_the_name_alone(
    tmp_path: Path, certificates: Certificates
) -> None:
    wrong = dataclasses.replace(
        certificates,
        server_cert=certificates.wrong_host_cert,
        server_key=certificates.wrong_host_key,
    )
    server = TlsRedis(tmp_path, wrong, require_client_cert=False).start()
    try:
        with pytest.raises(ConnectionError, match=r"certificate is not valid for '127\.0\.0\.1'"):
            await ping(server.url, **certificates.client_kwargs())
        kwargs = {**certificates.client_kwargs(), "ssl_check_hostname": False}
        assert await ping(server.url, **kwargs)  # the CA did sign it
    finally:
        server.stop()


async def test_a_tls_sentinel_set_speaks_tls_only_and_names_its_master(
    tmp_path: Path, certificates: Certificates
) -> None:
    with SentinelSet(tmp_path, service=SERVICE, certs=certificates) as topology:
        assert topology.url.startswith("rediss+sentinel://")
        tls = {"ssl": True, **certificates.client_kwargs()}
        sentinel = Sentinel(topology.sentinel_addresses, sentinel_kwargs=tls, **tls)
        try:
            assert await sentinel.discover_master(SERVICE) == (HOST, topology.master.port)
            client = sentinel.master_for(SERVICE, retry=NO_RETRY)
            try:
                assert await client.set("sealed", "yes")
            finally:
                await client.aclose()
        finally:
            await sentinel.aclose()
        for process in [*topology.sentinels, *topology.nodes]:
            assert not process._pong(), process.name  # no plain port
            with pytest.raises(ConnectionError):  # a client certificate is required
                await ping(
                    f"rediss://{HOST}:{process.port}",
                    **certificates.client_kwargs(client_cert=False),
                )


def test_a_sentinel_with_a_password_wants_it(tmp_path: Path, redis_server: RedisProcess) -> None:
    sentinel = SentinelProcess(tmp_path, free_port(), SERVICE, redis_server.port, password="pw")
    sentinel.start()
    try:
        assert probe(sentinel.port, "SENTINEL", "MASTERS", password="pw")
        with pytest.raises(AuthenticationError):
            probe(sentinel.port, "SENTINEL", "MASTERS")
    finally:
        sentinel.stop()


# ACL -----------------------------------------------------------------------------------------

RULE = [
    *("~counter-service:*", "&counter-service:*"),
    *("+@read", "+@write", "+ping", "+acl|whoami", "-@dangerous"),
]
PASSWORD = "p@ss:w/rd"  # characters a URL must quote


@pytest.fixture(params=["client", "url"])
async def acl_user(
    request: pytest.FixtureRequest, redis_server: RedisProcess, redis_client: Redis
) -> AsyncIterator[Redis]:
    """A client logged in as a user made by create_acl_user, from a client or from a URL."""
    admin = redis_client if request.param == "client" else redis_server.url
    url = await create_acl_user(admin, "counter", PASSWORD, RULE)
    client = Redis.from_url(url, retry=NO_RETRY)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_returned_url_logs_in_as_the_user(acl_user: Redis) -> None:
    assert await acl_user.execute_command("ACL", "WHOAMI") == b"counter"


async def test_the_user_reads_and_writes_keys_under_its_prefix(acl_user: Redis) -> None:
    await acl_user.set("counter-service:clicks", 41)
    assert await acl_user.incr("counter-service:clicks") == 42


async def test_the_user_is_refused_dangerous_commands_and_other_keys(acl_user: Redis) -> None:
    with pytest.raises(NoPermissionError):
        await acl_user.flushall()
    with pytest.raises(NoPermissionError):
        await acl_user.get("elsewhere:clicks")


async def test_redefining_a_user_drops_what_it_was_allowed(
    redis_server: RedisProcess, acl_user: Redis
) -> None:
    await create_acl_user(redis_server.url, "counter", PASSWORD, ["~other:*", "+get"])

    with pytest.raises(NoPermissionError):
        await acl_user.get("counter-service:clicks")
