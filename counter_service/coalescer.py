"""Latest-value-wins coalescing: pages get at most one update per counter per tick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from counter_service.versions import CounterUpdate

logger = logging.getLogger(__name__)

Deliver = Callable[[list[CounterUpdate]], None]


class Coalescer:
    """Holds at most one pending update per counter; its size never depends on the
    increment rate."""

    def __init__(self) -> None:
        self._pending: dict[str, CounterUpdate] = {}
        self._ready = asyncio.Event()

    def put(self, update: CounterUpdate) -> None:
        """Replace the pending update of this counter, keeping a pending reset flag."""
        name = update.name
        held = self._pending.get(name)
        # A reset must survive being overtaken by a newer event in the same tick,
        # or pages showing a higher pre-reset version would refuse the newer event.
        if held is not None and held.reset and not update.reset:
            update = replace(update, reset=True)
        self._pending[name] = update
        self._ready.set()

    def take(self) -> list[CounterUpdate]:
        """Remove and return everything pending."""
        updates = list(self._pending.values())
        self._pending.clear()
        self._ready.clear()
        return updates

    async def wait(self) -> None:
        """Return once something is pending."""
        await self._ready.wait()

    def __len__(self) -> int:
        return len(self._pending)


def next_delay(tick: float, busy: float, max_tick: float) -> float:
    """Pause before the next flush: one tick, stretched under load so that delivering
    takes at most about half of the loop's time, and never longer than `max_tick`."""
    return min(max_tick, max(tick, 2 * busy))


async def run_flusher(coalescer: Coalescer, deliver: Deliver, tick: float) -> None:
    """Forever: wait for pending updates, deliver them together, then pause a tick.

    Much of a delivery's cost runs after `deliver` returns (each connection's send
    task), and shows up as the pause overshooting; both count as load."""
    loop = asyncio.get_running_loop()
    overshoot = 0.0
    while True:
        await coalescer.wait()
        started = loop.time()
        try:
            deliver(coalescer.take())
        except Exception:
            logger.exception("delivering counter updates failed; later updates still flow")
        delay = next_delay(tick, loop.time() - started + overshoot, 10 * tick)
        paused = loop.time()
        await asyncio.sleep(delay)
        overshoot = max(0.0, loop.time() - paused - delay)
