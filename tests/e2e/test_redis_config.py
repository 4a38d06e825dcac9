"""Configuration errors stop `serve` at once with one line naming the fix; an outage does
not (one warning line per attempt, one when it is back); a configuration error that
appears later is named by /readyz until it is fixed. The start probe runs every command the
service will, as its user: each permission of the documented ACL rules is checked."""

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError, RedisError, ResponseError

from counter_service.devtools.fleet import RedisProcess, ServerProcess, free_port, free_ports
from counter_service.devtools.topologies import (
    ClusterSet,
    SentinelProcess,
    TlsRedis,
    ToolMissing,
    create_acl_user,
    create_cluster_acl_user,
    data_node,
    make_certificates,
    probe,
    replica_in_sync,
    with_credentials,
)
from counter_service.errors import StoreUnavailable
from counter_service.redis import tls
from counter_service.redis.diagnosis import diagnose
from counter_service.redis.probe import RedisConfigError, check_redis
from counter_service.settings import DEFAULT_NAMESPACE, Settings
from tests.e2e.test_production_redis import (
    CLUSTER_NEEDS,
    PLAIN_NEEDS,
    documented_acl_rule,
    documented_acl_rules,
)
from tests.support import eventually, worker_metrics

pytestmark = pytest.mark.e2e

EXIT_DEADLINE_S = 30.0
WAIT_S = 30.0
NAMESPACE_KEYS, NAMESPACE_CHANNELS = f"~{DEFAULT_NAMESPACE}:*", f"&{DEFAULT_NAMESPACE}:*"


def serve(url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "counter_service", "serve", "--port", str(free_port())]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTER_", "REDIS"))}
    environment |= {"REDIS_URL": url, **(env or {})}
    return subprocess.run(
        argv, env=environment, capture_output=True, text=True, timeout=EXIT_DEADLINE_S
    )


