"""Clicking at a steady rate (open loop), and acknowledging clicks afterwards.

A click's result is not returned to the client, so acknowledgement is defined by send
order. All clickers run in this process, so the clicks sent before a click are known:
the k-th click sent in the run (every clicker counted, from 1) is *acknowledged* when
its own session first shows clicks >= baseline + k. If clicks are applied in the order
they were sent, baseline + k is exactly the value that click produced (and the server
shows a session its own result at once); a click overtaken in flight is acknowledged
when the one it overtook lands too. Clickers do not wait for acknowledgements, so the
rate holds whatever the latency; acknowledgements are read from the recorded history.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from counter_service.devtools.headless import FletError
from counter_service.devtools.loadtest.sessions import BUTTON, Slot, describe

# A click this late (a lagging event loop here) is still sent; a later one is skipped.
LATE_GRACE_S = 2.0


@dataclass(frozen=True)
class Click:
    """A click sent: by which session, when, and the clicks value that acknowledges it."""

    clicker: int
    sent_at: float
    threshold: int


@dataclass
class Tally:
    """Clicks planned and sent, and sends that failed (by reason), over all clickers."""

    baseline: int = 0
    planned: int = 0
    clicks: list[Click] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started_at: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.clicks)

    @property
    def last_sent_at(self) -> float | None:
        return max((c.sent_at for c in self.clicks), default=None)


def schedule(index: int, clickers: int, rate: float, duration: float) -> list[float]:
    """Offsets (s since clicking began) at which clicker `index` clicks: every clicker
    clicks every clickers/rate seconds, staggered by 1/rate, all before `duration`."""
    interval = clickers / rate
    first = index / rate
    if first >= duration:
        return []
    return [first + n * interval for n in range(math.ceil((duration - first) / interval))]


async def click_loop(slot: Slot, offsets: list[float], tally: Tally, stop_at: float) -> None:
    """Click at each offset (late ones at once) until `stop_at` or a send fails."""
    for offset in offsets:
        await asyncio.sleep(max(0.0, tally.started_at + offset - time.monotonic()))
        if time.monotonic() >= stop_at or not await click_once(slot, tally, stop_at):
            return


async def click_once(slot: Slot, tally: Tally, stop_at: float) -> bool:
    """Send one click (bounded in time); False if it could not be sent."""
    assert slot.session is not None
    sent_at = time.monotonic()
    try:
        async with asyncio.timeout(max(1.0, stop_at - sent_at)):
            await slot.session.click(BUTTON)
    except (FletError, KeyError, TimeoutError) as exc:
        tally.errors["not sent: " + describe(exc)] += 1
        return False
    # Numbered when sent: the order in which the server can first see them.
    tally.clicks.append(Click(slot.index, sent_at, tally.baseline + tally.sent + 1))
    return True


async def run_clickers(clickers: list[Slot], rate: float, duration: float, tally: Tally) -> None:
    """Run every clicker's loop concurrently; returns when all have finished."""
    plans = [schedule(i, len(clickers), rate, duration) for i in range(len(clickers))]
    tally.planned = sum(len(p) for p in plans)
    tally.started_at = time.monotonic()
    stop_at = tally.started_at + duration + LATE_GRACE_S
    loops = [click_loop(s, p, tally, stop_at) for s, p in zip(clickers, plans, strict=True)]
    await asyncio.gather(*loops)
