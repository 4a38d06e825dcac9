"""Presence: this worker's live connections, reported under an expiring key.

The worker's key expires after 3/4 of the TTL unless a heartbeat (every 1/4 TTL)
refreshes it, and every report from any worker recomputes the total. So a worker
killed without warning leaves the published total within one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from counter_service.backoff import Backoff
from counter_service.errors import StoreError, StoreUnavailable
from counter_service.logs import SummarizedWarnings
from counter_service.redis.store import CounterStore
from counter_service.tasks import BackgroundTask

logger = logging.getLogger(__name__)
_refused = SummarizedWarnings(logger)


class Presence:
    """Counts live connections in this process and keeps Redis told, promptly on change
    (at most once per `min_gap` seconds) and on every heartbeat."""

    def __init__(self, store: CounterStore, worker_id: str, ttl_s: float, min_gap: float) -> None:
        self._store = store
        self._worker_id = worker_id
        self._heartbeat = ttl_s / 4
        self._key_ttl_ms = max(1, round(ttl_s * 750))
        self._min_gap = min_gap
        self._changed = asyncio.Event()
        self._backoff = Backoff(base=min(0.1, self._heartbeat), cap=self._heartbeat)
        self.task = BackgroundTask("counter-presence", self._run)
        self.live = 0
        self.healthy = False

    def connected(self) -> None:
        """A websocket connection opened."""
        self.live += 1
        self._changed.set()

    def disconnected(self) -> None:
        """A websocket connection closed."""
        self.live = max(0, self.live - 1)
        self._changed.set()

    def refresh(self) -> None:
        """Report soon even if nothing changed (e.g. after Redis came back empty)."""
        self._changed.set()

    async def start(self) -> None:
        """Start reporting in the background."""
        self.task.start()

    async def stop(self) -> None:
        """Stop reporting and remove this worker from the total at once."""
        if not self.task.running:
            return
        await self.task.stop()
        try:
            await self._store.report_presence(self._worker_id, -1, self._key_ttl_ms)
        except StoreError as exc:
            logger.warning(
                "could not remove worker %s from presence (%s); it expires by itself",
                self._worker_id,
                exc,
            )

    async def _run(self) -> None:
        while True:
            try:
                await self._store.report_presence(self._worker_id, self.live, self._key_ttl_ms)
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                self.healthy = False
                _log_failure(exc)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self.healthy = True
            self._backoff.reset()
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        # The pause bounds the report rate under a burst of connects.
        await asyncio.sleep(self._min_gap)
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
        # that arrives as the event is set, and stop() then waits for ever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._heartbeat):
                await self._changed.wait()
        self._changed.clear()


def _log_failure(error: StoreError) -> None:
    # An outage is the subscriber's to report, once per attempt; a refusal (a missing
    # permission, OOM) is presence's own, summarised while it repeats.
    if isinstance(error, StoreUnavailable):
        logger.debug("presence report failed: %s", error)
    else:
        _refused.warn(type(error).__name__, "presence report failed: %s", error)