def one_line_naming(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 1 and nothing on stderr but one short line that names `words`."""
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("counter-service serve: ")
    assert all(word in line for word in words), line
    assert len(line) < 300, line


def without(rule: list[str], token: str) -> list[str]:
    assert token in rule
    return [t for t in rule if t != token]


# The start probe, in process: every permission is needed, and a missing one is named.


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisProcess]:
    server = RedisProcess(Path(tempfile.mkdtemp(prefix="acl-"))).start()
    try:
        yield server
    finally:
        server.stop()


async def probe_as(server: RedisProcess, rule: list[str], **settings: Any) -> None:
    """`check_redis` as a user with `rule`, on database 1 (so SELECT is needed)."""
    url = await create_acl_user(server.url, "prober", "pw", rule)
    await check_redis(Settings(redis_url=url.rsplit("/", 1)[0] + "/1", **settings))


async def test_the_documented_rule_passes_the_start_probe(acl_server: RedisProcess) -> None:
    await probe_as(acl_server, documented_acl_rule())


@pytest.mark.parametrize("permission", PLAIN_NEEDS)
async def test_the_start_probe_names_each_missing_permission(
    acl_server: RedisProcess, permission: str
) -> None:
    with pytest.raises(RedisConfigError) as caught:
        await probe_as(acl_server, without(documented_acl_rule(), permission))
    assert f"add {permission} to its ACL rule" in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "kind"), [(NAMESPACE_KEYS, "keys"), (NAMESPACE_CHANNELS, "channels")]
)
async def test_the_start_probe_names_missing_keys_and_channels(
    acl_server: RedisProcess, pattern: str, kind: str
) -> None:
    with pytest.raises(RedisConfigError) as caught:
        await probe_as(acl_server, without(documented_acl_rule(), pattern))
    assert f"may not use the namespace's {kind}: add {pattern[0]}<namespace>:*" in str(caught.value)


async def test_wait_replicas_needs_wait_and_without_info_a_missing_replica_is_a_warning(
    acl_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    wait = {"wait_replicas": 1, "wait_timeout_ms": 10}
    with pytest.raises(RedisConfigError, match=r"add \+wait to its ACL rule"):
        await probe_as(acl_server, documented_acl_rule(), **wait)
    # No replica, but a user without +info cannot tell whether one is only away: warns.
    await probe_as(acl_server, [*documented_acl_rule(), "+wait"], **wait)
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "0 of 1 replicas" in warning.getMessage()
    assert "COUNTER_WAIT_REPLICAS" in warning.getMessage()


async def test_wait_replicas_on_a_master_that_never_had_a_replica_is_a_configuration_error(
    redis_server: RedisProcess,
) -> None:
    settings = Settings(redis_url=redis_server.url, wait_replicas=1, wait_timeout_ms=10)
    with pytest.raises(RedisConfigError) as caught:
        await check_redis(settings)
    assert "COUNTER_WAIT_REPLICAS=1, but the Redis master has no replica" in str(caught.value)
    one_line_naming(
        await asyncio.to_thread(serve, redis_server.url, {"COUNTER_WAIT_REPLICAS": "1"}),
        "COUNTER_WAIT_REPLICAS",
        "no replica",
    )


async def test_wait_replicas_while_the_replica_is_away_is_a_warning_naming_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    master = data_node(tmp_path, free_port()).start()
    replica = data_node(tmp_path, free_port(), "--replicaof", "127.0.0.1", str(master.port))
    try:
        replica.start()
        await eventually(lambda: replica_in_sync(replica.port), WAIT_S, "replica in sync")
        # A replica answers: nothing to say. WAIT returns as soon as it does; the long
        # timeout only keeps a loaded machine's slow acknowledgement from being a warning.
        patient = Settings(redis_url=master.url, wait_replicas=1, wait_timeout_ms=10_000)
        await check_redis(patient)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        replica.stop()  # restarting, say
        await eventually(lambda: connected_replicas(master) == 0, WAIT_S, "replica gone")
        await check_redis(Settings(redis_url=master.url, wait_replicas=1, wait_timeout_ms=10))
    finally:
        replica.stop()
        master.stop()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "only 0 of COUNTER_WAIT_REPLICAS=1 replicas are connected" in warning
    assert "may be restarting" in warning


def connected_replicas(server: RedisProcess) -> int:
    return int(probe(server.port, "INFO", "replication")["connected_slaves"])


async def test_the_probe_leaves_no_key_behind(acl_server: RedisProcess) -> None:
    await probe_as(acl_server, documented_acl_rule())
    async with Redis.from_url(acl_server.url.rsplit("/", 1)[0] + "/1") as admin:
        assert await admin.keys("*") == []


@pytest.mark.parametrize(
    ("policy", "warned"), [("allkeys-lru", True), ("volatile-lru", False), ("noeviction", False)]
)
async def test_an_eviction_policy_that_can_drop_counters_is_warned_about(
    acl_server: RedisProcess, caplog: pytest.LogCaptureFixture, policy: str, warned: bool
) -> None:
    async with Redis.from_url(acl_server.url) as admin:
        await admin.config_set("maxmemory-policy", policy)
        try:
            await check_redis(Settings(redis_url=acl_server.url))
        finally:
            await admin.config_set("maxmemory-policy", "noeviction")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        [warning] = warnings
        assert f"maxmemory-policy is {policy}" in warning
        assert "noeviction" in warning
    else:
        assert warnings == []


@pytest.fixture(scope="module")
def acl_cluster() -> Iterator[ClusterSet]:
    try:
        topology = ClusterSet(Path(tempfile.mkdtemp(prefix="acl-cluster-")), replicas_per_master=0)
        topology.start()
    except ToolMissing as exc:
        pytest.skip(str(exc))
    try:
        yield topology
    finally:
        topology.stop()


async def probe_cluster_as(cluster: ClusterSet, rule: list[str], password: str = "pw") -> None:
    url = await create_cluster_acl_user(cluster, "prober", "pw", rule)
    await check_redis(Settings(redis_url=with_credentials(url, "prober", password)))


async def test_the_documented_cluster_rule_passes_the_start_probe(acl_cluster: ClusterSet) -> None:
    await probe_cluster_as(acl_cluster, documented_acl_rules()[1])


# ASKING is only sent while a slot migrates: test_production_redis covers it.
@pytest.mark.parametrize("permission", [p for p in CLUSTER_NEEDS if p != "+asking"])
async def test_the_start_probe_names_each_missing_permission_on_a_cluster(
    acl_cluster: ClusterSet, permission: str
) -> None:
    with pytest.raises(RedisConfigError) as caught:
        await probe_cluster_as(acl_cluster, without(documented_acl_rules()[1], permission))
    assert f"add {permission} to its ACL rule" in str(caught.value)


async def test_a_wrong_password_on_a_cluster_names_the_password(acl_cluster: ClusterSet) -> None:
    with pytest.raises(RedisConfigError, match="user name or password: fix them in the Redis URL"):
        await probe_cluster_as(acl_cluster, documented_acl_rules()[1], password="wrong")


# `serve` itself: exit status 1 and one line.


async def test_a_wrong_password(redis_server: RedisProcess) -> None:
    await create_acl_user(redis_server.url, "alice", "right", documented_acl_rule())
    wrong = with_credentials(redis_server.url, "alice", "wrong")
    one_line_naming(await asyncio.to_thread(serve, wrong), "password", "REDIS_URL")


async def test_a_missing_acl_permission(redis_server: RedisProcess) -> None:
    url = await create_acl_user(
        redis_server.url, "bob", "pw", without(documented_acl_rule(), "+hset")
    )
    one_line_naming(await asyncio.to_thread(serve, url), "may not run HSET", "add +hset", "ACL")


def test_a_database_the_server_does_not_have(redis_server: RedisProcess) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    one_line_naming(serve(url), "database number", "REDIS_URL")


@pytest.mark.parametrize("db", ["2147483647", "99999999999999999999"])
def test_a_database_past_what_redis_can_have(redis_server: RedisProcess, db: str) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
    one_line_naming(serve(url), "past Redis's last database number, 2147483646", "REDIS_URL")


@pytest.mark.parametrize("db", [2**31 - 1, 2**31])  # SELECT: out of `databases`, of an int
async def test_a_select_redis_refuses_is_a_configuration_error(
    redis_server: RedisProcess, db: int
) -> None:
    client = Redis(port=redis_server.port, db=db)
    try:
        with pytest.raises(RedisError) as caught:
            await client.ping()
    finally:
        await client.aclose()
    assert diagnose(caught.value) == (
        "the database number in the Redis URL (--redis-url or REDIS_URL) does not exist on"
        " this server"
    )


def test_a_bad_url_value(redis_server: RedisProcess) -> None:
    one_line_naming(serve(redis_server.url + "?socket_timeout=abc"), "socket_timeout", "number")


@pytest.fixture
def certificates(tmp_path: Path) -> Any:
    try:
        return make_certificates(tmp_path / "certs")
    except ToolMissing as exc:
        pytest.skip(str(exc))


SENTINEL_DUMP = "<redis.asyncio.client.Redis(<redis.asyncio.connection.ConnectionPool(...)>)>"


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            ConnectionError(
                "Error 1 connecting to 127.0.0.1:6380. [SSL: CERTIFICATE_VERIFY_FAILED]"
                " certificate verify failed: Hostname mismatch, certificate is not valid for"
                " 'redis.internal'. (_ssl.c:1006)."
            ),
            ("does not name the host", "'redis.internal'", "ssl_check_hostname=false"),
        ),
        (
            ConnectionError(
                "Error while reading from h:1 : (1, '[SSL: SSLV3_ALERT_BAD_CERTIFICATE]"
                " sslv3 alert bad certificate (_ssl.c:2580)')"
            ),
            ("refused the client certificate", ": sslv3 alert bad certificate"),
        ),
        (
            MasterNotFoundError(
                f"No master found for 'm' : {SENTINEL_DUMP} - AuthenticationError('Auth"
                " required.'), " + SENTINEL_DUMP + " - AuthenticationError('Auth required.')"
            ),
            ("the sentinels require a password",),
        ),
        (
            ResponseError("unknown command 'SENTINEL', with args beginning with: 'masters' "),
            ("is not a sentinel", "redis://"),
        ),
        (ResponseError("invalid DB index"), ("database number",)),
    ],
    ids=["hostname", "client-certificate", "sentinel-password", "not-a-sentinel", "db"],
)
def test_what_readiness_names_for_a_refusal_seen_while_serving(
    error: Exception, words: tuple[str, ...]
) -> None:
    wrapped = StoreUnavailable("Redis is unreachable")  # the store keeps redis-py's error
    wrapped.__cause__ = error
    problem = diagnose(wrapped)
    assert problem is not None
    assert all(word in problem for word in words), problem
    assert len(problem) < 300


@pytest.fixture
def tls_server(tmp_path: Path, certificates: Any) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path, certificates, require_client_cert=True).start()
    try:
        yield server
    finally:
        server.stop()


def files(ca: Path, cert: Path | None, key: Path | None) -> dict[str, str]:
    env = {"COUNTER_TLS_CA_FILE": str(ca)}
    if cert is not None:
        env["COUNTER_TLS_CERT_FILE"] = str(cert)
    if key is not None:
        env["COUNTER_TLS_KEY_FILE"] = str(key)
    return env


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("empty CA file", ("COUNTER_TLS_CA_FILE holds no CA certificate",)),
        ("key as CA file", ("COUNTER_TLS_CA_FILE holds no CA certificate",)),
        ("certificate without key", ("COUNTER_TLS_CERT_FILE", "without its key", "_KEY_FILE")),
        ("key of another certificate", ("COUNTER_TLS_KEY_FILE is not the key of",)),
        ("key file without a key", ("COUNTER_TLS_KEY_FILE holds no private key",)),
        ("key without certificate", ("COUNTER_TLS_KEY_FILE is set without a client cert",)),
    ],
)
def test_tls_files_that_cannot_work_are_named_before_connecting(
    tmp_path: Path, certificates: Any, tls_server: TlsRedis, case: str, words: tuple[str, ...]
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    c = certificates
    env = {
        "empty CA file": files(empty, c.client_cert, c.client_key),
        "key as CA file": files(c.ca_key, c.client_cert, c.client_key),
        "certificate without key": files(c.ca_cert, c.client_cert, None),
        "key of another certificate": files(c.ca_cert, c.client_cert, c.server_key),
        "key file without a key": files(c.ca_cert, c.client_cert, c.client_cert),
        "key without certificate": files(c.ca_cert, None, c.client_key),
    }[case]
    one_line_naming(serve(tls_server.url, env), *words)


def test_tls_files_in_the_url_are_named_as_url_options(
    tmp_path: Path, certificates: Any, tls_server: TlsRedis
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    url = f"{tls_server.url}?ssl_ca_certs={empty}"
    env = files(certificates.ca_cert, certificates.client_cert, None)
    env["COUNTER_TLS_KEY_FILE"] = str(certificates.client_key)
    one_line_naming(serve(url, env), "ssl_ca_certs in the Redis URL holds no CA certificate")


def test_a_client_certificate_redis_does_not_trust(certificates: Any, tls_server: TlsRedis) -> None:
    env = files(certificates.ca_cert, certificates.other_ca_cert, None)
    env["COUNTER_TLS_KEY_FILE"] = str(certificates.other_ca_key)
    one_line_naming(
        serve(tls_server.url, env), "refused the client certificate", "COUNTER_TLS_CERT_FILE"
    )


def test_no_client_certificate_where_redis_wants_one(
    certificates: Any, tls_server: TlsRedis
) -> None:
    done = serve(tls_server.url, files(certificates.ca_cert, None, None))
    one_line_naming(done, "wants a client certificate", "COUNTER_TLS_CERT_FILE")


async def test_the_tls_refusal_is_heard_every_time(certificates: Any, tls_server: TlsRedis) -> None:
    # With TLS 1.3 Redis judges the client's certificate after the handshake; a client
    # that sends a command meanwhile mostly gets a reset instead of the alert (redis-py
    # one time in four, here): the probe listens first.
    options = {"ssl_ca_certs": str(certificates.ca_cert)}
    for _ in range(20):
        said = await tls.refusal("127.0.0.1", tls_server.port, options)
        assert said is not None
        assert "certificate required" in said
    options |= {"ssl_certfile": str(certificates.client_cert)}
    options |= {"ssl_keyfile": str(certificates.client_key)}
    assert await tls.refusal("127.0.0.1", tls_server.port, options) is None


def test_a_certificate_for_another_host(tmp_path: Path, certificates: Any) -> None:
    other_host = dataclasses.replace(
        certificates,
        server_cert=certificates.wrong_host_cert,
        server_key=certificates.wrong_host_key,
    )
    server = TlsRedis(tmp_path, other_host, require_client_cert=False).start()
    try:
        done = serve(server.url, {"COUNTER_TLS_CA_FILE": str(certificates.ca_cert)})
    finally:
        server.stop()
    one_line_naming(done, "does not name the host", "127.0.0.1", "ssl_check_hostname")
    assert "COUNTER_TLS_CA_FILE" not in done.stderr  # the CA is right: it verified


def test_a_certificate_that_does_not_verify(tmp_path: Path, certificates: Any) -> None:
    server = TlsRedis(tmp_path, certificates, require_client_cert=False).start()
    try:
        done = serve(server.url, {"COUNTER_TLS_CA_FILE": str(certificates.other_ca_cert)})
        one_line_naming(done, "does not verify", "COUNTER_TLS_CA_FILE")
    finally:
        server.stop()


def test_a_plain_url_for_a_tls_server(tmp_path: Path, certificates: Any) -> None:
    server = TlsRedis(tmp_path, certificates, require_client_cert=False).start()
    try:
        done = serve(server.url.replace("rediss://", "redis://"))
        one_line_naming(done, "speaks TLS only", "rediss://")
    finally:
        server.stop()


def test_a_tls_url_for_a_plain_server(redis_server: RedisProcess, certificates: Any) -> None:
    done = serve(
        redis_server.url.replace("redis://", "rediss://"),
        {"COUNTER_TLS_CA_FILE": str(certificates.ca_cert)},
    )
    one_line_naming(done, "does not speak TLS", "redis://")


def test_a_cluster_url_for_a_single_server(redis_server: RedisProcess) -> None:
    url = redis_server.url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    one_line_naming(serve(url), "not a cluster", "redis://")


def test_a_sentinel_service_nobody_monitors(tmp_path: Path, redis_server: RedisProcess) -> None:
    sentinel = SentinelProcess(tmp_path, free_port(), "mymaster", redis_server.port).start()
    try:
        done = serve(f"redis+sentinel://127.0.0.1:{sentinel.port}/elsewhere/0")
        one_line_naming(done, "no master named 'elsewhere'", "REDIS_URL")
    finally:
        sentinel.stop()


def test_a_sentinel_url_for_a_plain_redis(redis_server: RedisProcess) -> None:
    done = serve(f"redis+sentinel://127.0.0.1:{redis_server.port}/mymaster/0")
    one_line_naming(done, f"127.0.0.1:{redis_server.port}", "is not a sentinel", "redis://")


def test_sentinels_that_want_a_password(tmp_path: Path, redis_server: RedisProcess) -> None:
    port = free_port()
    sentinel = SentinelProcess(tmp_path, port, "mymaster", redis_server.port, password="pw")
    sentinel.start()
    try:
        done = serve(f"redis+sentinel://:pw@127.0.0.1:{port}/mymaster/0")
        one_line_naming(done, "the sentinels require a password", "REDIS_URL")
    finally:
        sentinel.stop()


# Outages: serve starts, is not ready, names no configuration error, and retries.


@pytest.mark.parametrize("scheme", ["redis+sentinel", "redis+cluster"])
async def test_no_reachable_sentinel_or_seed_node_is_an_outage(tmp_path: Path, scheme: str) -> None:
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    url = f"{scheme}://{hosts}" + ("/mymaster/0" if "sentinel" in scheme else "")
    async with spawned(tmp_path, url) as server:
        await eventually(lambda: failures(server) >= 2, WAIT_S, "two failed attempts")
        status, body = readyz(server)
        assert status == 503
        assert "redis_configuration" not in body
        assert body["redis_reachable"] is False
        log = server.log_tail(10_000)
        warnings = [line for line in log.splitlines() if " WARNING " in line]
        assert "is unreachable" in warnings[0]
        assert all(len(line) < 400 for line in warnings)  # no repr of every sentinel
        assert "Traceback" not in log


async def test_an_unreachable_redis_is_one_warning_per_attempt_until_it_is_back(
    tmp_path: Path,
) -> None:
    redis = RedisProcess(tmp_path)  # not started yet
    async with spawned(tmp_path, redis.url) as server:
        await eventually(lambda: failures(server) >= 3, WAIT_S, "three failed attempts")
        before, log, after = failures(server), server.log_tail(10_000), failures(server)
        probe_line, *attempts = [line for line in log.splitlines() if " WARNING " in line]
        assert "counter_service.redis.probe: Redis at" in probe_line
        assert "is unreachable" in probe_line
        # Only the subscriber speaks for the outage, once per attempt; presence is quiet.
        assert all("counter_service.pubsub.subscriber: cannot reach Redis" in a for a in attempts)
        assert before <= len(attempts) <= after
        redis.start()
        try:
            await eventually(lambda: readyz(server)[0] == 200, WAIT_S, "ready once Redis is up")
            log = server.log_tail(10_000)
        finally:
            redis.stop()
    assert len([line for line in log.splitlines() if "is back" in line]) == 1
    assert "Traceback" not in log


# A configuration error that appears while serving.


async def test_a_later_configuration_error_is_named_by_readyz_until_it_is_fixed(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    url = await create_acl_user(redis_server.url, "carol", "pw", documented_acl_rule())
    admin = Redis.from_url(redis_server.url)
    env = {"COUNTER_PRESENCE_TTL": "2"}  # a presence report every 0.5 s
    try:
        async with spawned(tmp_path, url, env) as server:
            await eventually(lambda: readyz(server)[0] == 200, WAIT_S, "ready")
            await admin.execute_command("ACL", "SETUSER", "carol", "-hset")
            await eventually(lambda: "+hset" in problems(server), WAIT_S, "HSET named")
            assert readyz(server)[0] == 503  # PING and the relay work, presence does not
            await admin.execute_command("ACL", "SETUSER", "carol", "+hset")
            await eventually(lambda: problems(server) == "", WAIT_S, "cleared")
            await eventually(lambda: readyz(server)[0] == 200, WAIT_S, "ready again")
            # A new password, and every connection of the user dropped: reconnects fail.
            await admin.execute_command("ACL", "SETUSER", "carol", "resetpass", ">new")
            await admin.client_kill_filter(user="carol")
            await eventually(lambda: "password" in problems(server), WAIT_S, "password named")
            assert readyz(server)[0] == 503
            await admin.execute_command("ACL", "SETUSER", "carol", "resetpass", ">pw")
            # Cleared as each part gets through again (presence within its next report).
            await eventually(lambda: readyz(server)[0] == 200, WAIT_S, "ready again")
            await eventually(lambda: problems(server) == "", WAIT_S, "nothing named")
            assert "Traceback" not in server.log_tail(10_000)
    finally:
        await admin.aclose()


@contextlib.asynccontextmanager
async def spawned(
    tmp_path: Path, url: str, env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """`serve` on `url`, answering HTTP (ready or not), always stopped."""
    server = ServerProcess(tmp_path, url)
    argv = [sys.executable, "-m", "counter_service", "serve", "--port", str(server.port)]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTER_", "REDIS"))}
    server._spawn(argv, {**inherited, "REDIS_URL": url, **(env or {})})
    try:
        await eventually(lambda: status(server, "/healthz") == 200, WAIT_S, "serving")
        yield server
    finally:
        server.stop()


def status(server: ServerProcess, path: str) -> int | None:
    try:
        with urllib.request.urlopen(server.url + path, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def readyz(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
            return response.status, dict(json.load(response))
    except urllib.error.HTTPError as error:
        return error.code, dict(json.load(error))


def problems(server: ServerProcess) -> str:
    """What /readyz names under `redis_configuration`, joined ('' for nothing)."""
    return " | ".join(readyz(server)[1].get("redis_configuration", []))


def failures(server: ServerProcess) -> int:
    return int(worker_metrics(server.url)["subscriber"]["failures"])
