"""Two real `counter-service serve` processes on one real Redis, driven by headless clients."""

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from redis.asyncio import Redis

from counter_service.devtools.fleet import Fleet, ServerProcess
from counter_service.devtools.headless import HeadlessSession
from counter_service.flet.live import PLACEHOLDER
from counter_service.names import Names
from tests.support import eventually, worker_metrics
from ui import status
from ui.contract import BUTTON, CLICKS, COUNTERS, STATUS
from ui.page import LABELS

pytestmark = pytest.mark.e2e

WAIT_S = 30.0


class Client:
    """A headless session that records every value each keyed number showed."""

    def __init__(self, session: HeadlessSession, server: str) -> None:
        self.session = session
        self.server = server
        self.history: dict[str, list[int]] = defaultdict(list)
        session.on_change = self._record

    def _record(self, key: str, value: object, _at: float) -> None:
        if key in COUNTERS and str(value).isdigit():
            self.history[key].append(int(str(value)))

    def shows(self, **expected: int) -> bool:
        return all(self.session.int_value(k) == v for k, v in expected.items())


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(2, log_dir=tmp_path, server_env={"COUNTER_PRESENCE_TTL": "3"}) as running:
        yield running


async def connect(fleet: Fleet, count: int) -> list[Client]:
    urls = [fleet.servers[i % len(fleet.servers)].url for i in range(count)]
    sessions = await asyncio.gather(*(HeadlessSession.connect(url) for url in urls))
    return [Client(s, url) for s, url in zip(sessions, urls, strict=True)]


async def wait_all(clients: list[Client], **expected: int) -> None:
    async def one(client: Client) -> None:
        await client.session.wait_for(lambda _s: client.shows(**expected), WAIT_S)

    await asyncio.gather(*(one(c) for c in clients))


@pytest.fixture
async def clients(fleet: Fleet) -> AsyncIterator[list[Client]]:
    opened = await connect(fleet, 20)
    yield opened
    await asyncio.gather(*(c.session.close() for c in opened))


async def test_clicks_split_over_two_processes_converge_everywhere(
    fleet: Fleet, clients: list[Client]
) -> None:
    await wait_all(clients, views=20, online=20, clicks=0)

    async def click(client: Client) -> None:
        for _ in range(25):
            await client.session.click("increment")

    await asyncio.gather(*(click(c) for c in clients))
    await wait_all(clients, clicks=500, views=20, online=20)

    redis = Redis.from_url(fleet.redis.url)
    try:
        assert await redis.get("counter-service:counter:{clicks}") == b"500"
        clients_per_server = await redis.client_list(_type="pubsub")
        assert len(clients_per_server) == 2  # one subscription per process, not per session
    finally:
        await redis.aclose()
    for client in clients:
        for key, seen in client.history.items():
            assert seen == sorted(seen), f"{key} moved backwards on {client.server}: {seen}"


async def test_route_changes_count_as_views_everywhere(clients: list[Client]) -> None:
    await wait_all(clients, views=20)
    await clients[0].session.change_route("/about")
    await clients[1].session.change_route("/pricing")
    await wait_all(clients, views=22)


async def test_online_drops_when_clients_disconnect(clients: list[Client]) -> None:
    await wait_all(clients, online=20)
    await asyncio.gather(*(c.session.close() for c in clients[:7]))
    await wait_all(clients[7:], online=13)


async def test_a_killed_worker_drops_out_of_online(fleet: Fleet, clients: list[Client]) -> None:
    await wait_all(clients, online=20)
    survivors = [c for c in clients if c.server == fleet.servers[0].url]
    fleet.servers[1].kill()  # SIGKILL: no goodbye, its presence key must expire
    await wait_all(survivors, online=len(survivors))


async def test_a_stopped_worker_leaves_online_at_once(tmp_path: Path) -> None:
    # With a TTL of a minute, only the graceful goodbye can make this pass in time.
    with Fleet(2, log_dir=tmp_path, server_env={"COUNTER_PRESENCE_TTL": "60"}) as fleet:
        opened = await connect(fleet, 4)
        try:
            await wait_all(opened, online=4)
            fleet.servers[1].stop()
            survivors = [c for c in opened if c.server == fleet.servers[0].url]
            await wait_all(survivors, online=2)
        finally:
            await asyncio.gather(*(c.session.close() for c in opened))


async def test_pages_recover_after_redis_restarts(fleet: Fleet, clients: list[Client]) -> None:
    await wait_all(clients, views=20)
    await clients[0].session.click("increment")
    await wait_all(clients, clicks=1)
    fleet.redis.restart()  # empty again: the truth is now 0 clicks
    await wait_all(clients, clicks=0, online=20)
    await clients[3].session.click("increment")
    await wait_all(clients, clicks=1)
    await eventually(lambda: all(s.ready() for s in fleet.servers), WAIT_S, "servers ready")


@pytest.mark.parametrize("fanout", ["direct", "update"])
async def test_the_embedded_store_serves_one_process(tmp_path: Path, fanout: str) -> None:
    server = ServerProcess(tmp_path, redis_url=None, args=["--fanout", fanout]).start()
    try:
        opened = [Client(await HeadlessSession.connect(server.url), server.url) for _ in range(2)]
        await wait_all(opened, views=2, online=2)
        await opened[0].session.click("increment")
        await wait_all(opened, clicks=1)
        assert "embedded in-process Redis" in server.log_tail(200).splitlines()[0]
        await asyncio.gather(*(c.session.close() for c in opened))
    finally:
        server.stop()


def metrics(server: ServerProcess) -> dict[str, Any]:
    """The JSON view of the server's metrics (what the load tester reads too)."""
    return worker_metrics(server.url)


