"""The counter service of one process: store, relay, coalescing and presence together."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from types import TracebackType

from counter_service.coalescer import Coalescer, Deliver, run_flusher
from counter_service.events import CounterEvent
from counter_service.names import Names, check_counter_name
from counter_service.presence import Presence
from counter_service.pubsub.relay import Relay, RelayStats
from counter_service.redis.batching import IncrementBatcher
from counter_service.redis.connections import Connections, connections_for
from counter_service.redis.store import ONLINE, CounterStore
from counter_service.settings import Settings
from counter_service.tasks import BackgroundTask
from counter_service.versions import CounterUpdate

logger = logging.getLogger(__name__)

VIEWS = "views"
CLICKS = "clicks"
COUNTERS = (VIEWS, CLICKS, ONLINE)
PING_TIMEOUT_S = 1.0


class ReservedCounter(ValueError):
    """The counter is maintained by the service itself and cannot be incremented."""


def new_worker_id() -> str:
    """A worker id unique across hosts and restarts: host, pid and a random suffix."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class CounterService:
    """Atomic counters shared by every process on one Redis, with live updates.

    Use as `async with CounterService(settings) as service:` or `start()`/`stop()`.
    Register page delivery with `subscribe()`; updates arrive coalesced, at most one
    per counter per tick, in the event loop.
    """

    def __init__(self, settings: Settings, connections: Connections | None = None) -> None:
        self.settings = settings
        self.worker_id = new_worker_id()
        self._connections = connections or connections_for(settings, f"cs:{self.worker_id}")
        names = Names(settings.namespace)
        self._store = CounterStore(self._connections.commands, names)
        self._increments = IncrementBatcher(self._store)
        self._coalescer = Coalescer()
        self._subscribers: list[Deliver] = []
        self._flusher = BackgroundTask(
            "counter-flusher",
            lambda: run_flusher(self._coalescer, self._deliver, settings.tick_s),
        )
        self.presence = Presence(
            self._store, self.worker_id, settings.presence_ttl_s, min_gap=settings.tick_s
        )
        self._relay = Relay(
            new_client=self._connections.new_subscriber,
            store=self._store,
            channel=names.channel,
            counters=COUNTERS,
            on_update=self._coalescer.put,
            on_subscribed=self.presence.refresh,
        )

    async def start(self) -> None:
        """Start the relay, the flusher and presence reporting."""
        self._flusher.start()
        await self._relay.start()
        await self.presence.start()

    async def stop(self) -> None:
        """Stop every background task and close the Redis connections."""
        try:
            await self.presence.stop()
            await self._relay.stop()
            await self._flusher.stop()
            await self._increments.stop()
        finally:
            await self._connections.aclose()

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

    async def incr(self, name: str) -> CounterEvent:
        """Add one to counter `name` in one atomic round trip; return its new state."""
        if check_counter_name(name) == ONLINE:
            raise ReservedCounter(f"{ONLINE!r} counts live connections; it is not incremented")
        return await self._increments.incr(name)

    def latest(self, name: str) -> CounterEvent:
        """The newest state of counter `name` this process knows (value 0 before any)."""
        return self._relay.latest.get(name) or CounterEvent(name, 0, 0)

    def subscribe(self, deliver: Deliver) -> Callable[[], None]:
        """Call `deliver` with each batch of coalesced updates; returns an unsubscribe."""
        self._subscribers.append(deliver)
        return lambda: self._subscribers.remove(deliver)

    async def ping(self) -> bool:
        """True if Redis answers a PING within `PING_TIMEOUT_S`."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                return bool(await self._connections.commands.ping())
        except Exception:
            logger.debug("redis ping failed", exc_info=True)
            return False

    @property
    def ready(self) -> bool:
        """True while the relay is subscribed and resynced."""
        return self._relay.subscribed

    @property
    def relay_stats(self) -> RelayStats:
        """What the relay has seen so far."""
        return self._relay.stats

    def _deliver(self, updates: list[CounterUpdate]) -> None:
        for deliver in self._subscribers:
            deliver(updates)
