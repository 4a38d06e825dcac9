"""The start probe: telling a configuration error from an outage before serving.

A wrong password, a missing ACL permission, a database the server does not have, a
certificate that does not verify, a Sentinel service nobody monitors: retrying cannot fix
any of them, so `serve` stops at once with one line that names the problem and the
setting to change (`counter_service.redis.diagnosis` reads Redis's refusals; `/readyz`
names them if they happen later). An unreachable Redis (nothing listens, a timeout, no
sentinel or seed node answers, a failover in progress) is an outage: it is retried for
ever. When the probe could not reach Redis, it asks other questions that may tell a
configuration error behind it (the sentinels, the other protocol, the server's TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError

from counter_service.errors import (
    CounterServiceError,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from counter_service.names import Names
from counter_service.pubsub.subscriber import PubSubConnection
from counter_service.redis import tls
from counter_service.redis.connections import (
    Client,
    Connections,
    SentinelConnections,
    connections_for,
)
from counter_service.redis.diagnosis import (
    NOT_A_SENTINEL,
    SENTINEL_PASSWORD,
    URL,
    diagnose,
    diagnose_tls,
)
from counter_service.redis.scripts import INCREMENT, PRESENCE, READ
from counter_service.redis.store import CounterStore
from counter_service.redis.text import brief
from counter_service.redis.urls import RedisTarget, parse_redis_url
from counter_service.settings import Settings

__all__ = ["RedisConfigError", "check_redis"]

logger = logging.getLogger(__name__)

SAFE_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
"""Policies that never evict a key without a TTL (counters have none)."""
CONFIRM_TIMEOUT_S = 5.0
"""How long the probe waits for Redis to confirm a subscription."""
HANDSHAKE_TIMEOUT_S = 1.0
"""How long the probe gives the other protocol (TLS or plain) when it guesses a mix-up."""
PROBE_WORKER = "cs:probe"
_TROUBLE = (RedisError, RedisClusterException, OSError, StoreError)


class RedisConfigError(CounterServiceError):
    """Redis refuses this configuration; the message names the setting to fix."""


async def check_redis(settings: Settings) -> None:
    """Connect once as the service will, as its user, and run every command it will
    (each script, a publish, a subscribe and its confirmation, WAIT if set). Raises
    `RedisConfigError` for a configuration error; logs one line and returns if Redis is
    unreachable (the service retries); warns about an eviction policy that could drop
    counters."""
    if settings.redis_url is None:
        return
    target = parse_redis_url(settings.redis_url)
    problem = tls.files_problem(settings, target)
    if problem is not None:
        raise RedisConfigError(problem)
    connections = connections_for(settings, PROBE_WORKER)
    try:
        await _exercise(connections, settings)
        await _warn_about_eviction(connections)
    except _TROUBLE as exc:
        problem = await _explain(exc, connections, settings, target)
        if problem is not None:
            raise RedisConfigError(problem) from exc
        logger.warning(
            "Redis at %s is unreachable (%s); retrying", settings.redacted_url, brief(exc)
        )
    finally:
        await connections.aclose()


async def _exercise(connections: Connections, settings: Settings) -> None:
    names = Names(settings.namespace, connections.sharded)
    client = connections.commands
    await client.ping()
    if not connections.sharded:  # pipelines ask which scripts Redis has (not on a cluster)
        await client.script_exists(client.register_script(READ).sha)
    # Scripts that Redis has cached already (another worker loaded them) would skip this.
    for script in (INCREMENT, READ, PRESENCE):
        await client.script_load(script)
    store = CounterStore(
        client,
        names,
        wait_replicas=settings.wait_replicas,
        wait_timeout_ms=settings.wait_timeout_ms,
    )
    try:
        await store.probe(PROBE_WORKER)
    except NotReplicated as exc:
        await _too_few_replicas(client, settings.wait_replicas, exc)
    await client.execute_command(names.publish_command, names.probe_channel, "")
    await _subscribe(connections, names.probe_channel)


async def _subscribe(connections: Connections, channel: str) -> None:
    """Subscribe as the relay does and wait for Redis to confirm; on a cluster, where
    the relay also unsubscribes (a page stops watching), that too."""
    pubsub = connections.new_pubsub()
    try:
        await pubsub.subscribe([channel])
        await _confirmed(pubsub, "subscribe", channel)
        if connections.sharded:
            await pubsub.unsubscribe([channel])
            await _confirmed(pubsub, "unsubscribe", channel)
    finally:
        await pubsub.aclose()


async def _confirmed(pubsub: PubSubConnection, kind: str, channel: str) -> None:
    """Wait for Redis's confirmation (a refusal is raised by `get_message`)."""
    try:
        async with asyncio.timeout(CONFIRM_TIMEOUT_S):
            while True:
                message = await pubsub.get_message(timeout=CONFIRM_TIMEOUT_S)
                if message and message["type"] == kind and message["channel"] == channel.encode():
                    return
    except TimeoutError:
        raise StoreUnavailable(f"Redis did not confirm the {kind} to {channel}") from None