async def test_clients_leaving_before_registering_are_not_left_online(fleet: Fleet) -> None:
    server = fleet.servers[0]
    for _ in range(5):
        socket = await websockets.connect(server.url.replace("http", "ws") + "/ws")
        await socket.close()
    await eventually(lambda: metrics(server)["live_connections"] == 0, WAIT_S, "no one live")


async def test_pages_that_vanish_mid_update_leave_the_fanout(fleet: Fleet) -> None:
    server = fleet.servers[0]
    sessions = [await HeadlessSession.connect(server.url) for _ in range(30)]
    for session in sessions:
        await session.wait_for(lambda s: s.int_value("clicks") is not None, WAIT_S)
    clicker, leavers = sessions[0], sessions[1:]

    async def click() -> None:
        for _ in range(200):
            await clicker.click("increment")
            await asyncio.sleep(0.002)

    clicking = asyncio.create_task(click())
    await asyncio.sleep(0.2)
    for session in leavers:  # no close frame: the server finds out while sending
        session._ws.transport.abort()
    await clicking
    await eventually(lambda: metrics(server)["pages"] == 1, WAIT_S, "only the clicker's page")
    await clicker.close()
    await eventually(
        lambda: (metrics(server)["pages"], metrics(server)["live_connections"]) == (0, 0),
        WAIT_S,
        "every page gone",
    )


async def test_a_page_that_reconnects_catches_up_and_stays_live(fleet: Fleet) -> None:
    server = fleet.servers[0]
    clicker = Client(await HeadlessSession.connect(server.url), server.url)
    leaver = await HeadlessSession.connect(server.url)
    await leaver.wait_for(lambda s: s.int_value("clicks") == 0, WAIT_S)
    session_id = leaver.session_id
    await leaver.close()
    await eventually(lambda: metrics(server)["pages"] == 1, WAIT_S, "the leaver is parked")
    await clicker.session.click("increment")
    await wait_all([clicker], clicks=1)
    back = await HeadlessSession.connect(server.url, session_id=session_id)
    try:
        assert back.session_id == session_id  # the same Flet session, not a new visit
        await back.wait_for(lambda s: s.int_value("clicks") == 1, WAIT_S)
        await eventually(lambda: metrics(server)["pages"] == 2, WAIT_S, "resumed")
        await clicker.session.click("increment")
        await back.wait_for(lambda s: s.int_value("clicks") == 2, WAIT_S)
    finally:
        await asyncio.gather(back.close(), clicker.session.close())


def rss_kb(pid: int | None) -> int:
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


async def forge(redis_url: str, names: range) -> None:
    redis = Redis.from_url(redis_url)
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for i in names:
                event = json.dumps({"name": f"spam-{i}", "value": i, "version": 1})
                pipe.publish("counter-service:events", event)
            await pipe.execute()
    finally:
        await redis.aclose()


async def test_fifty_thousand_forged_names_leave_a_workers_memory_flat(
    fleet: Fleet, clients: list[Client]
) -> None:
    server = fleet.servers[0]
    await wait_all(clients, views=20)
    await forge(fleet.redis.url, range(5_000))  # warm the allocator up first
    await eventually(lambda: metrics(server)["relay"]["unwatched"] >= 5_000, WAIT_S, "warm-up")
    before = rss_kb(server.pid)
    await forge(fleet.redis.url, range(5_000, 55_000))
    await eventually(lambda: metrics(server)["relay"]["unwatched"] >= 55_000, 60, "all seen")
    grown_kb = rss_kb(server.pid) - before
    print(f"RSS grew by {grown_kb} KB over 50,000 forged names")
    assert grown_kb < 8 * 1024  # holding them would take tens of MB
    await clients[0].session.click("increment")
    await wait_all(clients, clicks=1)


async def test_a_broken_counter_shows_on_every_page_and_clears_once_repaired(
    fleet: Fleet, clients: list[Client]
) -> None:
    await wait_all(clients, views=20)
    message = status.broken(LABELS[CLICKS], 'holds "abc", not an integer')
    key = Names("counter-service").value(CLICKS)
    redis = Redis.from_url(fleet.redis.url)
    try:
        await redis.set(key, "abc")
        await clients[0].session.click(BUTTON)  # refused: every page is told at once

        async def broken(client: Client) -> None:
            await client.session.wait_for(
                lambda s: s.value(STATUS) == message and s.value(CLICKS) == PLACEHOLDER, WAIT_S
            )

        await asyncio.gather(*(broken(c) for c in clients))
        assert await redis.get(key) == b"abc"
        await redis.set(key, "5")  # no click: the next reconciliation heals it
    finally:
        await redis.aclose()
    await wait_all(clients, clicks=5)
    await asyncio.gather(
        *(c.session.wait_for(lambda s: s.value(STATUS) == "", WAIT_S) for c in clients)
    )


async def test_slow_down_stays_while_clicks_are_refused_then_goes(fleet: Fleet) -> None:
    session = await HeadlessSession.connect(fleet.servers[0].url)
    lines: list[str] = []
    session.on_change = lambda key, value, _at: lines.append(str(value)) if key == STATUS else None
    try:
        await session.wait_for(lambda s: s.int_value(CLICKS) is not None, WAIT_S)
        for _ in range(150):  # 50 a second for 3 s: over the rate, under the flood limit
            await session.click(BUTTON)
            await asyncio.sleep(0.02)  # pacing the clicks, not waiting for anything
        await session.wait_for(lambda s: s.value(STATUS) == "", WAIT_S)
    finally:
        await session.close()
    said = [line for i, line in enumerate(lines) if i == 0 or lines[i - 1] != line]
    assert said[said.index(status.SLOW_DOWN) :] == [status.SLOW_DOWN, ""], said
