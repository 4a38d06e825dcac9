"""Counter operations against Redis: increment, read back, and presence reports.

This is the seam between the library and Redis's errors: what leaves it is a
`CounterEvent` or one of `counter_service.errors`, never a redis-py exception."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from counter_service.events import INT64_MAX, CounterEvent
from counter_service.names import ONLINE, Names, check_counter_name
from counter_service.redis.scripts import INCREMENT, PRESENCE, READ

ReadResult = CounterEvent | CorruptCounter


class CounterStore:
    """Atomic counter operations: every change is checked, written and published by
    one script.

    `wait_replicas` > 0 acknowledges increments only once that many replicas have them
    (`WAIT`, at most `wait_timeout_ms`); otherwise the increment counted on the master
    but the caller gets `NotReplicated`. Not on a cluster: there a pipeline spans
    several connections, and `WAIT` only covers the writes of its own."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        names: Names,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
        cluster_concurrency: int = 2,
    ) -> None:
        self._client = client
        self._names = names
        self._cluster = isinstance(client, RedisCluster)
        # redis-py's cluster nodes refuse a connection past their pool size instead of
        # waiting for one, so concurrent calls are bounded here.
        self._cluster_slots = asyncio.Semaphore(cluster_concurrency)
        self._wait = (wait_replicas, wait_timeout_ms) if wait_replicas else None
        self._increment = client.register_script(INCREMENT)
        self._read = client.register_script(READ)
        self._presence = client.register_script(PRESENCE)

    async def incr(self, name: str, amount: int = 1) -> CounterEvent:
        """Add `amount` to counter `name` and publish the change; return the new state."""
        [result] = await self.incr_many([(name, amount)])
        if isinstance(result, Exception):
            raise result
        return result

    async def incr_many(self, items: Sequence[tuple[str, int]]) -> list[CounterEvent | Exception]:
        """Run several increments in one pipelined round trip, each still atomic.

        One result per item, in order: its new state, or `CorruptCounter`,
        `CounterOverflow` or `StoreError` for that item alone. Raises
        `StoreUnavailable` if Redis cannot be reached."""
        calls = [self._counter_call(name, amount) for name, amount in items]
        replies = await self._pipelined(self._increment, calls, wait=self._wait)
        return [_result(name, reply) for (name, _), reply in zip(items, replies, strict=True)]

    async def read(self, name: str) -> CounterEvent:
        """Counter `name` as Redis holds it now (value 0 at version 0 if never changed)."""
        [result] = await self.read_many([name])
        if isinstance(result, Exception):
            raise result
        return result

    async def read_many(self, names: Iterable[str]) -> list[ReadResult]:
        """Each counter as Redis holds it, in one pipelined round trip; a corrupt
        counter yields its `CorruptCounter` without failing the others."""
        names = list(names)
        calls = [self._counter_call(name) for name in names]
        replies = await self._pipelined(self._read, calls)
        results = [_result(name, reply) for name, reply in zip(names, replies, strict=True)]
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, CorruptCounter):
                raise result
        return results  # type: ignore[return-value]  # only events and CorruptCounter remain

    async def report_presence(self, worker_id: str, live: int, ttl_ms: int) -> CounterEvent:
        """Record this worker's live connections for `ttl_ms` and return the total online.

        `live=-1` removes the worker at once (graceful shutdown)."""
        names = self._names
        keys = [names.presence, names.value(ONLINE), names.version(ONLINE)]
        channel, command = names.counter_channel(ONLINE), names.publish_command
        args: list[str | int] = [worker_id, live, ttl_ms, channel, ONLINE, command]
        with translated_errors():
            return _event(ONLINE, await self._presence(keys=keys, args=args))

    def _counter_call(self, name: str, amount: int | None = None) -> tuple[list[str], list[Any]]:
        keys = [self._names.value(name), self._names.version(name)]
        if amount is None:
            return keys, []
        check_amount(amount)
        channel, command = self._names.counter_channel(name), self._names.publish_command
        return keys, [channel, name, amount, command]

    async def _pipelined(
        self,
        script: Any,
        calls: list[tuple[list[str], list[Any]]],
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """One reply per call (an exception for a call Redis refused), in one round
        trip; on a cluster, concurrent calls routed to each key's shard."""
        if not calls:
            return []
        with translated_errors():
            if self._cluster:
                jobs = (self._on_cluster(script, keys, args) for keys, args in calls)
                return list(await asyncio.gather(*jobs, return_exceptions=True))
            async with self._client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                if wait is not None:
                    pipe.execute_command("WAIT", *wait)
                replies = list(await pipe.execute(raise_on_error=False))
        return replies if wait is None else _waited(replies, wait[0])

    async def _on_cluster(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with self._cluster_slots:
            return await script(keys=keys, args=args)


def _waited(replies: list[Any], wanted: int) -> list[Any]:
    """The scripts' replies, each increment failed with `NotReplicated` if fewer than
    `wanted` replicas acknowledged (the last reply is WAIT's count)."""
    *replies, acknowledged = replies
    if isinstance(acknowledged, int) and acknowledged >= wanted:
        return replies
    problem = NotReplicated(
        f"counted on the master, but only {acknowledged} of {wanted} replicas confirmed it"
        " in time: a failover now could lose it"
    )
    return [reply if isinstance(reply, Exception) else problem for reply in replies]


def check_increment(name: str, amount: int) -> None:
    """Raise `InvalidCounterName` or `ValueError` unless this increment is well-formed."""
    check_counter_name(name)
    check_amount(amount)


def check_amount(amount: object) -> None:
    """Raise `ValueError` unless `amount` is a 64-bit integer (bool is not)."""
    if type(amount) is not int or not -INT64_MAX <= amount <= INT64_MAX:
        raise ValueError(f"amount {amount!r} must be a 64-bit integer")


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Turn redis-py's connection failures into `StoreUnavailable`, and any other
    refusal of a whole command or pipeline into `StoreError`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
    except RedisError as exc:
        raise StoreError(f"Redis refused: {exc}") from exc


def _result(name: str, reply: Any) -> CounterEvent | Exception:
    if not isinstance(reply, Exception):
        return _event(name, reply)
    if isinstance(reply, NotReplicated):
        return reply
    error = _translate(name, reply)
    error.__cause__ = reply  # what Redis said, for probe.diagnose
    return error


def _translate(name: str, reply: Exception) -> Exception:
    if isinstance(reply, NoPermissionError):
        return StoreError(f"Redis refused counter {name!r}: NOPERM {reply}")
    if isinstance(reply, ResponseError):
        return _refusal(name, str(reply))
    if isinstance(reply, (RedisConnectionError, RedisTimeoutError)):
        return StoreUnavailable(f"Redis is unreachable: {reply}")
    return StoreError(f"Redis refused counter {name!r}: {reply}")


def _refusal(name: str, message: str) -> Exception:
    code, _, rest = message.partition(" ")
    key, _, detail = rest.partition(" ")
    if code == "CORRUPT":
        return CorruptCounter(name, key, detail)
    if code == "OVERFLOW":
        return CounterOverflow(f"counter {name!r}: {detail}")
    return StoreError(f"Redis refused counter {name!r}: {message}")


def _event(name: str, reply: Sequence[Any]) -> CounterEvent:
    value, version = reply
    return CounterEvent(name=name, value=int(value or 0), version=int(version or 0))
