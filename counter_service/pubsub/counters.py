"""The counter relay: what the process's pages watch, kept equal to what Redis holds.

A channel message is only a hint. The relay applies an event only when it is exactly
the next version of what it holds; anything else (a gap, the same version with another
value, a lower version, a counter not read yet) makes it read that counter back and
take the read as the truth, even when its version is lower (Redis restarted empty, a
key was deleted, a failover lost writes). Only such a contradiction is handed to pages
as a reset that may move them backwards; a read no older than what they were told is
an ordinary change. Read-backs are batched and debounced, so a
flood of forged events costs at most one read per counter per `debounce_s`. A slow
reconciliation re-reads every watched counter, for changes no event announces (DEL,
FLUSHDB, eviction). Only watched counters are held: events for any other name are
dropped without keeping anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from counter_service.backoff import Backoff
from counter_service.errors import CorruptCounter, StoreError, StoreUnavailable
from counter_service.events import CounterEvent, InvalidEvent, parse_event
from counter_service.logs import SummarizedWarnings
from counter_service.redis.store import CounterStore, ReadResult
from counter_service.tasks import BackgroundTask
from counter_service.versions import CounterUpdate

logger = logging.getLogger(__name__)
_refused = SummarizedWarnings(logger)

READ_CHUNK = 500
DEFAULT_DEBOUNCE_S = 0.1
DEFAULT_RECONCILE_S = 10.0


@dataclass
class CounterRelayStats:
    """What the relay saw, for metrics."""

    messages: int = 0
    applied: int = 0
    """Events that were exactly the next version of what the process held: shown."""
    stale: int = 0
    """Events not newer than what the process held: a duplicate (dropped) or a lower
    version (read back: Redis may have lost writes)."""
    suspect: int = 0
    """Events newer than what the process held but not the next version, the same
    version with another value, or for a counter not read yet: each read back."""
    invalid: int = 0
    unwatched: int = 0
    readbacks: int = 0
    """Counters read back from Redis (resyncs, suspects, reconciliation)."""
    stale_reads: int = 0
    """Reads overtaken by newer events while in flight, and dropped."""
    read_failures: int = 0


@dataclass
class _Held:
    watchers: int = 0
    update: CounterUpdate | None = None
    """The state pages were told; None until the first read."""
    changes: int = 0
    """How often `update` changed: a read sent before a change may be older than it."""


class CounterRelay:
    """Turns counter events and read-backs into `CounterUpdate`s for `on_update`."""

    def __init__(
        self,
        store: CounterStore,
        on_update: Callable[[CounterUpdate], None],
        *,
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        reconcile_s: float = DEFAULT_RECONCILE_S,
        on_delay: Callable[[float], None] = lambda _seconds: None,
    ) -> None:
        self._store = store
        self._on_update = on_update
        self._on_delay = on_delay
        self._debounce_s = debounce_s
        self._reconcile_s = reconcile_s
        self._held: dict[str, _Held] = {}
        self._wanted: set[str] = set()
        self._wanted_now = asyncio.Event()
        self._backoff = Backoff(base=0.1, cap=5.0)
        self.stats = CounterRelayStats()
        self.tasks = (
            BackgroundTask("counter-readback", self._read_back_forever),
            BackgroundTask("counter-reconcile", self._reconcile_forever),
        )

    async def start(self) -> None:
        for task in self.tasks:
            task.start()

    async def stop(self) -> None:
        for task in self.tasks:
            await task.stop()

    def watch(self, name: str) -> bool:
        """Keep `name` current from now on (counted: call `unwatch` as often); True if
        nobody watched it before."""
        held = self._held.setdefault(name, _Held())
        held.watchers += 1
        if held.watchers == 1:
            self.read_back([name])
        return held.watchers == 1

    def unwatch(self, name: str) -> bool:
        """One watcher less; a counter nobody watches is forgotten (then True)."""
        held = self._held.get(name)
        if held is None:
            return False
        held.watchers -= 1
        if held.watchers > 0:
            return False
        del self._held[name]
        self._wanted.discard(name)
        return True

    @property
    def watched(self) -> list[str]:
        return list(self._held)

    def latest(self, name: str) -> CounterUpdate | None:
        """The state of a watched counter pages were told, None if not known yet."""
        held = self._held.get(name)
        return None if held is None else held.update

    def handle(self, raw: bytes) -> None:
        """One message from the counter channel."""
        self.stats.messages += 1
        try:
            event = parse_event(raw)
        except InvalidEvent as exc:
            self.stats.invalid += 1
            logger.debug("dropped a message that is not a counter event: %s", exc)
            return
        held = self._held.get(event.name)
        if held is None:
            self.stats.unwatched += 1
        else:
            self._judge(held, event)

    def _judge(self, held: _Held, event: CounterEvent) -> None:
        """Apply the next version; count anything else by what it says, and read back
        whatever could mean that pages show something Redis does not hold."""
        current = None if held.update is None else held.update.event
        if current is not None and event.version == current.version + 1:
            self.stats.applied += 1
            self._set(held, CounterUpdate.change(event))
            self._observe_delay(event)
        elif current is not None and event == current:
            self.stats.stale += 1  # a duplicate: nothing to learn
        elif current is not None and event.version < current.version:
            self.stats.stale += 1
            self.read_back([event.name])  # Redis may have lost writes (or a forgery)
        else:
            self.stats.suspect += 1  # a gap, a conflict, or nothing valid held yet
            self.read_back([event.name])

    async def resync(self, _resubscribed: bool = False) -> None:
        """Read every watched counter now and take the reads as the truth (after a
        subscribe: anything published while unsubscribed is lost)."""
        await self._read(self.watched)

    def read_back(self, names: Iterable[str]) -> None:
        """Read these counters back soon (batched and debounced)."""
        self._wanted.update(names)
        self._wanted_now.set()

    async def _read_back_forever(self) -> None:
        while True:
            await self._wanted_now.wait()
            self._wanted_now.clear()
            names = [name for name in self._wanted if name in self._held]
            self._wanted.clear()
            try:
                await self._read(names)
            except StoreError as exc:
                await self._retry_later(names, exc)
                continue
            self._backoff.reset()
            await asyncio.sleep(self._debounce_s)

    async def _retry_later(self, names: list[str], error: StoreError) -> None:
        self.stats.read_failures += 1
        delay = self._backoff.next_delay()
        # An outage is reported once per attempt by the subscriber; a refusal (NOPERM,
        # OOM...) is this loop's own news, summarised when it repeats.
        if isinstance(error, StoreUnavailable):
            logger.debug("reading counters back failed (%s); retrying in %.2fs", error, delay)
        else:
            _refused.warn(type(error).__name__, "reading counters back failed: %s", error)
        await asyncio.sleep(delay)
        self.read_back(names)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reconcile_s)
            self.read_back(self._held)

    async def _read(self, names: list[str]) -> None:
        for start in range(0, len(names), READ_CHUNK):
            chunk = names[start : start + READ_CHUNK]
            sent = {name: self._held[name].changes for name in chunk if name in self._held}
            results = await self._store.read_many(chunk)
            self.stats.readbacks += len(chunk)
            for name, result in zip(chunk, results, strict=True):
                self._apply_read(name, result, sent.get(name))

    def _apply_read(self, name: str, result: ReadResult, changes_when_sent: int | None) -> None:
        held = self._held.get(name)
        if held is None:
            return  # nobody watches it any more
        if isinstance(result, CorruptCounter):
            self._set(held, CounterUpdate.broken(name, result.problem))
        elif _overtaken(held, result, changes_when_sent):
            self.stats.stale_reads += 1
        elif _contradicts(held.update, result):
            self._set(held, CounterUpdate.truth(result))
        else:
            # No older than what pages were told: an ordinary change, so a page that
            # already shows its own newer increment does not step back to it.
            self._set(held, CounterUpdate.change(result))

    def _set(self, held: _Held, update: CounterUpdate) -> None:
        if held.update is not None and _same_state(held.update, update):
            return
        held.update = update
        held.changes += 1
        self._on_update(update)

    def _observe_delay(self, event: CounterEvent) -> None:
        if event.published_ms is not None:
            self._on_delay(max(0.0, time.time() - event.published_ms / 1000))


def _contradicts(held: CounterUpdate | None, read: CounterEvent) -> bool:
    """True if the read takes back what pages were told: a lower version (Redis lost
    writes, restarted empty, a key was deleted) or the same version with another value
    (what they were told was forged). Only then may pages move backwards."""
    if held is None or held.event is None:
        return False
    current = held.event
    return read.version < current.version or (
        read.version == current.version and read.value != current.value
    )


def _same_state(a: CounterUpdate, b: CounterUpdate) -> bool:
    return a.event == b.event and a.problem == b.problem


def _overtaken(held: _Held, read: CounterEvent, changes_when_sent: int | None) -> bool:
    """True if events applied while the read was in flight are newer than the read."""
    if changes_when_sent is None or held.changes == changes_when_sent:
        return False
    current = None if held.update is None else held.update.event
    return current is not None and read.version < current.version
