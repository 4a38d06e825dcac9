"""Hostile and broken clients against a real worker on a real Redis: garbage, malformed
bodies, silence, floods of every kind, huge frames, readers that stop reading or read
slowly, browsers that leave. Correctness and bounds only, never speed."""

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from counter_service.devtools.fleet import HOST, Fleet, ServerProcess
from counter_service.devtools.headless import FletError, HeadlessSession
from tests.support import eventually, worker_metrics

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
SESSION_TIMEOUT_S = 60
"""Long on purpose: a refused client's session must be gone well before it."""
ENV = {
    "COUNTER_REGISTER_TIMEOUT": "1",
    "COUNTER_SEND_TIMEOUT": "1",
    "COUNTER_EVENTS_PER_S": "5",
    "COUNTER_EVENT_BURST": "10",
    "COUNTER_MAX_FRAMES_PER_S": "50",
    "COUNTER_FRAME_BURST": "100",
    "COUNTER_MAX_FRAME_BYTES": "65536",
    "COUNTER_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S),
    "COUNTER_PRESENCE_TTL": "60",
}
BURST, RATE = 10, 5  # events
FLOOD_LIMIT = 100  # frames of any kind at once (then 50 a second): the frame burst
REGISTER = b"\x00" + msgpack.packb(
    [1, {"session_id": None, "page_name": "", "page": {"route": "/", "web": True}}]
)
PUBSUB_APP = "tests.e2e.apps.pubsub_app:app"


def packed(message: Any) -> bytes:
    return b"\x00" + msgpack.packb(message)


def metrics(server: ServerProcess) -> dict[str, Any]:
    return worker_metrics(server.url)


def refused(server: ServerProcess) -> dict[str, int]:
    return dict(metrics(server)["websockets"]["rejected"])


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(1, log_dir=tmp_path, server_env=ENV) as running:
        yield running


@pytest.fixture
def pubsub_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """The pubsub test app: its `cmd` button runs commands, its counters are separate."""
    with Fleet(1, log_dir=tmp_path, server_env=ENV, app=PUBSUB_APP) as running:
        yield running


async def raw(server: ServerProcess) -> ClientConnection:
    return await websockets.connect(server.url.replace("http", "ws") + "/ws", compression=None)


async def registered(server: ServerProcess) -> ClientConnection:
    """A raw websocket that sent the register message and got the page back."""
    socket = await raw(server)
    await socket.send(REGISTER)
    await socket.recv()  # the register response: Flet holds the session now
    return socket


async def closed_with(socket: ClientConnection) -> int | None:
    """Wait until the server closed `socket` (reading whatever it sent); its close code."""
    try:
        async with asyncio.timeout(WAIT_S):
            async for _ in socket:
                pass
    except ConnectionClosed:
        pass
    return socket.close_code


async def back_to_baseline(server: ServerProcess, witness: HeadlessSession) -> None:
    """Only `witness` is left: one live connection, one page, one Flet session, one
    websocket open, and its page says one online (the refused sessions ended at once:
    well within SESSION_TIMEOUT_S)."""
    baseline = {"live_connections": 1, "pages": 1, "flet_sessions": 1}

    def at_baseline() -> bool:
        now = metrics(server)
        open_now = now["websockets"]["open"]
        return {k: now[k] for k in baseline} == baseline and open_now == {
            "registered": 1,
            "unregistered": 0,
        }

    await eventually(at_baseline, WAIT_S, f"back to {baseline}: {metrics(server)}")
    await witness.wait_for(lambda s: s.int_value("online") == 1, WAIT_S)


def no_traceback(server: ServerProcess) -> None:
    log = server.log_tail(20_000)
    assert "Traceback" not in log
    assert "Task exception was never retrieved" not in log


GARBAGE: list[bytes | str] = [
    b"\xff\xfe random bytes",
    b"\x00\xc1",
    packed({"wrong": "shape"}),
    packed([42, {}]),
    packed([3, {"target": 1}]),
    "a text frame",
]
MALFORMED_BODIES = [
    packed([3, {"target": [1], "name": "click", "data": None}]),
    packed([4, {"id": 1, "props": 5}]),
    packed([4, {"id": [1], "props": {"route": "/x"}}]),
    packed([5, {"control_id": [1], "call_id": "c", "result": None, "error": None}]),
    packed([3, {"target": 1, "name": 5, "data": None}]),
]
PROPS_FLET_CANNOT_APPLY = [
    packed([4, {"id": 1, "props": {"theme_mode": "no such mode"}}]),
    packed([4, {"id": 1, "props": {"__class__": 5}}]),
    packed([4, {"id": 1, "props": {"views": [5]}}]),
]
EARLY = packed([3, {"target": 1, "name": "click", "data": None}])
"""A well-formed event, sent before the register message."""


