"""Counter operations against Redis: increment, read back, and presence reports.

This is the seam between the library and Redis's errors: what leaves it is a
`CounterEvent` or one of `counter_service.errors`, never a redis-py exception."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    AuthenticationError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    NotReplicated,
    StoreError,
    StoreUnavailable,
)
from counter_service.events import INT64_MAX, CounterEvent
from counter_service.names import ONLINE, PROBE, Names, check_counter_name
from counter_service.redis.scripts import INCREMENT, PRESENCE, READ
from counter_service.redis.text import brief

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
        self._errors: dict[str, StoreError] = {}

    def errors(self) -> list[StoreError]:
        """The latest failure of increments, of reads and of presence reports, each until
        one succeeds again: readiness tells a configuration error in them from an outage."""
        return list(self._errors.values())

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
        with self._recorded("increment"):
            replies = await self._pipelined(self._increment, calls, wait=self._wait)
        results = [_result(name, reply) for (name, _), reply in zip(items, replies, strict=True)]
        self._record("increment", results)
        return results

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
        with self._recorded("read"):
            replies = await self._pipelined(self._read, calls)
        results = [_result(name, reply) for name, reply in zip(names, replies, strict=True)]
        self._record("read", results)
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
        with self._recorded("presence"), translated_errors():
            reply = await self._run(self._presence, keys, args)
        self._succeeded("presence")
        return _event(ONLINE, reply)

    async def probe(self, worker_id: str) -> None:
        """Run each script once as the service runs it (the increment pipelined, with
        `WAIT` if set; presence joining and leaving), on the probe's own keys, then
        delete them: no counter is touched. Raises what Redis refused, as `incr` would."""
        keys = value, version, _ = self._names.probe_keys
        channel, command = self._names.probe_channel, self._names.publish_command
        # Fresh keys, whatever an interrupted probe left: each script makes every write.
        await self._delete(keys)
        replies = [await self._probe_presence(worker_id, 0)]  # HSET, SET, INCR, PUBLISH
        increment = ([value, version], [channel, PROBE, 0, command])
        replies += await self._pipelined(self._increment, [increment], wait=self._wait)
        replies += await self._pipelined(self._read, [([value, version], [])])
        replies.append(await self._probe_presence(worker_id, -1))  # HDEL
        errors = [
            r for r in (_result(PROBE, reply) for reply in replies) if isinstance(r, Exception)
        ]
        refused = [e for e in errors if not isinstance(e, NotReplicated)]
        if refused:
            raise refused[0]
        await self._delete(keys)
        if errors:
            raise errors[0]  # not replicated in time: worth a warning, not a refusal

    async def _probe_presence(self, worker_id: str, live: int) -> Any:
        value, version, presence = self._names.probe_keys
        channel, command = self._names.probe_channel, self._names.publish_command
        args: list[str | int] = [worker_id, live, 1000, channel, PROBE, command]
        with translated_errors():
            return await self._run(self._presence, [presence, value, version], args)

    async def _delete(self, keys: Sequence[str]) -> None:
        with translated_errors():
            await self._client.delete(*keys)

    @contextlib.contextmanager
    def _recorded(self, kind: str) -> Iterator[None]:
        """Remember a failure of a whole call of `kind`."""
        try:
            yield
        except StoreError as exc:
            self._errors[kind] = exc
            raise

    def _record(self, kind: str, results: Sequence[object]) -> None:
        """Remember the first item Redis refused (a counter's own problem is not the
        store's), or that a call of `kind` went through."""
        refused = (
            r for r in results if isinstance(r, StoreError) and not isinstance(r, NotReplicated)
        )
        error = next(refused, None)
        if error is None:
            self._succeeded(kind)
        else:
            self._errors[kind] = error

    def _succeeded(self, kind: str) -> None:
        """Forget the failure of `kind`, and any other that was about reaching or logging
        in to Redis (this call did both); a refused command waits for its own success."""
        self._errors.pop(kind, None)
        for other, error in list(self._errors.items()):
            if _about_login(error):
                del self._errors[other]

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

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call; on a cluster, straight to the slot's node (see `_on_node`)."""
        if not self._cluster:
            return await script(keys=keys, args=args)
        try:
            return await _on_node(self._client, script, keys, args)
        except _REROUTE:
            # redis-py's own path: it maps the cluster again, reconnects, loads the script.
            return await script(keys=keys, args=args)

    async def _on_cluster(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        async with self._cluster_slots:
            return await self._run(script, keys, args)


# redis-py 8.1's asyncio cluster follows an ASK redirect (the slot is migrating, and its
# keys are on the importing node already) by sending ASKING on one pooled connection and
# the command on the next free one: with two idle connections to that node, the command
# arrives without ASKING, is refused with MOVED, goes back to the owner, gets ASK again,
# and ends in "TTL exhausted" (leaking node objects on the way). So a script goes to its
# slot's node here, and an ASK is followed with ASKING and the script on one connection
# (as redis-py's sync client does); whatever else redirects or breaks is left to redis-py.
_REROUTE = (
    MovedError,
    TryAgainError,
    NoScriptError,
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
)


async def _on_node(client: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
    """`script` on the node that serves its keys' slot, an ASK redirect followed."""
    command = ("EVALSHA", script.sha, len(keys), *keys, *args)
    node = client.get_node_from_key(keys[0])  # SlotNotCoveredError before the first map
    try:
        return await node.execute_command(*command)
    except MovedError:
        raise
    except AskError as ask:
        target = _node_at(client, ask)
    try:
        return await _asking(target, command)
    except NoScriptError:  # the importing node had never run it
        await target.execute_command("SCRIPT", "LOAD", script.script)
        return await _asking(target, command)


async def _asking(node: Any, command: tuple[Any, ...]) -> Any:
    """`command` on `node` right after ASKING, on one connection."""
    asking, call = PipelineCommand(0, "ASKING"), PipelineCommand(1, *command)
    await node.execute_pipeline([asking, call])
    for done in (asking, call):
        if isinstance(done.result, Exception):
            raise done.result
    return call.result


def _node_at(client: Any, redirect: AskError) -> Any:
    node = client.get_node(host=redirect.host, port=redirect.port)
    if node is None:  # not in redis-py's map yet: its own path will learn it
        raise RedisClusterException(f"redirected to {redirect.host}:{redirect.port}")
    return node


def _about_login(error: StoreError) -> bool:
    """True if `error` was about reaching Redis or logging in, not a refused command."""
    return isinstance(error, StoreUnavailable) or isinstance(error.__cause__, AuthenticationError)


def _waited(replies: list[Any], wanted: int) -> list[Any]:
    """The scripts' replies, each increment failed with `NotReplicated` if fewer than
    `wanted` replicas acknowledged (the last reply is WAIT's count)."""
    *replies, acknowledged = replies
    if isinstance(acknowledged, int) and acknowledged >= wanted:
        return replies
    if isinstance(acknowledged, Exception):  # WAIT itself refused (an ACL without +wait)
        return [reply if isinstance(reply, Exception) else acknowledged for reply in replies]
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
    """Turn redis-py's connection failures (a cluster it cannot map included) into
    `StoreUnavailable`, and any other refusal of a whole command or pipeline (credentials
    too, which redis-py raises as a connection error) into `StoreError`. Their messages
    quote redis-py in one short line (it can embed the repr of every sentinel's client);
    the whole error stays their `__cause__`."""
    try:
        yield
    except AuthenticationError as exc:
        raise StoreError(f"Redis refused the credentials: {brief(exc)}") from exc
    except (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError) as exc:
        raise StoreUnavailable(f"Redis is unreachable: {brief(exc)}") from exc
    except RedisError as exc:
        raise StoreError(f"Redis refused: {brief(exc)}") from exc


def _result(name: str, reply: Any) -> CounterEvent | Exception:
    if not isinstance(reply, Exception):
        return _event(name, reply)
    if isinstance(reply, NotReplicated):
        return reply
    error = _translate(name, reply)
    error.__cause__ = reply  # what Redis said, for probe.diagnose
    return error


def _translate(name: str, reply: Exception) -> Exception:
    if isinstance(reply, AuthenticationError):
        return StoreError(f"Redis refused the credentials: {brief(reply)}")
    if isinstance(reply, NoPermissionError):
        return StoreError(f"Redis refused counter {name!r}: NOPERM {brief(reply)}")
    if isinstance(reply, ResponseError):
        return _refusal(name, reply)
    if isinstance(reply, (RedisConnectionError, RedisTimeoutError, RedisClusterException)):
        return StoreUnavailable(f"Redis is unreachable: {brief(reply)}")
    return StoreError(f"Redis refused counter {name!r}: {brief(reply)}")


def _refusal(name: str, reply: ResponseError) -> Exception:
    code, _, rest = str(reply).partition(" ")
    key, _, detail = rest.partition(" ")
    if code == "CORRUPT":
        return CorruptCounter(name, key, detail)
    if code == "OVERFLOW":
        return CounterOverflow(f"counter {name!r}: {detail}")
    return StoreError(f"Redis refused counter {name!r}: {brief(reply)}")


def _event(name: str, reply: Sequence[Any]) -> CounterEvent:
    value, version = reply
    return CounterEvent(name=name, value=int(value or 0), version=int(version or 0))
