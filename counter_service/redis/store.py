"""Counter operations against Redis: increment, snapshot and presence reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from counter_service.events import CounterEvent
from counter_service.names import Names, check_counter_name
from counter_service.redis.scripts import INCREMENT, PRESENCE

ONLINE = "online"

_INT64_MAX = 2**63 - 1


class CounterStore:
    """Atomic counter operations: every change is written and published by one script."""

    def __init__(self, client: Redis, names: Names) -> None:
        self._client = client
        self._names = names
        self._increment = client.register_script(INCREMENT)
        self._presence = client.register_script(PRESENCE)

    async def incr(self, name: str, amount: int = 1) -> CounterEvent:
        """Add `amount` to counter `name` and publish the change; return the new state."""
        keys, args = self._increment_call(name, amount)
        return _event(name, await self._increment(keys=keys, args=args))

    async def incr_many(self, items: Sequence[tuple[str, int]]) -> list[CounterEvent | Exception]:
        """Run several increments in one pipelined round trip, each still atomic.

        One result per item, in order: its new state, or the error Redis gave for it."""
        calls = [self._increment_call(name, amount) for name, amount in items]
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._increment(keys=keys, args=args, client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        return [
            reply if isinstance(reply, Exception) else _event(name, reply)
            for (name, _), reply in zip(items, replies, strict=True)
        ]

    def _increment_call(self, name: str, amount: int) -> tuple[list[str], list[str | int]]:
        check_increment(name, amount)
        keys = [self._names.value(name), self._names.version(name)]
        return keys, [self._names.channel, name, amount]

    async def snapshot(self, names: Iterable[str]) -> list[CounterEvent]:
        """Current value and version of each counter, read atomically in one MGET.

        A counter that was never changed reads as value 0 at version 0."""
        names = list(names)
        keys = [
            key for name in names for key in (self._names.value(name), self._names.version(name))
        ]
        raw = await self._client.mget(keys)
        return [_event(name, raw[2 * i : 2 * i + 2]) for i, name in enumerate(names)]

    async def report_presence(self, worker_id: str, live: int, ttl_ms: int) -> CounterEvent:
        """Record this worker's live connections for `ttl_ms` and return the total online.

        `live=-1` removes the worker at once (graceful shutdown)."""
        names = self._names
        keys = [
            names.presence_workers,
            names.presence_worker(worker_id),
            names.value(ONLINE),
            names.version(ONLINE),
        ]
        args: list[str | int] = [
            worker_id,
            live,
            ttl_ms,
            names.presence_prefix,
            names.channel,
            ONLINE,
        ]
        return _event(ONLINE, await self._presence(keys=keys, args=args))


def check_increment(name: str, amount: int) -> None:
    """Raise `InvalidCounterName` or `ValueError` unless this increment is well-formed."""
    check_counter_name(name)
    if type(amount) is not int or not -_INT64_MAX <= amount <= _INT64_MAX:
        raise ValueError(f"amount {amount!r} must be a 64-bit integer")


def _event(name: str, reply: Sequence[Any]) -> CounterEvent:
    value, version = reply
    return CounterEvent(name=name, value=int(value or 0), version=int(version or 0))
