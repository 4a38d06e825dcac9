import asyncio

from counter_service.tasks import BackgroundTask


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