async def _too_few_replicas(client: Client, wanted: int, error: NotReplicated) -> None:
    """The probe's increment was not replicated in time. A configuration error if the
    master has no replica and has had none lately; a warning if one left lately (it may
    be restarting: that must not keep workers from starting), if replicas are there but
    slow, or if the user may not run INFO."""
    connected, lately = await _replicas(client)
    if connected == 0 and not lately:
        raise RedisConfigError(
            f"COUNTER_WAIT_REPLICAS={wanted}, but the Redis master has no replica (and had"
            " none lately): every increment would be reported not copied; add a replica"
            " or set COUNTER_WAIT_REPLICAS=0"
        )
    if connected is not None and connected < wanted:
        logger.warning(
            "at start, only %d of COUNTER_WAIT_REPLICAS=%d replicas are connected to the"
            " master (one may be restarting): increments are reported not copied until"
            " enough are back",
            connected,
            wanted,
        )
    else:
        logger.warning("at start, %s (COUNTER_WAIT_REPLICAS)", brief(error))


async def _replicas(client: Client) -> tuple[int | None, bool]:
    """How many replicas are connected to the master, and whether one was within
    `repl-backlog-ttl` (an hour by default: Redis keeps its replication backlog that long
    after the last replica left); (None, True) if INFO is refused (nothing is known)."""
    try:
        info = await client.info("replication")
    except RedisError:
        return None, True
    return int(info.get("connected_slaves", 0)), bool(int(info.get("repl_backlog_active", 0)))


async def _explain(
    error: BaseException, connections: Connections, settings: Settings, target: RedisTarget
) -> str | None:
    """The configuration error behind `error`, if any. The sentinels are asked first:
    redis-py's error does not say which listed host is not a sentinel."""
    if isinstance(connections, SentinelConnections):
        problem = await _sentinels_problem(connections.sentinel, target.service)
        if problem is not None:
            return problem
    return diagnose(error) or await _diagnose_unreachable(settings, target)


async def _diagnose_unreachable(settings: Settings, target: RedisTarget) -> str | None:
    """A configuration error behind what looks like an outage, when another question
    answers it: a server that speaks the other protocol (TLS or plain) than the URL's,
    or whose TLS refuses this client's certificate (or its lack of one)."""
    if not target.hosts:
        return None
    host, port = target.hosts[0]
    if target.tls and await _speaks_plain(host, port):
        return f"Redis at {host}:{port} does not speak TLS: use redis:// in {URL}"
    if target.tls:
        said = await tls.refusal(host, port, tls.tls_options(settings, target))
        return None if said is None else diagnose_tls(said)
    if target.kind != "sentinel" and await _speaks_tls(host, port):
        return f"Redis at {host}:{port} speaks TLS only: use rediss:// in {URL}"
    return None


async def _sentinels_problem(sentinel: Sentinel, service: str) -> str | None:
    """A configuration error if a listed host is no sentinel, if the sentinels want a
    password, or if some answered and none monitors `service`; None if none answered,
    or one knows it (its master is down, or being replaced)."""
    problems: list[str] = []
    known = False
    for client in sentinel.sentinels:
        try:
            masters = await client.sentinel_masters()
        except _TROUBLE as exc:
            problems += _sentinel_refusal(client, exc)
            continue
        known = known or service in masters
        if service not in masters:
            problems.append(
                f"the sentinels monitor no master named {service!r}: check the service in {URL}"
            )
    not_sentinels = [p for p in problems if "is not a sentinel" in p]
    if not_sentinels or not known:  # redis-py gives up at a host that is not a sentinel
        return next(iter(not_sentinels + problems), None)
    return None


def _sentinel_refusal(client: Redis, error: BaseException) -> list[str]:
    """The configuration error in a sentinel's refusal of SENTINEL MASTERS, if any."""
    if isinstance(error, AuthenticationError):
        return [SENTINEL_PASSWORD]
    if isinstance(error, ResponseError) and "unknown command" in str(error):
        kwargs = client.connection_pool.connection_kwargs
        return [NOT_A_SENTINEL.format(host=f"{kwargs.get('host')}:{kwargs.get('port')}")]
    return []


async def _speaks_tls(host: str, port: int) -> bool:
    """True if a TLS handshake (certificate unchecked: only the protocol matters) succeeds."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return False
    await tls.close(writer)
    return True


async def _speaks_plain(host: str, port: int) -> bool:
    """True if a plain PING gets a RESP reply (PONG, or an error such as NOAUTH)."""
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                reply = await reader.read(64)
            finally:
                await tls.close(writer)
    except (OSError, TimeoutError):
        return False
    return reply[:1] in (b"+", b"-")


async def _warn_about_eviction(connections: Connections) -> None:
    try:
        reply = await connections.commands.config_get("maxmemory-policy")
    except RedisError as exc:
        logger.debug("cannot read maxmemory-policy: %s", exc)  # ACL users usually may not
        return
    policies = {str(v) for k, v in _flatten(reply) if str(k) == "maxmemory-policy"}
    for policy in policies - set(SAFE_POLICIES):
        logger.warning(
            "Redis's maxmemory-policy is %s: when Redis is full it evicts keys without a"
            " TTL, counters included (they would restart from 0). Set maxmemory-policy"
            " noeviction (or a volatile-* policy).",
            policy,
        )


def _flatten(reply: Any) -> list[tuple[object, object]]:
    """(key, value) pairs of CONFIG GET's reply: a dict, or one dict per cluster node."""
    if isinstance(reply, dict):
        pairs: list[tuple[object, object]] = []
        for key, value in reply.items():
            pairs += _flatten(value) if isinstance(value, dict) else [(key, value)]
        return pairs
    return []
