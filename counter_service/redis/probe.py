"""Telling a configuration error from an outage, at start and while running.

A wrong password, a missing ACL permission, a database the server does not have, a
certificate that does not verify: retrying cannot fix any of them, so `serve` stops at
once with one line that names the problem and the setting to change, and `/readyz`
names it if it happens later. An unreachable Redis, by contrast, is retried for ever.
"""

from __future__ import annotations

import logging
import ssl

from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from counter_service.errors import CounterServiceError, StoreError
from counter_service.names import Names
from counter_service.redis.connections import Connections, connections_for
from counter_service.redis.store import CounterStore
from counter_service.settings import Settings

logger = logging.getLogger(__name__)

URL = "the Redis URL (--redis-url or REDIS_URL)"
SAFE_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
"""Policies that never evict a key without a TTL (counters have none)."""


class RedisConfigError(CounterServiceError):
    """Redis refuses this configuration; the message names the setting to fix."""


def diagnose(error: BaseException) -> str | None:
    """What is wrong with the configuration if `error` says so; None for an outage
    (or anything retrying may fix)."""
    cause = _root(error)
    text = str(cause)
    if isinstance(cause, AuthenticationError) or "WRONGPASS" in text:
        return f"Redis refused the user name or password: fix them in {URL}"
    if isinstance(cause, NoPermissionError) or "NOPERM" in text:
        return f"the Redis user lacks a permission ({text}): grant it the ACL rule in the README"
    if "DB index is out of range" in text:
        return f"the database number in {URL} does not exist on this server ({text})"
    return _diagnose_tls(cause, text) or _diagnose_topology(cause, text)


def _diagnose_tls(cause: BaseException, text: str) -> str | None:
    if isinstance(cause, ssl.SSLCertVerificationError) or "certificate verify failed" in text:
        return (
            f"Redis's TLS certificate does not verify ({text}): set COUNTER_TLS_CA_FILE (or"
            " ssl_ca_certs in the URL) to the CA that signed it"
        )
    if "certificate required" in text or "tlsv13 alert" in text:
        return (
            "Redis wants a client certificate: set COUNTER_TLS_CERT_FILE and"
            " COUNTER_TLS_KEY_FILE (or ssl_certfile and ssl_keyfile in the URL)"
        )
    if "wrong version number" in text or "record layer failure" in text:
        return f"TLS and plain connections are mixed up ({text}): check rediss:// vs redis://"
    return None


def _diagnose_topology(cause: BaseException, text: str) -> str | None:
    if "No master found" in text or "MasterNotFound" in type(cause).__name__:
        return f"the sentinels know no such master ({text}): check the service name in {URL}"
    if "cluster support disabled" in text or "Cluster mode is not enabled" in text:
        return f"this Redis is not a cluster: use redis:// instead of redis+cluster:// in {URL}"
    if isinstance(cause, RedisClusterException) and "startup nodes" not in text:
        return f"the cluster cannot be used ({text}): check the seed nodes in {URL}"
    return None


def _root(error: BaseException) -> BaseException:
    """The redis-py or ssl error behind our own wrappers."""
    while isinstance(error, (StoreError, RedisError)) and error.__cause__ is not None:
        if isinstance(error, (AuthenticationError, NoPermissionError, ResponseError)):
            break
        error = error.__cause__
    return error


async def check_redis(settings: Settings) -> None:
    """Connect once as the service will, and run what it needs (a script, a publish,
    a subscribe). Raises `RedisConfigError` for a configuration error; logs and returns
    if Redis is unreachable (the service retries); warns about an eviction policy that
    could drop counters."""
    if settings.redis_url is None:
        return
    connections = connections_for(settings, "cs:probe")
    try:
        await _exercise(connections, Names(settings.namespace, connections.sharded))
        await _warn_about_eviction(connections)
    except Exception as exc:
        problem = diagnose(exc)
        if problem is not None:
            raise RedisConfigError(problem) from exc
        logger.warning("Redis at %s is unreachable (%s); retrying", settings.redacted_url, exc)
    finally:
        await connections.aclose()


async def _exercise(connections: Connections, names: Names) -> None:
    await connections.commands.ping()
    await CounterStore(connections.commands, names).read("probe")
    channel = f"{names.namespace}:probe"
    await connections.commands.execute_command(names.publish_command, channel, "")
    pubsub = connections.new_pubsub()
    try:
        await pubsub.subscribe([channel])
    finally:
        await pubsub.aclose()


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


def _flatten(reply: object) -> list[tuple[object, object]]:
    """(key, value) pairs of CONFIG GET's reply: a dict, or one dict per cluster node."""
    if isinstance(reply, dict):
        pairs: list[tuple[object, object]] = []
        for key, value in reply.items():
            pairs += _flatten(value) if isinstance(value, dict) else [(key, value)]
        return pairs
    return []
