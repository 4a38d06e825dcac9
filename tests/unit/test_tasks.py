import asyncio
import logging

import pytest

from counter_service.backoff import Backoff
from counter_service.tasks import BackgroundTask
from tests.support import eventually


async def test_stop_cancels_and_waits_for_cleanup() -> None:
    events: list[str] = []

    async def run() -> None:
        events.append("started")
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)
            events.append("cleaned up")

    task = BackgroundTask("t", run)
    task.start()
    task.start()  # idempotent: still one task
    await asyncio.sleep(0)
    assert task.running
    await task.stop()
    assert events == ["started", "cleaned up"]
    assert not task.running
    await task.stop()  # idempotent


async def test_a_crash_is_logged_with_its_traceback_and_the_task_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    release = asyncio.Event()

    async def run() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            await release.wait()
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    task = BackgroundTask("crashy", run, backoff=Backoff(base=0.3, cap=0.3))
    task.start()
    await eventually(lambda: task.up, what="first run")
    release.set()
    await eventually(lambda: not task.up, what="down after the crash")
    assert task.running
    assert task.crashes == 1
    assert task.last_error == "RuntimeError: boom"
    await eventually(lambda: task.up and len(runs) == 2, what="restarted")
    await task.stop()
    crash = next(r for r in caplog.records if "crashy crashed" in r.getMessage())
    assert crash.levelno == logging.ERROR
    assert crash.exc_info is not None
    assert crash.exc_info[1] is not None
    assert str(crash.exc_info[1]) == "boom"


async def test_a_run_that_returns_counts_as_a_crash() -> None:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1

    task = BackgroundTask("returns", run, backoff=Backoff(base=0.01, cap=0.01))
    task.start()
    await eventually(lambda: calls >= 3, what="restarted repeatedly")
    await task.stop()
    assert task.crashes >= 2
    assert task.last_error is not None
    assert "returned" in task.last_error


async def test_stop_ends_a_task_that_swallowed_its_cancellation() -> None:
    swallowed = 0

    async def run() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:  # as Python 3.11's wait_for can, once
                    swallowed += 1
                    continue
                raise

    task = BackgroundTask("swallower", run)
    task.start()
    await eventually(lambda: task.up)
    await asyncio.wait_for(task.stop(), 5)
    assert swallowed == 1
    assert not task.running


async def test_a_lost_cancellation_that_surfaces_as_an_error_is_not_a_crash() -> None:
    async def run() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ConnectionError("Connection lost") from None  # as redis-py can

    task = BackgroundTask("converter", run)
    task.start()
    await eventually(lambda: task.up)
    await asyncio.wait_for(task.stop(), 5)
    assert task.crashes == 0
