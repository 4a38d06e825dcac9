"""One Redis pub/sub connection per process: connect, subscribe, detect a deaf socket,
back off, and tell whoever rides on it each time it is subscribed again.

Pub/sub is at-most-once: whatever was published while the connection was down is
gone. So every (re)subscribe runs the `on_subscribed` callbacks before any further
message is handled: the counter relay reads its counters back there, and the message
relay tells the app that messages may have been missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from counter_service.backoff import Backoff
from counter_service.errors import StoreError
from counter_service.tasks import BackgroundTask

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], None]
SubscribedCallback = Callable[[bool], Awaitable[None]]
"""Called with `resubscribed=False` after the first subscribe, True after later ones."""


class DeafSubscriber(ConnectionError):
    """Neither messages nor PONGs arrived for too long: the socket is presumed dead."""


# What a lost or refused connection raises; anything else is a bug, and is left to
# the BackgroundTask to log with its traceback and restart.
_CONNECTION_TROUBLE = (RedisError, OSError, StoreError)


@dataclass
class SubscriberStats:
    """Counts of the connection's life, for readiness and metrics."""

    subscribes: int = 0
    failures: int = 0
    handler_errors: int = 0


class Subscriber:
    """Routes the messages of a fixed set of channels to their handlers.

    `probe_interval` is how long a quiet connection waits before it PINGs;
    `deaf_after` unanswered probes mean the connection is dead and is replaced."""

    def __init__(
        self,
        new_client: Callable[[], Redis],
        *,
        backoff: Backoff | None = None,
        probe_interval: float = 1.0,
        deaf_after: int = 3,
    ) -> None:
        self._new_client = new_client
        self._handlers: dict[bytes, Handler] = {}
        self._callbacks: list[SubscribedCallback] = []
        self._backoff = backoff or Backoff()
        self._probe_interval = probe_interval
        self._deaf_after = deaf_after
        self.task = BackgroundTask("pubsub-subscriber", self._run)
        self.stats = SubscriberStats()
        self._state_handlers: list[Callable[[bool], None]] = []
        self._subscribed = False

    def route(self, channel: str, handler: Handler) -> None:
        """Hand every message of `channel` to `handler` (set up before `start()`)."""
        self._handlers[channel.encode()] = handler

    def on_subscribed(self, callback: SubscribedCallback) -> None:
        """Await `callback` after every subscribe, before the next message is handled."""
        self._callbacks.append(callback)

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
                self.stats.failures += 1
                delay = self._backoff.next_delay()
                logger.warning(
                    "pub/sub connection to Redis lost (%s); retrying in %.2fs", exc, delay
                )
                await asyncio.sleep(delay)

    async def _connect_and_listen(self) -> None:
        client = self._new_client()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(*(channel.decode() for channel in self._handlers))
            await self._listen(pubsub)
        finally:
            self._set_subscribed(False)
            await _close_quietly(pubsub, client)

    async def _listen(self, pubsub: PubSub) -> None:
        confirmed: set[bytes] = set()
        quiet = 0
        while True:
            message = await pubsub.get_message(timeout=self._probe_interval)
            if message is None:
                quiet += 1
                if quiet > self._deaf_after:
                    raise DeafSubscriber(f"no reply to {self._deaf_after} PINGs")
                await pubsub.ping()
                continue
            quiet = 0
            if message["type"] == "message":
                self._dispatch(message)
            elif message["type"] == "subscribe":
                confirmed.add(message["channel"])
                if confirmed == set(self._handlers):
                    await self._after_subscribe()

    async def _after_subscribe(self) -> None:
        resubscribed = self.stats.subscribes > 0
        for callback in self._callbacks:
            await callback(resubscribed)
        self.stats.subscribes += 1
        self._set_subscribed(True)
        if self._backoff.failures:
            logger.info(
                "pub/sub connection to Redis is back after %d failures", self._backoff.failures
            )
        self._backoff.reset()

    def _dispatch(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message["channel"])
        if handler is None:
            return
        try:
            handler(message["data"])
        except Exception:
            self.stats.handler_errors += 1
            logger.exception("handling a message on %r failed", message["channel"])


async def _close_quietly(pubsub: PubSub, client: Redis) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await client.aclose()
    except Exception:
        logger.debug("closing a broken pub/sub connection failed", exc_info=True)
