"""App messages across processes: JSON envelopes, their publisher, and their relay.

Every message, including one for the sender's own process, is delivered when it comes
back from Redis: Redis orders one channel's messages the same way for every
subscriber, so every session on every worker sees them in the same order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from counter_service.backoff import Backoff
from counter_service.errors import MessageTooLarge, StoreError, StoreUnavailable
from counter_service.logs import SummarizedWarnings
from counter_service.redis.store import translated_errors
from counter_service.tasks import BackgroundTask

logger = logging.getLogger(__name__)
_refused = SummarizedWarnings(logger)

MAX_PENDING = 10_000
MAX_DEPTH = 64
LARGEST_ENVELOPE = 1024 * 1024
"""The largest `max_message_bytes` settings allow: the bound for a receiver that was
not told its own (the sender's limit covers the whole envelope, overhead included)."""
_BATCH = 256
_KEYS = frozenset({"w", "s", "t", "m"})


class InvalidMessage(ValueError):
    """Something on the messages channel that is not one of our envelopes."""


@dataclass(frozen=True, slots=True)
class AppMessage:
    """One app message: `topic` None for `send_all`/`send_others`; `exclude` names the
    sender's session for `send_others*`, which only its own worker (`worker`) has."""

    worker: str
    exclude: str | None
    topic: str | None
    message: Any

    def excluded_on(self, worker_id: str) -> str | None:
        """The session to leave out on worker `worker_id`, if any."""
        return self.exclude if self.worker == worker_id else None


def check_json(value: Any, depth: int = 0) -> None:
    """Raise `TypeError` unless `value` is made only of dict (str keys), list, str,
    int, float (finite), bool and None: what JSON carries without changing it."""
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is int:
        return
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"messages must be JSON values; {value!r} is not")
        return
    if depth >= MAX_DEPTH:
        raise TypeError(f"messages must be JSON values nested at most {MAX_DEPTH} deep")
    if kind is list:
        for item in value:
            check_json(item, depth + 1)
    elif kind is dict:
        _check_dict(value, depth)
    else:
        raise TypeError(
            f"messages must be JSON values (dict, list, str, int, float, bool, None);"
            f" got {kind.__name__}"
        )


def _check_dict(value: dict[Any, Any], depth: int) -> None:
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(f"message dict keys must be str; got {type(key).__name__}")
        check_json(item, depth + 1)


def encode(message: AppMessage, limit: int) -> str:
    """The envelope's JSON text; `TypeError` for non-JSON values, `MessageTooLarge`
    if it takes more than `limit` bytes."""
    check_json(message.message)
    if message.topic is not None and type(message.topic) is not str:
        raise TypeError(f"topic must be a str; got {type(message.topic).__name__}")
    data = {"w": message.worker, "s": message.exclude, "t": message.topic, "m": message.message}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    if size > limit:
        raise MessageTooLarge(f"message of {size} bytes is over the limit of {limit} bytes")
    return text