async def test_garbage_and_malformed_bodies_close_1003_and_leak_nothing(fleet: Fleet) -> None:
    server = fleet.servers[0]
    witness = await HeadlessSession.connect(server.url)
    try:
        await witness.wait_for(lambda s: s.int_value("online") == 1, WAIT_S)
        attempts = [(frame, first) for frame in GARBAGE for first in (False, True)]
        attempts += [(EARLY, False)]
        attempts += [(frame, True) for frame in MALFORMED_BODIES + PROPS_FLET_CANNOT_APPLY]
        for round_ in range(2):
            for frame, registered_first in attempts:
                socket = await (registered(server) if registered_first else raw(server))
                await socket.send(frame)
                assert await closed_with(socket) == 1003, (round_, frame)
            await witness.click("increment")  # the worker served others throughout
            await witness.wait_for(lambda s, n=round_ + 1: s.int_value("clicks") == n, WAIT_S)
        await back_to_baseline(server, witness)
        assert refused(server)["bad frame"] == len(attempts) * 2
    finally:
        await witness.close()
    await eventually(lambda: metrics(server)["live_connections"] == 0, WAIT_S, "all gone")
    no_traceback(server)


async def test_a_method_result_for_a_control_the_page_lacks_is_dropped(fleet: Fleet) -> None:
    server = fleet.servers[0]
    session = await HeadlessSession.connect(server.url)
    try:
        await session.wait_for(lambda s: s.int_value("clicks") == 0, WAIT_S)
        result = {"control_id": 999_999, "call_id": "c", "result": None, "error": None}
        await session._send(5, result)  # Flet itself would stop reading, with a traceback
        await session.click("increment")  # still served on the same connection
        await session.wait_for(lambda s: s.int_value("clicks") == 1, WAIT_S)
        assert refused(server) == {}
    finally:
        await session.close()
    no_traceback(server)


async def test_clients_that_never_register_are_closed_and_never_counted(fleet: Fleet) -> None:
    server = fleet.servers[0]
    baseline = metrics(server)["flet_sessions"]
    sockets = [await raw(server) for _ in range(20)]
    now = metrics(server)
    assert now["live_connections"] == 0  # open, but not online
    assert now["websockets"]["open"] == {"registered": 0, "unregistered": 20}
    codes = await asyncio.gather(*(closed_with(s) for s in sockets))
    assert codes == [1008] * 20
    assert refused(server)["never registered"] == 20

    def at_baseline() -> bool:
        now = metrics(server)
        return (
            now["websockets"]["open"] == {"registered": 0, "unregistered": 0}
            and now["live_connections"] == 0
            and now["flet_sessions"] == baseline
        )

    await eventually(at_baseline, WAIT_S, "nothing left of them")


async def test_every_oversized_frame_is_refused_with_1009_and_counted(fleet: Fleet) -> None:
    server = fleet.servers[0]
    sizes = (70_000, 2_000_000)  # over our limit; over uvicorn's (four times ours) too
    for size in sizes:
        socket = await registered(server)
        with contextlib.suppress(ConnectionClosed):
            await socket.send(b"\x00" + b"x" * size)
        assert await closed_with(socket) == 1009
    await eventually(lambda: refused(server).get("bad frame") == len(sizes), WAIT_S, "counted")
    await eventually(lambda: metrics(server)["live_connections"] == 0, WAIT_S, "none live")
    # The guard ended the first one's session; uvicorn closed the second itself, which
    # looks like a client closing with 1009: its session waits for a reconnect.
    await eventually(lambda: metrics(server)["flet_sessions"] == 1, WAIT_S, "one ended")


# The same click, encoded as msgpack allows (Flet decodes all of them alike).
def encoded_clicks(target: int, command: str) -> dict[str, bytes]:
    body = msgpack.packb({"target": target, "name": "click", "data": command})
    return {
        "fixarray": b"\x00\x92\x03" + body,
        "array16": b"\x00\xdc\x00\x02\x03" + body,
        "uint8 action": b"\x00\x92\xcc\x03" + body,
    }


def incr(name: str) -> str:
    return json.dumps({"op": "incr", "name": name})


async def pubsub_session(server: ServerProcess) -> HeadlessSession:
    session = await HeadlessSession.connect(server.url)
    await session.wait_for(lambda s: s.int_value("c0") is not None, WAIT_S)
    return session


