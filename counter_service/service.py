"""The service of one process: counters, app messages and presence over one Redis.

No Flet here: `counter_service.flet` puts pages and Flet's pub/sub on top of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from counter_service.coalescer import Coalescer, Deliver, run_flusher
from counter_service.errors import CounterServiceError, ReservedCounter
from counter_service.events import CounterEvent
from counter_service.logs import SummarizedWarnings
from counter_service.metrics import Metrics
from counter_service.names import ONLINE, Names, check_counter_name
from counter_service.presence import Presence
from counter_service.pubsub import messages
from counter_service.pubsub.counters import CounterRelay
from counter_service.pubsub.messages import AppMessage, InvalidMessage, Publisher
from counter_service.pubsub.subscriber import Subscriber
from counter_service.redis.batching import IncrementBatcher
from counter_service.redis.connections import Connections, connections_for
from counter_service.redis.store import CounterStore
from counter_service.settings import Settings
from counter_service.tasks import BackgroundTask
from counter_service.versions import CounterUpdate

logger = logging.getLogger(__name__)
_failed = SummarizedWarnings(logger)

PING_TIMEOUT_S = 1.0
MessageHandler = Callable[[AppMessage], None]


def new_worker_id() -> str:
    """A worker id unique across hosts and restarts: host, pid and a random suffix."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _listeners(items: list[Any], item: Any) -> Callable[[], None]:
    items.append(item)
    return lambda: items.remove(item) if item in items else None


