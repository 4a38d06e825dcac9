"""Group commit for increments: a burst costs one round trip per batch, not per click."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from counter_service.errors import Busy, StoreUnavailable
from counter_service.events import CounterEvent
from counter_service.redis.store import CounterStore, check_increment
from counter_service.tasks import cancel_and_wait

MAX_BATCH = 256
MAX_PENDING = 1000


@dataclass
class _Pending:
    name: str
    amount: int
    result: asyncio.Future[CounterEvent] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IncrementBatcher:
    """Increments that arrive while a batch is in flight go together in the next one.

    Alone, an increment goes out at once; under a burst, callers share pipelined round
    trips instead of queueing for the few pooled connections. Each increment stays one
    atomic script run, and each caller gets its own result or error. At most
    `max_pending` increments wait or travel at once; more are refused with `Busy`, so a
    flood costs a bounded amount of memory and is over as soon as it stops."""

    def __init__(
        self, store: CounterStore, max_batch: int = MAX_BATCH, max_pending: int = MAX_PENDING
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[_Pending] = []
        self._in_flight = 0
        self._sender: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Increments waiting or on their way to Redis."""
        return len(self._pending) + self._in_flight

    async def incr(self, name: str, amount: int = 1) -> CounterEvent:
        """Add `amount` to counter `name`; return its new state."""
        check_increment(name, amount)  # here, so bad input fails only its own caller
        if self.pending >= self._max_pending:
            raise Busy(f"{self.pending} increments are waiting for Redis; this one was refused")
        item = _Pending(name, amount)
        self._pending.append(item)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name="counter-increments")
        return await item.result

    async def stop(self) -> None:
        """Stop sending; increments still waiting fail with `StoreUnavailable`."""
        sender, self._sender = self._sender, None
        if sender is not None:
            await cancel_and_wait(sender)
        self._fail(self._pending, StoreUnavailable("the counter service stopped"))
        self._pending = []

    async def _send_all(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._in_flight = len(batch)
                try:
                    await self._send(batch)
                finally:
                    self._in_flight = 0
        finally:
            self._sender = None

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            results = await self._store.incr_many([(p.name, p.amount) for p in batch])
        except asyncio.CancelledError:
            self._fail(batch, StoreUnavailable("the counter service stopped"))
            raise
        except Exception as exc:
            self._fail(batch, exc)
            return
        for item, result in zip(batch, results, strict=True):
            if item.result.done():
                continue  # the caller gave up waiting; the increment still counted
            if isinstance(result, Exception):
                item.result.set_exception(result)
            else:
                item.result.set_result(result)

    @staticmethod
    def _fail(batch: list[_Pending], error: BaseException) -> None:
        for item in batch:
            if not item.result.done():
                item.result.set_exception(error)