async def send_and_count(server: ServerProcess, session: HeadlessSession, frame: bytes) -> int:
    """Send `frame` (an `incr` click) 60 times at once, wait until each one was either
    counted or throttled, and return how many were counted: at most the burst and the
    rate over the time it took."""
    sent, name = 60, json.loads(msgpack.unpackb(frame[1:])[1]["data"])["name"]
    throttled_before = metrics(server)["websockets"]["throttled_events"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(sent):  # below the flood limit: throttled, not disconnected
        await session._ws.send(frame)

    def counted() -> int:
        return session.int_value(name) or 0

    def throttled() -> int:
        return int(metrics(server)["websockets"]["throttled_events"]) - throttled_before

    await eventually(lambda: counted() + throttled() == sent, WAIT_S, "every click accounted")
    allowed = BURST + RATE * (loop.time() - started) + 1
    assert BURST <= counted() <= allowed, f"{counted()} of {sent} counted"
    return counted()


async def test_events_are_throttled_however_they_are_encoded(pubsub_fleet: Fleet) -> None:
    server = pubsub_fleet.servers[0]
    for counter, encoding in enumerate(("fixarray", "array16", "uint8 action")):
        session = await pubsub_session(server)
        try:
            frame = encoded_clicks(session.tree.by_key["cmd"], incr(f"c{counter}"))[encoding]
            await send_and_count(server, session, frame)
            assert not session.closed, encoding
        finally:
            await session.close()
    assert refused(server) == {}


async def test_a_props_flood_is_disconnected_and_its_session_freed(pubsub_fleet: Fleet) -> None:
    server = pubsub_fleet.servers[0]
    witness = await pubsub_session(server)
    flooder = await registered(server)
    try:
        props = packed([4, {"id": 1, "props": {"route": "/flood"}}])
        with contextlib.suppress(ConnectionClosed):
            for _ in range(FLOOD_LIMIT * 5):
                await flooder.send(props)
        assert await closed_with(flooder) == 1008
        assert refused(server) == {"flooding": 1}
        await eventually(lambda: metrics(server)["flet_sessions"] == 1, WAIT_S, "freed")
        await witness.trigger("cmd", "click", incr("c0"))
        await witness.wait_for(lambda s: s.int_value("c0") == 1, WAIT_S)
    finally:
        await witness.close()
    no_traceback(server)


async def flood_reconnecting(server: ServerProcess, name: str, seconds: float) -> int:
    """Flood counter `name` with clicks for `seconds`, reconnecting each time the server
    cuts the session off, as an attacker would; how many connections it opened."""
    loop = asyncio.get_running_loop()
    until, connections = loop.time() + seconds, 0
    while loop.time() < until:
        session = await pubsub_session(server)
        connections += 1
        try:
            with contextlib.suppress(FletError):
                for _ in range(FLOOD_LIMIT * 3):
                    await session.trigger("cmd", "click", incr(name))
            await session.wait_for(lambda s: s.closed, WAIT_S)
        except FletError:
            pass  # closed while waiting: what we waited for
        finally:
            await session.close()
    return connections


async def test_a_reconnecting_flooder_is_limited_and_others_clicks_all_count(
    pubsub_fleet: Fleet,
) -> None:
    server = pubsub_fleet.servers[0]
    other = await pubsub_session(server)
    try:
        flooding = asyncio.ensure_future(flood_reconnecting(server, "c0", seconds=3.0))
        clicks = 0
        while not flooding.done():  # the other session clicks like a person meanwhile
            await other.trigger("cmd", "click", incr("c1"))
            clicks += 1
            await other.wait_for(lambda s, n=clicks: s.int_value("c1") == n, WAIT_S)
            await asyncio.sleep(0.25)  # a person's pace, not synchronisation
        connections = await flooding
        assert connections >= 2
        assert clicks >= 3
        # Every connection gets at most its burst, plus its rate while it lasts (< 1 s).
        allowed = connections * (BURST + RATE)
        await asyncio.sleep(1.0)  # anything still queued would land now
        counted = other.int_value("c0") or 0
        assert counted <= allowed, f"{counted} flood clicks counted over {connections}"
        assert other.int_value("c1") == clicks  # every one of the other session's
        assert refused(server)["flooding"] == connections
        await eventually(lambda: metrics(server)["flet_sessions"] == 1, WAIT_S, "freed")
        assert other.int_value("c0") == counted  # the flood left nothing behind
    finally:
        await other.close()


async def tiny_buffered(server: ServerProcess) -> ClientConnection:
    """A registered websocket whose kernel buffer holds 4 KB and whose library holds one
    message: what it does not read piles up in the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, server.port))
    ws_url = server.url.replace("http", "ws") + "/ws"
    client = await websockets.connect(
        ws_url, sock=sock, compression=None, max_queue=1, max_size=None, close_timeout=1
    )
    await client.send(REGISTER)
    return client


async def send_growing_logs(reader: HeadlessSession, messages: int, size: int) -> None:
    """Make every page re-send its log, grown by `size` each time, `messages` times; one
    at a time, as fast as `reader` (which reads) takes them."""
    for sent in range(1, messages + 1):
        await reader.trigger("cmd", "click", json.dumps({"op": "send_big", "size": size}))
        await reader.wait_for(lambda s, n=sent: len(json.loads(str(s.value("log")))) == n, WAIT_S)


async def test_a_slow_reader_is_dropped_and_others_carry_on(tmp_path: Path) -> None:
    # The client reads, two frames a second: far behind what the page sends, so more
    # than COUNTER_MAX_SEND_QUEUE waits for it for longer than COUNTER_SEND_TIMEOUT.
    env = {"COUNTER_SEND_TIMEOUT": "2", "COUNTER_MAX_MESSAGE_BYTES": str(1 << 20)}
    with Fleet(1, log_dir=tmp_path, server_env=env, app=PUBSUB_APP) as fleet:
        server = fleet.servers[0]
        reader = await pubsub_session(server)
        slow = await tiny_buffered(server)

        async def read_slowly() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.sleep(0.5)  # two frames a second: the behaviour tested
                    await slow.recv()

        reading = asyncio.ensure_future(read_slowly())
        try:
            await send_growing_logs(reader, messages=15, size=200_000)
            await eventually(lambda: refused(server) == {"not reading": 1}, WAIT_S, "dropped")
            await eventually(lambda: metrics(server)["live_connections"] == 1, WAIT_S, "one left")
            await eventually(lambda: metrics(server)["flet_sessions"] == 1, WAIT_S, "freed")
            await reader.trigger("cmd", "click", incr("c0"))  # the other one carries on
            await reader.wait_for(lambda s: s.int_value("c0") == 1, WAIT_S)
            # Closed (its 1008 waits behind what it did not read: it may never see it).
            assert await closed_with(slow) is not None
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            await asyncio.gather(reader.close(), slow.close())


async def test_a_client_that_stops_reading_is_dropped_and_others_carry_on(
    tmp_path: Path,
) -> None:
    env = {"COUNTER_SEND_TIMEOUT": "1", "COUNTER_MAX_MESSAGE_BYTES": str(1 << 20)}
    with Fleet(1, log_dir=tmp_path, server_env=env, app=PUBSUB_APP) as fleet:
        server = fleet.servers[0]
        reader = await pubsub_session(server)
        stalled = await tiny_buffered(server)  # and reads nothing at all
        try:
            await send_growing_logs(reader, messages=12, size=300_000)
            await eventually(lambda: refused(server) == {"not reading": 1}, WAIT_S, "dropped")
            await eventually(lambda: metrics(server)["live_connections"] == 1, WAIT_S, "one left")
            await eventually(lambda: metrics(server)["flet_sessions"] == 1, WAIT_S, "freed")
        finally:
            await asyncio.gather(reader.close(), stalled.close())


async def test_departed_sessions_expire_and_free_their_pages(tmp_path: Path) -> None:
    env = {**ENV, "COUNTER_SESSION_TIMEOUT": "1"}
    with Fleet(1, log_dir=tmp_path, server_env=env) as fleet:
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


GALLERY_APP = "tests.e2e.apps.gallery_app:app"


async def test_a_burst_over_the_send_queue_bound_read_in_time_is_delivered_whole(
    tmp_path: Path,
) -> None:
    # One click queues 20 pictures of 250 KB, 5 MB in all, before the first is sent: over
    # COUNTER_MAX_SEND_QUEUE (4 MiB by default) at once, as a gallery page may. A client
    # that reads them in time is served, not dropped as not reading.
    with Fleet(1, log_dir=tmp_path, app=GALLERY_APP) as fleet:
        server = fleet.servers[0]
        session = await HeadlessSession.connect(server.url)
        try:
            await session.wait_for(lambda s: s.value("shown") == "0", WAIT_S)
            await session.trigger("load", "click")
            await session.wait_for(lambda s: s.value("shown") == "20", WAIT_S)
            assert not session.closed
            assert refused(server) == {}
        finally:
            await session.close()
        no_traceback(server)
