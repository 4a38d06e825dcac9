"""One Redis pub/sub connection per process (one per shard on a cluster): connect,
subscribe, follow a changing set of channels, detect a deaf socket, back off, and tell
whoever rides on it each time it is subscribed again.

Pub/sub is at-most-once: whatever was published while the connection was down is
gone. So every (re)subscribe runs the `on_subscribed` callbacks before any further
message is handled: the counter relay reads its counters back there, and the message
relay tells the app that messages may have been missed. A channel added while
connected is confirmed to `on_confirmed` callbacks once Redis subscribed it (the counter
relay reads that counter back then: nothing published before could be missed). On a
cluster, Redis drops the subscriptions of a slot that moves: that, like a lost
connection, means reconnecting and resyncing everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError

from counter_service.backoff import Backoff
from counter_service.errors import StoreError
from counter_service.redis.text import brief
from counter_service.tasks import BackgroundTask

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], None]
SubscribedCallback = Callable[[bool], Awaitable[None]]
"""Called with `resubscribed=False` after the first subscribe, True after later ones."""
POLL_S = 0.05
"""How long one wait for a message lasts: channels added meanwhile wait at most this."""


class DeafSubscriber(ConnectionError):
    """Neither messages nor PONGs arrived for too long: the socket is presumed dead."""


class SubscriptionLost(ConnectionError):
    """Redis dropped a subscription by itself (a cluster slot moved)."""


# What a lost or refused connection raises; anything else is a bug, and is left to
# the BackgroundTask to log with its traceback and restart.
_CONNECTION_TROUBLE = (RedisError, RedisClusterException, OSError, StoreError)


def _failed_attempt(error: BaseException) -> str:
    if isinstance(error, (AuthenticationError, ResponseError)):
        return "Redis refused the pub/sub connection"  # readiness names the setting
    return "cannot reach Redis"


class PubSubConnection(Protocol):
    """One live pub/sub connection (or one per shard), as the subscriber drives it."""

    async def subscribe(self, channels: list[str]) -> None: ...

    async def unsubscribe(self, channels: list[str]) -> None: ...

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message, with `type` one of message, subscribe, unsubscribe (or
        pong): sharded ones are reported under the same names."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class SubscriberStats:
    """Counts of the connection's life, for readiness and metrics."""

    subscribes: int = 0
    failures: int = 0
    handler_errors: int = 0


class Subscriber:
    """Routes the messages of a set of channels to their handlers; channels can be
    added and removed while it runs.

    `probe_interval` is how long a quiet connection waits before it PINGs;
    `deaf_after` unanswered probes mean the connection is dead and is replaced."""

    def __init__(
        self,
        connect: Callable[[], PubSubConnection],
        *,
        backoff: Backoff | None = None,
        probe_interval: float = 1.0,
        deaf_after: int = 3,
    ) -> None:
        self._connect = connect
        self._handlers: dict[bytes, Handler] = {}
        self._callbacks: list[SubscribedCallback] = []
        self._confirmed_callbacks: list[Callable[[str], None]] = []
        self._state_handlers: list[Callable[[bool], None]] = []
        self._backoff = backoff or Backoff()
        self._probe_interval = probe_interval
        self._deaf_after = deaf_after
        self._live: _Live | None = None
        self._subscribed = False
        self.last_error: BaseException | None = None
        """Why the last connection attempt failed, until one succeeds."""
        self.task = BackgroundTask("pubsub-subscriber", self._run)
        self.stats = SubscriberStats()

    def route(self, channel: str, handler: Handler) -> None:
        """Hand every message of `channel` to `handler`, from now on."""
        key = channel.encode()
        self._handlers[key] = handler
        if self._live is not None:
            self._live.wanted(key)

    def unroute(self, channel: str) -> None:
        """Stop listening to `channel`."""
        key = channel.encode()
        if self._handlers.pop(key, None) is not None and self._live is not None:
            self._live.unwanted(key)

    def on_subscribed(self, callback: SubscribedCallback) -> None:
        """Await `callback` after every subscribe, before the next message is handled."""
        self._callbacks.append(callback)

    def on_confirmed(self, callback: Callable[[str], None]) -> None:
        """Call `callback(channel)` when a channel added while connected is subscribed."""
        self._confirmed_callbacks.append(callback)

    def on_state(self, handler: Callable[[bool], None]) -> None:
        """Call `handler(subscribed)` each time the subscription is made or lost."""
        self._state_handlers.append(handler)

    @property
    def subscribed(self) -> bool:
        """True while every channel is subscribed and the callbacks have run."""
        return self._subscribed

    def _set_subscribed(self, subscribed: bool) -> None:
        if subscribed == self._subscribed:
            return
        self._subscribed = subscribed
        for handler in self._state_handlers:
            handler(subscribed)

    async def start(self) -> None:
        """Connect in the background; `subscribed` turns True once every channel is."""
        self.task.start()

    async def stop(self) -> None:
        """Close the connection and stop."""
        await self.task.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._connect_and_listen()
            except _CONNECTION_TROUBLE as exc:
                await self._retry_after(exc)

    async def _retry_after(self, error: BaseException) -> None:
        """One warning line per failed attempt, without traceback: this loop speaks for
        the process during an outage (presence, for one, logs its failures at DEBUG)."""
        lost = not self._backoff.failures and self.stats.subscribes > 0
        self.last_error = error
        self.stats.failures += 1
        delay = self._backoff.next_delay()
        what = "pub/sub connection to Redis lost" if lost else _failed_attempt(error)
        logger.warning("%s (%s); retrying in %.2fs", what, brief(error), delay)
        await asyncio.sleep(delay)

    async def _connect_and_listen(self) -> None:
        connection = self._connect()
        live = _Live(self, connection)
        try:
            self._live = live
            await live.listen()
        finally:
            self._live = None
            self._set_subscribed(False)
            await _close_quietly(connection)

    async def _after_subscribe(self) -> None:
        resubscribed = self.stats.subscribes > 0
        for callback in self._callbacks:
            await callback(resubscribed)
        self.stats.subscribes += 1
        self.last_error = None
        self._set_subscribed(True)
        if self._backoff.failures:
            logger.info(
                "pub/sub connection to Redis is back after %d failures", self._backoff.failures
            )
        self._backoff.reset()

    def _confirmed(self, channel: bytes) -> None:
        for callback in self._confirmed_callbacks:
            callback(channel.decode())

    def _dispatch(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message["channel"])
        if handler is None:
            return  # unsubscribed a moment ago
        try:
            handler(message["data"])
        except Exception:
            self.stats.handler_errors += 1
            logger.exception("handling a message on %r failed", message["channel"])


