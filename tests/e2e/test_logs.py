"""A real worker's log while clicks fail: one warning line per kind of failure, then one
summary with a count, and no traceback (tracebacks are for bugs)."""

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import Fleet, ServerProcess
from counter_service.devtools.headless import HeadlessSession
from counter_service.names import Names
from counter_service.settings import DEFAULT_NAMESPACE
from tests.support import metric_samples

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
ENV = {
    "COUNTER_MAX_PENDING_INCREMENTS": "1",  # a burst of clicks finds the worker busy
    "COUNTER_EVENTS_PER_S": "100",
    "COUNTER_EVENT_BURST": "100",
}
KINDS = {
    "corrupt": "is broken",
    "busy": "increments are waiting for Redis",
    "unavailable": "Redis is unreachable",
}
"""The increment outcome (metric label) and what its warning line says."""
FAILED = "an increment of 'clicks' failed: "


def failed_clicks(server: ServerProcess, outcome: str) -> int:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
        samples = metric_samples(response.read().decode())
    return int(
        samples.get(("counter_service_increments_total", frozenset({("outcome", outcome)})), 0)
    )


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"not true after {WAIT_S}s: {what}"
        await asyncio.sleep(0.05)


async def click_and_count(session: HeadlessSession, server: ServerProcess, outcome: str) -> None:
    """One click that fails with `outcome`, waited for before the next."""
    before = failed_clicks(server, outcome)
    await session.click("increment")
    await until(lambda: failed_clicks(server, outcome) > before, f"a click {outcome}")


def warnings_of(server: ServerProcess) -> dict[str, list[str]]:
    lines = [line for line in server.log_tail(lines=100_000).splitlines() if FAILED in line]
    return {kind: [line for line in lines if text in line] for kind, text in KINDS.items()}


async def test_failed_clicks_are_one_warning_line_per_kind_then_a_count(tmp_path: Path) -> None:
    with Fleet(1, log_dir=tmp_path, server_env=ENV) as fleet:
        server = fleet.servers[0]
        redis = Redis.from_url(fleet.redis.url)
        try:
            async with await HeadlessSession.connect(server.url) as session:
                await session.wait_for(lambda s: s.int_value("clicks") is not None, WAIT_S)
                await fail_clicks_every_way(session, server, fleet, redis)
                # Each kind's summary comes at the end of its window, with no click after.
                await until(
                    lambda: all(len(lines) >= 2 for lines in warnings_of(server).values()),
                    "a summary line for every kind",
                )
        finally:
            await redis.aclose()
        found, log = warnings_of(server), server.log_tail(lines=100_000)
    for kind, lines in found.items():
        assert len(lines) == 2, (kind, lines)
        assert "WARNING" in lines[0]
        assert "more like it in the last 10s)" in lines[1], (kind, lines)
    assert "Traceback" not in log


async def fail_clicks_every_way(
    session: HeadlessSession, server: ServerProcess, fleet: Fleet, redis: Redis
) -> None:
    """Clicks on a corrupt counter, on a busy worker, and with Redis stopped."""
    clicks = Names(DEFAULT_NAMESPACE).value("clicks")
    await redis.set(clicks, "abc")
    for _ in range(5):
        await click_and_count(session, server, "corrupt")
    await redis.delete(clicks)
    while failed_clicks(server, "busy") < 5:
        await asyncio.gather(*(session.click("increment") for _ in range(30)))
    fleet.stop_redis()
    for _ in range(5):
        await click_and_count(session, server, "unavailable")