class CounterService(AbstractAsyncContextManager["CounterService"]):
    """Atomic counters and app messages shared by every process on one Redis.

    Use as `async with CounterService(settings) as service:` or `start()`/`stop()`.
    Counters a process `watch`es are kept equal to Redis and their changes reach
    `subscribe`rs coalesced, at most one update per counter per tick. App messages
    (`publish`) reach every process's `on_message` handlers in one order. `metrics`
    holds its Prometheus families (docs/metrics.md)."""

    def __init__(self, settings: Settings, connections: Connections | None = None) -> None:
        self.settings = settings
        self.worker_id = new_worker_id()
        self._connections = connections or connections_for(settings, f"cs:{self.worker_id}")
        self.names = Names(settings.namespace, sharded=self._connections.sharded)
        self._store = CounterStore(
            self._connections.commands,
            self.names,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.wait_timeout_ms,
            cluster_concurrency=settings.max_connections,
        )
        self._increments = IncrementBatcher(
            self._store, max_pending=settings.max_pending_increments
        )
        self._coalescer = Coalescer()
        self._deliveries: list[Deliver] = []
        self._message_handlers: list[MessageHandler] = []
        self._resubscribe_handlers: list[Callable[[], None]] = []
        self._availability_handlers: list[Callable[[bool], None]] = []
        self._topics: dict[str, int] = {}
        """On a cluster: how many local subscriptions each topic has."""
        self._channel_counters: dict[str, str] = {}
        """On a cluster: the counter whose changes each subscribed channel carries."""
        self.metrics = Metrics(self.worker_id)
        self.counters = CounterRelay(
            self._store,
            self._coalescer.put,
            reconcile_s=settings.reconcile_s,
            on_delay=self.metrics.observe_delivery_delay,
        )
        self.subscriber = self._new_subscriber()
        self.publisher = Publisher(
            self._connections.commands,
            self.names.publish_command,
            lambda: self.subscriber.subscribed,
        )
        self.presence = Presence(
            self._store, self.worker_id, settings.presence_ttl_s, min_gap=settings.tick_s
        )
        self._flusher = BackgroundTask(
            "counter-flusher", lambda: run_flusher(self._coalescer, self._deliver, settings.tick_s)
        )
        self.invalid_messages = 0
        self.ping_error: BaseException | None = None
        self._more_tasks: list[BackgroundTask] = []
        self.metrics.watch(self)

    def _new_subscriber(self) -> Subscriber:
        subscriber = Subscriber(self._connections.new_pubsub)
        if not self.names.sharded:  # one channel carries every counter's changes
            subscriber.route(self.names.counter_channel(ONLINE), self.counters.handle)
        subscriber.route(self.names.topic_channel(None), self._on_message)
        subscriber.on_confirmed(self._channel_confirmed)
        subscriber.on_subscribed(self.counters.resync)
        subscriber.on_subscribed(self._after_subscribe)
        subscriber.on_state(self._availability_changed)
        return subscriber

    async def start(self) -> None:
        """Start the subscription, read-backs, publishing, coalescing and presence."""
        self._flusher.start()
        await self.counters.start()
        await self.publisher.start()
        await self.subscriber.start()
        await self.presence.start()

    async def stop(self) -> None:
        """Stop every background task and close the Redis connections."""
        try:
            await self.presence.stop()
            await self.subscriber.stop()
            await self.publisher.stop()
            await self.counters.stop()
            await self._flusher.stop()
            await self._increments.stop()
        finally:
            await self._connections.aclose()
            _failed.flush()  # the count of failures still held back by the summary

    async def __aenter__(self) -> CounterService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # Counters

    async def incr(self, name: str, amount: int = 1) -> CounterEvent:
        """Add `amount` to counter `name` (created at 0 on first use) in one atomic
        round trip, and announce it to every process; return its new state.

        Raises `InvalidCounterName`, `ReservedCounter`, `CorruptCounter` (nothing was
        written), `CounterOverflow`, `Busy` (refused at once: too many increments are
        waiting), or `StoreUnavailable` (Redis unreachable: the increment may or may
        not have been applied). Each failure is also logged as one warning line,
        summarised when it repeats."""
        started = time.perf_counter()
        try:
            if check_counter_name(name) == ONLINE:
                raise ReservedCounter(f"{ONLINE!r} counts live connections; it is not incremented")
            event = await self._increments.incr(name, amount)
        except BaseException as exc:  # counted by kind, then raised as it was
            self.metrics.observe_increment(started, exc)
            if isinstance(exc, CounterServiceError):
                _failed.warn(type(exc).__name__, "an increment of %r failed: %s", name, exc)
            raise
        self.metrics.observe_increment(started)
        return event

    async def read(self, name: str) -> CounterEvent:
        """Counter `name` as Redis holds it now (value 0 at version 0 if never changed)."""
        return await self._store.read(check_counter_name(name))

    async def get(self, name: str) -> int:
        """The value of counter `name` in Redis now."""
        return (await self.read(name)).value

    def watch(self, name: str) -> None:
        """Keep counter `name` current in this process and deliver its changes to
        `subscribe`rs, until as many `unwatch(name)` calls."""
        if self.counters.watch(check_counter_name(name)) and self.names.sharded:
            channel = self.names.counter_channel(name)
            self._channel_counters[channel] = name
            self.subscriber.route(channel, self.counters.handle)

    def unwatch(self, name: str) -> None:
        """Undo one `watch(name)`."""
        if self.counters.unwatch(name) and self.names.sharded:
            channel = self.names.counter_channel(name)
            self._channel_counters.pop(channel, None)
            self.subscriber.unroute(channel)

    def _channel_confirmed(self, channel: str) -> None:
        name = self._channel_counters.get(channel)
        if name is not None:  # changes published before the subscription: read them
            self.counters.read_back([name])

    def latest(self, name: str) -> CounterUpdate | None:
        """What this process holds for a watched counter (None before the first read)."""
        return self.counters.latest(name)

    def subscribe(self, deliver: Deliver) -> Callable[[], None]:
        """Call `deliver` with each batch of coalesced updates of watched counters, on
        the event loop; returns a function that unsubscribes."""
        return _listeners(self._deliveries, deliver)

    def _deliver(self, updates: list[CounterUpdate]) -> None:
        for deliver in self._deliveries:
            deliver(updates)

    # App messages

    def publish_nowait(self, topic: str | None, message: Any, exclude: str | None = None) -> None:
        """Send an app message to every process (`topic` None: to all), leaving out
        session `exclude` of this process; call on the event loop's thread.

        Raises `TypeError` (not a JSON value), `MessageTooLarge`, or `StoreUnavailable`
        at once; a message accepted here is published, retried if need be."""
        text = self.encode_message(topic, message, exclude)
        self.publisher.send_nowait(self.names.topic_channel(topic), text)

    async def publish(self, topic: str | None, message: Any, exclude: str | None = None) -> None:
        """`publish_nowait`, then wait until Redis has taken the message."""
        text = self.encode_message(topic, message, exclude)
        await self.publisher.send(self.names.topic_channel(topic), text)

    def listen(self, topic: str) -> None:
        """Receive `topic`'s messages in this process, until as many `unlisten(topic)`
        calls. Only a cluster needs it (each topic has a channel of its own there);
        the first subscription takes effect once Redis confirmed it (milliseconds)."""
        self._topics[topic] = self._topics.get(topic, 0) + 1
        if self._topics[topic] == 1 and self.names.sharded:
            self.subscriber.route(self.names.topic_channel(topic), self._on_message)

    def unlisten(self, topic: str) -> None:
        """Undo one `listen(topic)`."""
        count = self._topics.get(topic, 0) - 1
        if count > 0:
            self._topics[topic] = count
            return
        self._topics.pop(topic, None)
        if self.names.sharded and topic is not None:
            self.subscriber.unroute(self.names.topic_channel(topic))

    def encode_message(self, topic: str | None, message: Any, exclude: str | None = None) -> str:
        """The envelope as published; raises like `publish_nowait` would for its content."""
        envelope = AppMessage(self.worker_id, exclude, topic, message)
        return messages.encode(envelope, self.settings.max_message_bytes)

    def on_message(self, handler: MessageHandler) -> Callable[[], None]:
        """Call `handler` with every app message from any process (this one included),
        in the order Redis delivers them; returns a function that unsubscribes."""
        return _listeners(self._message_handlers, handler)

    def on_resubscribe(self, handler: Callable[[], None]) -> Callable[[], None]:
        """Call `handler` after the subscription was lost and is back: app messages
        published meanwhile were missed. Returns a function that unsubscribes."""
        return _listeners(self._resubscribe_handlers, handler)

    @property
    def available(self) -> bool:
        """True while the subscription to Redis is up (values shown are current)."""
        return self.subscriber.subscribed

    def on_availability(self, handler: Callable[[bool], None]) -> Callable[[], None]:
        """Call `handler(True)` when the subscription to Redis is made and
        `handler(False)` when it is lost (pages then show possibly stale values)."""
        return _listeners(self._availability_handlers, handler)

    def _on_message(self, raw: bytes) -> None:
        try:
            message = messages.parse(raw, self.settings.max_message_bytes)
        except InvalidMessage as exc:
            self.invalid_messages += 1
            logger.debug("dropped a message that is not an app message: %s", exc)
            return
        for handler in self._message_handlers:
            handler(message)

    async def _after_subscribe(self, resubscribed: bool) -> None:
        self.presence.refresh()  # Redis may have come back empty
        if resubscribed:
            logger.warning("pub/sub re-subscribed: app messages sent meanwhile were missed")
            for handler in tuple(self._resubscribe_handlers):
                handler()

    def _availability_changed(self, available: bool) -> None:
        for handler in tuple(self._availability_handlers):
            handler(available)

    # Health

    @property
    def tasks(self) -> list[BackgroundTask]:
        """Every background task of the service, and those `add_task` gave it, for
        readiness."""
        return [
            self.subscriber.task,
            self.publisher.task,
            *self.counters.tasks,
            self.presence.task,
            self._flusher,
            *self._more_tasks,
        ]

    def add_task(self, task: BackgroundTask) -> None:
        """Count `task` (which its owner starts and stops) among `tasks`, so that
        `ready` and `/readyz` report it while it is down."""
        self._more_tasks.append(task)

    async def ping(self) -> bool:
        """True if Redis answers a PING within `PING_TIMEOUT_S` (else `ping_error` says
        why)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                answered = bool(await self._connections.commands.ping())
        except (TimeoutError, OSError, RedisError, RedisClusterException) as exc:
            self.ping_error = exc  # a cluster it cannot map, too (not a RedisError)
            return False
        self.ping_error = None
        return answered

    def errors(self) -> list[BaseException]:
        """The latest failures of the PING, the subscription, and increments, reads and
        presence reports, each until it succeeds again (readiness names those that are
        configuration errors)."""
        found = [self.ping_error, self.subscriber.last_error, *self._store.errors()]
        return [error for error in found if error is not None]

    @property
    def ready(self) -> bool:
        """True while subscribed and every background task runs."""
        return self.subscriber.subscribed and all(task.up for task in self.tasks)