class _Live:
    """One connection's life: what is subscribed, what waits to be, and the probes."""

    def __init__(self, owner: Subscriber, connection: PubSubConnection) -> None:
        self._owner = owner
        self._connection = connection
        self._initial = set(owner._handlers)
        self._confirmed: set[bytes] = set()
        self._to_add: set[bytes] = set()
        self._to_remove: set[bytes] = set()
        self._leaving: set[bytes] = set()
        """Channels we asked to unsubscribe: their confirmation is expected."""
        self._ready = False

    def wanted(self, channel: bytes) -> None:
        self._to_remove.discard(channel)
        self._to_add.add(channel)

    def unwanted(self, channel: bytes) -> None:
        self._to_add.discard(channel)
        self._to_remove.add(channel)

    async def listen(self) -> None:
        if self._initial:
            await self._connection.subscribe(_names(self._initial))
        else:
            await self._ready_now()
        loop = asyncio.get_running_loop()
        heard, probes = loop.time(), 0
        while True:
            await self._apply_changes()
            message = await self._connection.get_message(timeout=POLL_S)
            if message is not None:
                heard, probes = loop.time(), 0
                await self._handle(message)
            elif loop.time() - heard > self._owner._probe_interval * (probes + 1):
                if probes >= self._owner._deaf_after:
                    raise DeafSubscriber(f"no reply to {probes} PINGs")
                await self._connection.ping()
                probes += 1

    async def _apply_changes(self) -> None:
        add, self._to_add = self._to_add - self._confirmed, set()
        remove, self._to_remove = self._to_remove, set()
        if add:
            await self._connection.subscribe(_names(add))
        if remove:
            self._confirmed -= remove
            self._leaving |= remove
            await self._connection.unsubscribe(_names(remove))

    async def _handle(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message.get("channel")
        if kind == "message":
            self._owner._dispatch(message)
        elif kind == "subscribe" and isinstance(channel, bytes):
            await self._subscribed(channel)
        elif kind == "unsubscribe" and isinstance(channel, bytes):
            if channel in self._leaving:
                self._leaving.discard(channel)
            elif channel in self._owner._handlers:
                raise SubscriptionLost(f"Redis dropped the subscription to {channel!r}")

    async def _subscribed(self, channel: bytes) -> None:
        self._confirmed.add(channel)
        if self._ready:
            self._owner._confirmed(channel)
        elif self._initial <= self._confirmed:
            await self._ready_now()

    async def _ready_now(self) -> None:
        self._ready = True
        await self._owner._after_subscribe()


def _names(channels: set[bytes]) -> list[str]:
    return sorted(channel.decode() for channel in channels)


async def _close_quietly(connection: PubSubConnection) -> None:
    try:
        await connection.aclose()
    except Exception:
        logger.debug("closing a broken pub/sub connection failed", exc_info=True)
