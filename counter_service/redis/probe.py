"""Telling a configuration error from an outage, at start and while running.

A wrong password, a missing ACL permission, a database the server does not have, a
certificate that does not verify, a Sentinel service nobody monitors: retrying cannot fix
any of them, so `serve` stops at once with one line that names the problem and the
setting to change, and `/readyz` names it if it happens later. An unreachable Redis
(nothing listens, a timeout, no sentinel or seed node answers, a failover in progress)
is an outage: it is retried for ever.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from typing import Any

from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from counter_service.errors import (
    CounterServiceError,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from counter_service.names import Names
from counter_service.pubsub.subscriber import PubSubConnection, brief
from counter_service.redis.connections import Connections, SentinelConnections, connections_for
from counter_service.redis.scripts import INCREMENT, PRESENCE, READ
from counter_service.redis.store import CounterStore
from counter_service.redis.urls import RedisTarget, parse_redis_url
from counter_service.settings import Settings

logger = logging.getLogger(__name__)

URL = "the Redis URL (--redis-url or REDIS_URL)"
ACL_FIX = "(README: Production Redis, ACL)"
SAFE_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
"""Policies that never evict a key without a TTL (counters have none)."""
CONFIRM_TIMEOUT_S = 5.0
"""How long the probe waits for Redis to confirm a subscription."""
HANDSHAKE_TIMEOUT_S = 1.0
"""How long the probe gives the other protocol (TLS or plain) when it guesses a mix-up."""
PROBE_WORKER = "cs:probe"
_TROUBLE = (RedisError, RedisClusterException, OSError, StoreError)
# redis-py names the command ('client|setname'), the scripts append theirs: (HSET).
_COMMAND_RE = re.compile(r"'([a-z|_-]+)' command|\(([A-Z]+)\)")


class RedisConfigError(CounterServiceError):
    """Redis refuses this configuration; the message names the setting to fix."""


def diagnose(error: BaseException) -> str | None:
    """What is wrong with the configuration if `error` says so, in one short line; None
    for an outage (or anything retrying may fix)."""
    cause = _root(error)
    text = _said(cause)
    if isinstance(cause, AuthenticationError) or "WRONGPASS" in text:
        return f"Redis refused the user name or password: fix them in {URL}"
    if _is_permission(cause, text):
        return _permission(text)
    if "DB index is out of range" in text:
        return f"the database number in {URL} does not exist on this server"
    return _diagnose_tls(text) or _diagnose_topology(text)


def _is_permission(cause: BaseException, text: str) -> bool:
    return isinstance(cause, NoPermissionError) or any(
        sign in text for sign in ("NOPERM", "no permissions", "user executing the script can't")
    )


def _permission(text: str) -> str:
    if "keys" in text:
        return f"the Redis user may not use the namespace's keys: add ~<namespace>:* {ACL_FIX}"
    if "channel" in text:
        return f"the Redis user may not use the namespace's channels: add &<namespace>:* {ACL_FIX}"
    found = _COMMAND_RE.search(text)
    if found is None:
        return f"the Redis user lacks a permission ({text}): grant it the ACL rule {ACL_FIX}"
    command = (found.group(1) or found.group(2)).lower()
    shown = command.replace("|", " ").upper()
    return f"the Redis user may not run {shown}: add +{command} to its ACL rule {ACL_FIX}"


def _diagnose_tls(text: str) -> str | None:
    if "certificate verify failed" in text:
        return (
            "Redis's TLS certificate does not verify: set COUNTER_TLS_CA_FILE (or"
            f" ssl_ca_certs in the URL) to the CA that signed it ({_reason(text)})"
        )
    if "certificate required" in text or "tlsv13 alert" in text:
        return (
            "Redis wants a client certificate: set COUNTER_TLS_CERT_FILE and"
            " COUNTER_TLS_KEY_FILE (or ssl_certfile and ssl_keyfile in the URL)"
        )
    if "wrong version number" in text or "record layer failure" in text:
        return f"TLS and plain connections are mixed up: check rediss:// vs redis:// in {URL}"
    return None


def _reason(text: str) -> str:
    """The part of an OpenSSL message after its own prefix."""
    return text.rpartition("certificate verify failed: ")[2].split(" (_ssl")[0]


def _diagnose_topology(text: str) -> str | None:
    if "cluster support disabled" in text or "Cluster mode is not enabled" in text:
        return f"this Redis is not a cluster: use redis:// instead of redis+cluster:// in {URL}"
    return None


def _root(error: BaseException) -> BaseException:
    """The redis-py or ssl error behind our own wrappers and redis-py's (a cluster's
    "cannot be connected" wraps each node's error, sometimes only as the context)."""
    while isinstance(error, (StoreError, RedisError, RedisClusterException)):
        if isinstance(error, (AuthenticationError, NoPermissionError, ResponseError)):
            break
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error


def _said(error: BaseException) -> str:
    """What Redis said, on one line, without the script location Redis appends."""
    return brief(error).split(" script: ", 1)[0]


async def check_redis(settings: Settings) -> None:
    """Connect once as the service will, as its user, and run every command it will
    (each script, a publish, a subscribe and its confirmation, WAIT if set). Raises
    `RedisConfigError` for a configuration error; logs one line and returns if Redis is
    unreachable (the service retries); warns about an eviction policy that could drop
    counters."""
    if settings.redis_url is None:
        return
    target = parse_redis_url(settings.redis_url)
    connections = connections_for(settings, PROBE_WORKER)
    try:
        await _exercise(connections, settings)
        await _warn_about_eviction(connections)
    except _TROUBLE as exc:
        problem = diagnose(exc) or await _diagnose_unreachable(connections, target)
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
        logger.warning("at start, %s (COUNTER_WAIT_REPLICAS)", brief(exc))
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


async def _diagnose_unreachable(connections: Connections, target: RedisTarget) -> str | None:
    """A configuration error behind what looks like an outage, when another question
    answers it: sentinels that answer but monitor no such service, or a server that
    speaks the other protocol (TLS or plain) than the URL's."""
    if isinstance(connections, SentinelConnections):
        problem = await _unknown_service(connections.sentinel, target.service)
        if problem is not None:
            return problem
    if not target.hosts or target.kind == "sentinel":
        return None
    host, port = target.hosts[0]
    if target.tls and await _speaks_plain(host, port):
        return f"Redis at {host}:{port} does not speak TLS: use redis:// in {URL}"
    if not target.tls and await _speaks_tls(host, port):
        return f"Redis at {host}:{port} speaks TLS only: use rediss:// in {URL}"
    return None


async def _unknown_service(sentinel: Sentinel, service: str) -> str | None:
    """A configuration error if a sentinel answered and none monitors `service`; None
    if no sentinel answered, or one knows it (its master is down, or being replaced)."""
    answered = False
    for client in sentinel.sentinels:
        try:
            masters = await client.sentinel_masters()
        except _TROUBLE:
            continue
        answered = True
        if service in masters:
            return None
    if not answered:
        return None
    return f"the sentinels monitor no master named {service!r}: check the service in {URL}"


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
    writer.close()
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
                writer.close()
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
