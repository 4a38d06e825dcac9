import asyncio

from benchmarks.clients import Client


def test_observe_counts_decreases_and_tells_the_listener() -> None:
    client = Client(server=1)
    heard: list[tuple[str, int, float]] = []
    client.listener = lambda c, key, value, at: heard.append((key, value, at))
    for value in (1, 3, 2, 2, 5, 4):
        client.observe("clicks", value, float(value))
    client.observe("views", 9, 0.0)
    assert client.shown("clicks") == 4
    assert client.decreases == {"clicks": 2}
    assert heard[-1] == ("views", 9, 0.0)
    assert len(heard) == 7


async def test_wait_until_wakes_on_observe_and_times_out() -> None:
    client = Client(server=0)

    async def later() -> None:
        await asyncio.sleep(0.01)
        client.observe("clicks", 1, 0.0)
        await asyncio.sleep(0.01)
        client.observe("clicks", 2, 0.0)

    task = asyncio.create_task(later())
    assert await client.wait_until(lambda c: (c.shown("clicks") or 0) >= 2, timeout=2)
    await task
    assert not await client.wait_until(lambda c: (c.shown("clicks") or 0) >= 3, timeout=0.05)
