"""Redis is the truth, on real pages: two `counter-service serve` workers on one real
redis-server, headless sessions on both, and the store or its channel tampered with.
Every session must come to show what Redis holds: after the next click (on workers
whose reconciliation is too slow to help), and without one within the reconciliation
period (on workers that reconcile every second)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import Fleet
from counter_service.devtools.headless import HeadlessSession
from counter_service.names import Names
from tests.support import eventually, worker_metrics
from ui.contract import BUTTON, CLICKS

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
"""Correctness deadline for what a click or a read-back settles (milliseconds when all
is well)."""
RECONCILE_S = 1.0
RECONCILED_S = 10 * RECONCILE_S
"""Correctness deadline for what only reconciliation can settle: ten periods."""
NEVER_S = 3600.0
"""The reconciliation period of the workers that must converge through clicks alone."""
NAMES = Names("counter-service")


class Page:
    """A headless session of the counter page, with every clicks value it showed."""

    def __init__(self, session: HeadlessSession) -> None:
        self.session = session
        self.shown: list[int] = []
        session.on_change = self._record

    def _record(self, key: str, value: object, _at: float) -> None:
        if key == CLICKS and str(value).lstrip("-").isdigit():
            self.shown.append(int(str(value)))

    @property
    def clicks(self) -> int | None:
        return self.session.int_value(CLICKS)


@pytest.fixture(scope="module", params=["click", "reconcile"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """Two workers: reconciling every second, or (for "click") practically never."""
    period = RECONCILE_S if request.param == "reconcile" else NEVER_S
    env = {"COUNTER_RECONCILE_S": str(period)}
    with Fleet(2, log_dir=tmp_path_factory.mktemp("fleet"), server_env=env) as running:
        yield running


@pytest.fixture
def clicking(fleet: Fleet) -> bool:
    """True when the workers converge only through clicks."""
    return float((fleet.server_env or {})["COUNTER_RECONCILE_S"]) == NEVER_S


@pytest.fixture
async def redis(fleet: Fleet) -> AsyncIterator[Redis]:
    client = Redis.from_url(fleet.redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def pages(fleet: Fleet, redis: Redis) -> AsyncIterator[list[Page]]:
    """Four sessions, two on each worker, all showing Redis's clicks (some clicked)."""
    sessions = await asyncio.gather(
        *(HeadlessSession.connect(fleet.servers[i % 2].url) for i in range(4))
    )
    opened = [Page(s) for s in sessions]
    try:
        await asyncio.gather(
            *(p.session.wait_for(lambda s: s.int_value(CLICKS) is not None, WAIT_S) for p in opened)
        )
        clicks = await truth(redis)
        for page in opened[:2]:
            await page.session.click(BUTTON)
        await all_show(opened, redis, clicks + 2, WAIT_S)
        yield opened
    finally:
        await asyncio.gather(*(p.session.close() for p in opened))


async def truth(redis: Redis) -> int:
    """The clicks Redis holds (a missing key is 0)."""
    return int(await redis.get(NAMES.value(CLICKS)) or 0)


async def all_show(pages: list[Page], redis: Redis, expected: int, timeout: float) -> None:
    """Wait until Redis holds `expected` clicks and every page shows them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (held := await truth(redis)) != expected or any(p.clicks != held for p in pages):
        if asyncio.get_running_loop().time() > deadline:
            shown = [p.clicks for p in pages]
            raise AssertionError(f"Redis holds {held}, expected {expected}; pages show {shown}")
        await asyncio.sleep(0.02)  # polled: Redis tells no one when it was tampered with


async def version(redis: Redis) -> int:
    return int(await redis.get(NAMES.version(CLICKS)) or 0)


async def forge(redis: Redis, value: int, at_version: int) -> None:
    event = {"name": CLICKS, "value": value, "version": at_version}
    assert await redis.publish(NAMES.counter_channel(CLICKS), json.dumps(event)) == 2


async def huge_version(redis: Redis) -> None:
    await forge(redis, -5, 99_999_999)


async def next_version_wrong_value(redis: Redis) -> None:
    await forge(redis, 1000, await version(redis) + 1)


async def lower_version(redis: Redis) -> None:
    held = await version(redis)
    assert held >= 2  # the pages fixture clicked twice
    await forge(redis, -7, held - 1)


async def flushdb(redis: Redis) -> None:
    await redis.flushdb()


async def delete_version(redis: Redis) -> None:
    await redis.delete(NAMES.version(CLICKS))


async def delete_value(redis: Redis) -> None:
    await redis.delete(NAMES.value(CLICKS))


Tamper = Callable[[Redis], Awaitable[None]]
TAMPERING: dict[str, tuple[Tamper, int | None]] = {
    # name: (what is done, a wrong value the pages are shown first, if any)
    "huge version": (huge_version, None),
    "next version, wrong value": (next_version_wrong_value, 1000),
    "lower version": (lower_version, None),
    "FLUSHDB": (flushdb, None),
    "DEL of the version key": (delete_version, None),
    "DEL of the value key": (delete_value, None),
}
FORGERIES = {huge_version, next_version_wrong_value, lower_version}
FORGED_VALUES = {-5, -7}


def unwatched(fleet: Fleet) -> list[int]:
    """How many events for counters nobody watches each worker's relay has dropped."""
    return [int(worker_metrics(server.url)["relay"]["unwatched"]) for server in fleet.servers]


async def tampered(fleet: Fleet, redis: Redis, tamper: Tamper) -> None:
    """Tamper, and return once every worker's relay has handled a forged event: a marker
    for a counter nobody watches follows it on the channel, which Redis keeps in order."""
    before = unwatched(fleet)
    await tamper(redis)
    if tamper in FORGERIES:
        marker = {"name": "nobody-watches-this", "value": 1, "version": 1}
        await redis.publish(NAMES.counter_channel(CLICKS), json.dumps(marker))
        await eventually(
            lambda: all(n > b for n, b in zip(unwatched(fleet), before, strict=True)),
            WAIT_S,
            "every worker handled the forged event",
        )


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_every_session_converges_to_what_redis_holds(
    fleet: Fleet, pages: list[Page], redis: Redis, clicking: bool, tampering: str
) -> None:
    tamper, shown_first = TAMPERING[tampering]
    await tampered(fleet, redis, tamper)
    if shown_first is not None:  # the forgery is the next version: taken, until refuted
        await eventually(
            lambda: all(shown_first in p.shown for p in pages), WAIT_S, "the forgery shown"
        )
    value = await truth(redis)
    if clicking:
        await pages[3].session.click(BUTTON)
        value += 1
    await all_show(pages, redis, value, WAIT_S if clicking else RECONCILED_S)
    # Still live afterwards: a click on one worker reaches every session.
    await pages[0].session.click(BUTTON)
    await all_show(pages, redis, value + 1, WAIT_S)
    # Checked last: any patch a forgery caused went out before the one just awaited.
    assert not FORGED_VALUES & {v for p in pages for v in p.shown}
