"""Hostile and broken clients against a real worker: garbage, silence, floods, huge
frames, readers that stop reading, browsers that leave. Correctness and bounds only."""

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from counter_service.devtools.fleet import Fleet, ServerProcess
from counter_service.devtools.headless import FletError, HeadlessSession
from tests.support import eventually

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
ENV = {
    "COUNTER_REGISTER_TIMEOUT": "1",
    "COUNTER_SEND_TIMEOUT": "1",
    "COUNTER_EVENTS_PER_S": "5",
    "COUNTER_EVENT_BURST": "10",
    "COUNTER_MAX_FRAME_BYTES": "65536",
    "COUNTER_SESSION_TIMEOUT": "1",
    "COUNTER_PRESENCE_TTL": "60",
}
REGISTER = b"\x00" + msgpack.packb(
    [1, {"session_id": None, "page_name": "", "page": {"route": "/", "web": True}}]
)


def metrics(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/metrics.json", timeout=5) as response:
        return dict(json.load(response))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(1, log_dir=tmp_path, server_env=ENV) as running:
        yield running


async def raw(server: ServerProcess) -> ClientConnection:
    return await websockets.connect(server.url.replace("http", "ws") + "/ws", compression=None)


async def closed_with(socket: ClientConnection) -> int | None:
    """Wait until the server closed `socket` (reading whatever it sent); its close code."""
    try:
        async with asyncio.timeout(WAIT_S):
            async for _ in socket:
                pass
    except ConnectionClosed:
        pass
    return socket.close_code


GARBAGE: list[bytes | str] = [
    b"\xff\xfe random bytes",
    b"\x00\xc1",
    b"\x00" + msgpack.packb({"wrong": "shape"}),
    b"\x00" + msgpack.packb([42, {}]),
    b"\x00" + msgpack.packb([3, {"target": 1}]),
    "a text frame",
]
EARLY = b"\x00" + msgpack.packb([3, {"target": 1, "name": "click", "data": None}])
"""A well-formed event, sent before the register message."""


async def test_garbage_before_or_after_register_leaks_nothing(fleet: Fleet) -> None:
    server = fleet.servers[0]
    witness = await HeadlessSession.connect(server.url)
    try:
        await witness.wait_for(lambda s: s.int_value("online") == 1, WAIT_S)
        attempts = [(frame, first) for frame in GARBAGE for first in (False, True)]
        attempts += [(EARLY, False)]
        for frame, registered_first in attempts * 5:
            socket = await raw(server)
            if registered_first:
                await socket.send(REGISTER)
            await socket.send(frame)
            assert await closed_with(socket) == 1003
        await witness.click("increment")  # the worker served others throughout
        await witness.wait_for(lambda s: s.int_value("clicks") == 1, WAIT_S)
        await eventually(lambda: metrics(server)["live_connections"] == 1, WAIT_S, "baseline")
        await witness.wait_for(lambda s: s.int_value("online") == 1, WAIT_S)
        assert metrics(server)["websockets"]["rejected"]["bad frame"] == len(attempts) * 5
    finally:
        await witness.close()
    await eventually(lambda: metrics(server)["live_connections"] == 0, WAIT_S, "all gone")
    assert "Traceback" not in server.log_tail(10_000)


async def test_clients_that_never_register_are_closed_and_never_counted(fleet: Fleet) -> None:
    server = fleet.servers[0]
    sockets = [await raw(server) for _ in range(20)]
    assert metrics(server)["live_connections"] == 0  # open, but not online
    codes = await asyncio.gather(*(closed_with(s) for s in sockets))
    assert codes == [1008] * 20
    assert metrics(server)["websockets"]["rejected"]["never registered"] == 20


async def test_an_oversized_frame_closes_the_connection(fleet: Fleet) -> None:
    server = fleet.servers[0]
    for size in (70_000, 2_000_000):  # over our limit; over uvicorn's too
        socket = await raw(server)
        await socket.send(REGISTER)
        with contextlib.suppress(ConnectionClosed):
            await socket.send(b"\x00" + b"x" * size)
        assert await closed_with(socket) == 1009
    await eventually(lambda: metrics(server)["live_connections"] == 0, WAIT_S, "none live")


async def test_a_flooding_session_is_limited_and_others_still_count(fleet: Fleet) -> None:
    server = fleet.servers[0]
    flooder, other = [await HeadlessSession.connect(server.url) for _ in range(2)]
    try:
        for session in (flooder, other):
            await session.wait_for(lambda s: s.int_value("clicks") == 0, WAIT_S)
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(FletError):  # the worker disconnects a flood
            for _ in range(500):
                await flooder.click("increment")
        flood_s = asyncio.get_running_loop().time() - started
        for _ in range(3):
            await other.click("increment")
            await asyncio.sleep(0.25)
        await other.wait_for(lambda s: (s.int_value("clicks") or 0) >= 3, WAIT_S)
        await asyncio.sleep(1.0)  # nothing may still be queued after the flood
        counted = other.int_value("clicks") or 0
        allowed = 10 + 5 * (flood_s + 2.0) + 3  # burst, rate over the flood and after, other
        assert counted <= allowed, f"{counted} clicks counted, at most {allowed:.0f} allowed"
        assert metrics(server)["websockets"]["throttled_events"] >= 100
        assert metrics(server)["websockets"]["rejected"]["flooding"] == 1
        await asyncio.sleep(1.0)
        assert other.int_value("clicks") == counted  # the flood left nothing behind
    finally:
        await asyncio.gather(flooder.close(), other.close())


async def test_departed_sessions_expire_and_free_their_pages(fleet: Fleet) -> None:
    server = fleet.servers[0]
    baseline = metrics(server)["flet_sessions"]
    sessions = [await HeadlessSession.connect(server.url) for _ in range(10)]
    for session in sessions:
        await session.wait_for(lambda s: s.int_value("views") is not None, WAIT_S)
    assert metrics(server)["flet_sessions"] == baseline + 10
    assert metrics(server)["pages"] == 10
    await asyncio.gather(*(s.close() for s in sessions))
    await eventually(lambda: metrics(server)["pages"] == 0, WAIT_S, "pages parked")
    # A 1 s session timeout, then Flet's eviction sweep (every 10 s).
    await eventually(lambda: metrics(server)["flet_sessions"] == baseline, WAIT_S, "expired")


async def test_a_client_that_stops_reading_is_dropped_and_others_carry_on(
    tmp_path: Path,
) -> None:
    env = {"COUNTER_SEND_TIMEOUT": "1", "COUNTER_MAX_MESSAGE_BYTES": str(1 << 20)}
    with Fleet(1, log_dir=tmp_path, server_env=env, app=PUBSUB_APP) as fleet:
        server = fleet.servers[0]
        reader = await HeadlessSession.connect(server.url)
        # Reads nothing after its handshake: with one frame queued it stops reading, and
        # the kernel's buffers fill up behind it.
        stalled = await websockets.connect(
            server.url.replace("http", "ws") + "/ws", compression=None, max_queue=1
        )
        try:
            await stalled.send(REGISTER)
            await reader.wait_for(lambda s: s.value("log") == "[]", WAIT_S)
            for _ in range(10):  # each one makes every page re-send its growing log
                await reader.trigger(
                    "cmd", "click", json.dumps({"op": "send_big", "size": 500_000})
                )
            await reader.wait_for(lambda s: len(str(s.value("log"))) > 5_000_000, WAIT_S)
            rejected = lambda: metrics(server)["websockets"]["rejected"]  # noqa: E731
            await eventually(lambda: rejected().get("not reading") == 1, WAIT_S, "dropped")
            await eventually(lambda: metrics(server)["live_connections"] == 1, WAIT_S, "one left")
        finally:
            await asyncio.gather(reader.close(), stalled.close())


PUBSUB_APP = "tests.e2e.apps.pubsub_app:app"
