import asyncio
import time

import pytest

from counter_service.coalescer import Coalescer, next_delay, run_flusher
from counter_service.events import CounterEvent
from counter_service.versions import CounterUpdate
from tests.support import eventually


def up(name: str, version: int, reset: bool = False) -> CounterUpdate:
    return CounterUpdate(name, CounterEvent(name, version, version), reset)


def test_latest_value_wins_per_counter() -> None:
    coalescer = Coalescer()
    for version in range(1, 1001):
        coalescer.put(up("clicks", version))
    coalescer.put(up("views", 3))
    assert len(coalescer) == 2
    assert sorted(coalescer.take(), key=lambda u: u.name) == [
        up("clicks", 1000),
        up("views", 3),
    ]
    assert coalescer.take() == []


def test_a_pending_reset_survives_a_newer_event() -> None:
    coalescer = Coalescer()
    coalescer.put(up("clicks", 2, reset=True))
    coalescer.put(up("clicks", 3))
    assert coalescer.take() == [up("clicks", 3, reset=True)]


def test_delay_stretches_under_load_within_bounds() -> None:
    assert next_delay(0.03, 0.001, 0.3) == 0.03
    assert next_delay(0.03, 0.05, 0.3) == pytest.approx(0.1)
    assert next_delay(0.03, 5.0, 0.3) == 0.3


async def test_flusher_delivers_at_most_one_batch_per_tick() -> None:
    coalescer = Coalescer()
    batches: list[list[CounterUpdate]] = []
    task = asyncio.create_task(run_flusher(coalescer, batches.append, tick=0.2))
    try:
        coalescer.put(up("clicks", 1))
        await asyncio.sleep(0.05)
        for version in range(2, 50):
            coalescer.put(up("clicks", version))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert batches == [[up("clicks", 1)]]
        await asyncio.sleep(0.25)
        assert batches == [[up("clicks", 1)], [up("clicks", 49)]]
    finally:
        task.cancel()


async def test_flusher_survives_a_failing_delivery() -> None:
    coalescer = Coalescer()
    seen: list[list[CounterUpdate]] = []

    def deliver(batch: list[CounterUpdate]) -> None:
        seen.append(batch)
        if len(seen) == 1:
            raise RuntimeError("page blew up")

    task = asyncio.create_task(run_flusher(coalescer, deliver, tick=0.01))
    try:
        coalescer.put(up("clicks", 1))
        await asyncio.sleep(0.05)
        coalescer.put(up("clicks", 2))
        await asyncio.sleep(0.05)
        assert seen == [[up("clicks", 1)], [up("clicks", 2)]]
    finally:
        task.cancel()


async def test_work_a_delivery_leaves_on_the_loop_stretches_the_next_pause() -> None:
    coalescer = Coalescer()
    flushed_at: list[float] = []
    loop = asyncio.get_running_loop()

    def deliver(_batch: list[CounterUpdate]) -> None:
        flushed_at.append(loop.time())
        loop.call_soon(time.sleep, 0.2)  # the send work a delivery leaves behind

    task = asyncio.create_task(run_flusher(coalescer, deliver, tick=0.05))
    try:
        for version in range(1, 4):
            coalescer.put(up("clicks", version))
            await eventually(lambda v=version: len(flushed_at) == v, what=f"flush {version}")
    finally:
        task.cancel()
    # The first pause (one tick) overshot by ~0.15 s, so the second is ~0.3 s, not a tick.
    assert flushed_at[2] - flushed_at[1] >= 0.28