def parse(raw: bytes | str, limit: int = LARGEST_ENVELOPE) -> AppMessage:
    """One envelope from the channel; `InvalidMessage` if it is not one a sender with
    envelope limit `limit` (`max_message_bytes`) could have published: larger, not
    JSON, not an envelope, or carrying what `check_json` refuses (NaN, deep nesting)."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
    if size > limit:
        # Before decoding: a forged giant costs a length check, not a parse.
        raise InvalidMessage(f"{size} bytes, over the limit of {limit} bytes")
    data = _decoded(raw)
    if not isinstance(data, dict) or set(data) != _KEYS:
        raise InvalidMessage("expected an object with exactly w, s, t and m")
    worker, exclude, topic = data["w"], data["s"], data["t"]
    if not isinstance(worker, str) or not all(_str_or_none(v) for v in (exclude, topic)):
        raise InvalidMessage("w must be a string, s and t strings or null")
    try:
        check_json(data["m"])  # what handlers get is what a sender could have sent
    except TypeError as exc:
        raise InvalidMessage(str(exc)) from None
    return AppMessage(worker, exclude, topic, data["m"])


def _decoded(raw: bytes | str) -> Any:
    try:
        return _DECODER.decode(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        # RecursionError: nesting deep enough to exhaust the C decoder's stack guard.
        raise InvalidMessage(f"not JSON: {type(exc).__name__}: {exc}"[:200]) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _str_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    channel: str
    text: str
    done: asyncio.Future[None] | None = None


class Publisher:
    """Publishes envelopes in the order they were handed over, a pipelined round trip
    per batch. A batch that fails is retried (with backoff) before anything newer, so
    nothing accepted is dropped; while Redis is unreachable new sends are refused at
    once. A retried batch may reach Redis twice if the connection broke mid-way."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        command: str = "PUBLISH",
        reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        self._client = client
        self._command = command
        self._reachable = reachable
        self._pending: deque[_Outgoing] = deque()
        self._wake = asyncio.Event()
        self._backoff = Backoff(base=0.05, cap=2.0)
        self.failing = False
        self.published = 0
        self.task = BackgroundTask("message-publisher", self._run)

    def check_available(self) -> None:
        """Raise `StoreUnavailable` if a message sent now could not be delivered."""
        if self.failing or not self._reachable():
            raise StoreUnavailable("Redis is unreachable; the message was not sent")
        if len(self._pending) >= MAX_PENDING:
            raise StoreUnavailable(f"{MAX_PENDING} messages are waiting for Redis; not sent")

    def send_nowait(self, channel: str, text: str) -> None:
        """Queue `text` for publishing on `channel` (call on the event loop's thread)."""
        self.check_available()
        self._pending.append(_Outgoing(channel, text))
        self._wake.set()

    async def send(self, channel: str, text: str) -> None:
        """Publish `text` on `channel` and return once Redis has taken it."""
        self.check_available()
        done = asyncio.get_running_loop().create_future()
        self._pending.append(_Outgoing(channel, text, done))
        self._wake.set()
        await done

    async def start(self) -> None:
        self.task.start()

    async def stop(self) -> None:
        await self.task.stop()
        if self._pending:
            logger.warning("%d app messages were not published: stopping", len(self._pending))
        for outgoing in self._pending:
            if outgoing.done is not None and not outgoing.done.done():
                stopped = StoreUnavailable("the service stopped before publishing")
                outgoing.done.set_exception(stopped)
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            while self._pending:
                await self._publish_batch(list(islice(self._pending, _BATCH)))
            self._wake.clear()

    async def _publish_batch(self, batch: list[_Outgoing]) -> None:
        try:
            with translated_errors():
                await self._publish(batch)
        except StoreError as exc:
            self.failing = True
            delay = self._backoff.next_delay()
            if isinstance(exc, StoreUnavailable):  # the subscriber reports the outage
                logger.debug("publishing app messages failed (%s); retrying in %.2fs", exc, delay)
            else:
                _refused.warn(type(exc).__name__, "publishing app messages failed: %s", exc)
            await asyncio.sleep(delay)
            return
        self._published(len(batch))

    async def _publish(self, batch: list[_Outgoing]) -> None:
        if isinstance(self._client, RedisCluster):
            # One shard per channel: in order, one after the other (a cluster pipeline
            # would not keep one topic's messages in the order they were sent).
            for outgoing in batch:
                await self._client.execute_command(self._command, outgoing.channel, outgoing.text)
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for outgoing in batch:
                pipe.execute_command(self._command, outgoing.channel, outgoing.text)
            await pipe.execute()

    def _published(self, count: int) -> None:
        for _ in range(count):
            done = self._pending.popleft().done
            if done is not None and not done.done():
                done.set_result(None)
        self.published += count
        self.failing = False
        self._backoff.reset()
