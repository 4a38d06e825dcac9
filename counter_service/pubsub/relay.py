"""The relay: one Redis subscription per process, turning channel messages into updates.

It reconnects with backoff, and after every subscribe confirmation it re-reads all
counters, because Redis pub/sub is at-most-once: whatever was published while it was
disconnected is gone, and only a fresh read makes pages right again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from counter_service.backoff import Backoff
from counter_service.events import InvalidEvent, parse_event
from counter_service.redis.store import CounterStore
from counter_service.tasks import BackgroundTask
from counter_service.versions import CounterUpdate, LatestValues

logger = logging.getLogger(__name__)


class DeafSubscriber(ConnectionError):
    """Neither messages nor PONGs arrived for too long: the socket is presumed dead."""


@dataclass
class RelayStats:
    """Counts of what the relay saw, for health checks and metrics."""

    messages: int = 0
    applied: int = 0
    stale: int = 0
    invalid: int = 0
    subscribes: int = 0
    resyncs: int = 0
    failures: int = 0


class Relay:
    """Subscribes to the counters' channel and hands fresh updates to `on_update`.

    `probe_interval` is how long a quiet connection waits before it PINGs;
    `deaf_after` unanswered probes mean the connection is dead and is replaced.
    """

    def __init__(
        self,
        *,
        new_client: Callable[[], Redis],
        store: CounterStore,
        channel: str,
        counters: Sequence[str],
        on_update: Callable[[CounterUpdate], None],
        on_subscribed: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        probe_interval: float = 1.0,
        deaf_after: int = 3,
    ) -> None:
        self._new_client = new_client
        self._store = store
        self._channel = channel
        self._counters = tuple(counters)
        self._on_update = on_update
        self._on_subscribed = on_subscribed
        self._backoff = backoff or Backoff()
        self._probe_interval = probe_interval
        self._deaf_after = deaf_after
        self._task = BackgroundTask("counter-relay", self._run)
        self.latest = LatestValues()
        self.stats = RelayStats()
        self.subscribed = False

    async def start(self) -> None:
        """Start the background task; it runs until `stop()`."""
        self._task.start()

    async def stop(self) -> None:
        """Cancel the background task and wait until its connection is closed."""
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self._connect_and_listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.failures += 1
                delay = self._backoff.next_delay()
                logger.warning(
                    "relay lost its subscription (%r); retrying in %.2fs",
                    exc,
                    delay,
                    exc_info=not isinstance(exc, ConnectionError),
                )
                await asyncio.sleep(delay)

    async def _connect_and_listen(self) -> None:
        client = self._new_client()
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            await self._listen(pubsub)
        finally:
            self.subscribed = False
            await _close_quietly(pubsub, client)

    async def _listen(self, pubsub: PubSub) -> None:
        quiet = 0
        while True:
            message = await pubsub.get_message(timeout=self._probe_interval)
            if message is not None:
                quiet = 0
                await self._handle(message)
                continue
            quiet += 1
            if quiet > self._deaf_after:
                raise DeafSubscriber(f"no reply to {self._deaf_after} PINGs")
            await pubsub.ping()

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._apply(message["data"])
        elif kind == "subscribe":
            await self._resync()

    def _apply(self, data: bytes | str) -> None:
        self.stats.messages += 1
        try:
            event = parse_event(data)
        except InvalidEvent as exc:
            self.stats.invalid += 1
            logger.debug("dropped a foreign message on %s: %s", self._channel, exc)
            return
        if not self.latest.offer(event):
            self.stats.stale += 1
            return
        self.stats.applied += 1
        self._on_update(CounterUpdate(event))

    async def _resync(self) -> None:
        # Subscribed first, read second: a change made in between arrives as a
        # message with a higher version, so it cannot be lost between the two.
        self.stats.subscribes += 1
        for event in await self._store.snapshot(self._counters):
            update = CounterUpdate(event, reset=True)
            if self.latest.accept(update):
                self._on_update(update)
        self.stats.resyncs += 1
        self.subscribed = True
        self._backoff.reset()
        logger.info(
            "relay subscribed to %s and resynced %d counters", self._channel, len(self._counters)
        )
        self._on_subscribed()


async def _close_quietly(pubsub: PubSub, client: Redis) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await client.aclose()
    except Exception:
        logger.debug("closing a broken subscriber connection failed", exc_info=True)
