"""Tests of the headless client: pure patch logic, then a real Flet server in a subprocess."""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from counter_service.devtools.fleet import free_port
from counter_service.devtools.headless import (
    ControlTree,
    FletError,
    HeadlessSession,
    SessionCrashed,
    ws_url,
)

APP_DIR = Path(__file__).parent
STEP = 15.0  # generous per-step limit: only reached when something is broken


def wait_until_http_answers(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"test server exited early:\n{log.read_text(errors='replace')}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    pytest.fail(f"test server did not answer HTTP:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def serve_app(log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve tests/e2e/headless_app.py with uvicorn; always kill it (by PID) afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(APP_DIR), "headless_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_http_answers(port, proc, log)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(tmp_path_factory.mktemp("headless") / "server.log") as (url, _):
        yield url


def has_counter(session: HeadlessSession) -> bool:
    return session.control("counter") is not None


async def connect_ready(url: str, route: str = "/") -> HeadlessSession:
    session = await HeadlessSession.connect(url, route=route, timeout=STEP)
    await session.wait_for(has_counter, STEP)
    return session


def counter_is(expected: int) -> Callable[[HeadlessSession], bool]:
    return lambda session: session.int_value("counter") == expected


def item_keys(session: HeadlessSession) -> list[str]:
    column = session.control("items")
    assert column is not None
    return [child["key"] for child in column.get("controls", [])]


# --- pure logic ---------------------------------------------------------------------------


def test_ws_url_derives_websocket_endpoint() -> None:
    assert ws_url("http://127.0.0.1:8551") == "ws://127.0.0.1:8551/ws"
    assert ws_url("https://example.com/app/") == "wss://example.com/app/ws"
    with pytest.raises(ValueError, match="scheme"):
        ws_url("ftp://example.com")


def text(control_id: int, key: str, value: Any) -> dict[str, Any]:
    return {"_c": "Text", "_i": control_id, "key": key, "value": value}


def test_tree_applies_flet_patch_operations() -> None:
    tree = ControlTree()
    column: dict[str, Any] = {"_c": "Column", "_i": 13, "key": "items"}
    column["controls"] = [text(12, "a", "A")]
    tree.load({"_c": "Page", "_i": 1, "views": [{"_c": "View", "_i": 3, "controls": [column]}]})
    # Shapes copied from frames a Flet 1.0.5 server sent (add, move, replace, remove).
    assert tree.apply_patch(13, [[0, {"controls": [1]}], [1, 1, 1, text(20, "b", "B")]]) == [
        ("b", "B")
    ]
    assert tree.apply_patch(13, [[0, {"controls": [1]}], [3, 1, 1, 1, 0]]) == []
    assert [c["key"] for c in column["controls"]] == ["b", "a"]
    assert tree.apply_patch(12, [[0], [0, 0, "value", "A2"]]) == [("a", "A2")]
    assert tree.apply_patch(13, [[0, {"controls": [1]}], [2, 1, 0]]) == []
    assert tree.control("b") is None
    assert 20 not in tree.by_id
    assert tree.control("a") == text(12, "a", "A2")


def test_tree_reports_replaced_subtree_and_rejects_unknown_operation() -> None:
    tree = ControlTree()
    tree.load({"_c": "Page", "_i": 1, "content": text(5, "old", 1)})
    assert tree.apply_patch(1, [[0], [0, 0, "content", text(6, "new", 2)]]) == [("new", 2)]
    assert tree.control("old") is None
    assert tree.apply_patch(99, [[0], [0, 0, "value", 1]]) == []
    with pytest.raises(FletError, match="unknown patch operation"):
        tree.apply_patch(6, [[0], [9, 0, "value", 3]])


# --- against a real server ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_connect_reads_initial_values(server_url: str) -> None:
    async with await connect_ready(server_url, route="/start") as session:
        assert session.session_id
        assert session.value("counter") == "count 0"
        assert session.int_value("counter") == 0
        assert session.value("route") == "/start"
        button = session.control("inc")
        assert button is not None
        assert button["_c"] == "Button"
        assert session.control("missing") is None
        assert session.value("missing") is None
        assert session.int_value("missing") is None


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_clicks_increment_counter(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        for _ in range(7):
            await session.click("inc")
        await session.wait_for(lambda s: s.int_value("counter") == 7, STEP)
        with pytest.raises(KeyError, match="no-such-key"):
            await session.click("no-such-key")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_sessions_are_independent(server_url: str) -> None:
    async with await connect_ready(server_url) as a, await connect_ready(server_url) as b:
        assert a.session_id != b.session_id
        for _ in range(3):
            await a.click("inc")
        await b.click("inc")
        await a.wait_for(lambda s: s.int_value("counter") == 3, STEP)
        await b.wait_for(lambda s: s.int_value("counter") == 1, STEP)
        await b.click("inc")
        await b.wait_for(lambda s: s.int_value("counter") == 2, STEP)
        assert a.int_value("counter") == 3


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_change_route_runs_on_route_change(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        await session.change_route("/other")
        await session.wait_for(lambda s: s.value("route") == "/other", STEP)
        assert session.route == "/other"


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_invoke_method_is_answered_and_push_route_navigates(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        calls: list[tuple[str, Any]] = []
        session.on_invoke = lambda control_id, name, args: calls.append((name, args))
        await session.click("push")
        # "pushed" only changes after page.push_route() got our invoke-method answer.
        await session.wait_for(lambda s: s.value("pushed") == "yes", STEP)
        await session.wait_for(lambda s: s.value("route") == "/pushed", STEP)
        assert calls == [("push_route", {"route": "/pushed"})]


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_list_patches_add_move_remove(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        await session.click("add")
        await session.wait_for(lambda s: s.value("item-b") == "b", STEP)
        await session.click("rotate")
        await session.wait_for(lambda s: item_keys(s) == ["item-b", "item-a"], STEP)
        await session.click("remove")
        await session.wait_for(lambda s: item_keys(s) == ["item-a"], STEP)
        assert session.control("item-b") is None


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_on_change_reports_increasing_values(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        seen: list[tuple[str, Any, float]] = []
        session.on_change = lambda key, value, at: seen.append((key, value, at))
        for expected in (1, 2, 3):
            await session.click("inc")
            await session.wait_for(counter_is(expected), STEP)
        assert [(key, value) for key, value, _ in seen] == [
            ("counter", "count 1"),
            ("counter", "count 2"),
            ("counter", "count 3"),
        ]
        stamps = [at for _, _, at in seen]
        assert stamps == sorted(stamps)


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_wait_for_timeout_names_current_values(server_url: str) -> None:
    async with await connect_ready(server_url) as session:

        def counter_is_99(s: HeadlessSession) -> bool:
            return s.int_value("counter") == 99

        with pytest.raises(TimeoutError) as raised:
            await session.wait_for(counter_is_99, 0.2)
        message = str(raised.value)
        assert "counter_is_99" in message
        assert "counter='count 0'" in message
        assert session.session_id in message
        assert not session.closed


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_session_crash_is_raised_to_waiters(server_url: str) -> None:
    async with await connect_ready(server_url) as session:
        await session.click("boom")
        with pytest.raises(SessionCrashed, match="boom requested"):
            await session.wait_for(lambda s: False, STEP)
        assert session.closed
        with pytest.raises(FletError):
            await session.click("inc")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_close_is_idempotent(server_url: str) -> None:
    session = await connect_ready(server_url)
    await session.close()
    await session.close()
    assert session.closed
    with pytest.raises(FletError, match="closed"):
        await session.wait_for(lambda s: False, STEP)
    with pytest.raises(FletError):
        await session.change_route("/x")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_server_kill_closes_session(tmp_path: Path) -> None:
    with serve_app(tmp_path / "server.log") as (url, proc):
        session = await connect_ready(url)
        proc.kill()
        proc.wait(timeout=30)
        with pytest.raises(FletError) as raised:
            await session.wait_for(lambda s: False, 60)
        assert not isinstance(raised.value, TimeoutError)
        assert session.closed
        await session.close()


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_connect_to_closed_port_raises_flet_error() -> None:
    with pytest.raises(FletError, match="cannot open websocket"):
        await HeadlessSession.connect(f"http://127.0.0.1:{free_port()}", timeout=STEP)


# --- cookies, carried like a browser carries them ------------------------------------------


async def test_cookies_go_with_the_handshake_and_those_the_server_sets_are_kept() -> None:
    sent: list[str | None] = []

    def set_affinity(_ws: ServerConnection, request: Request, response: Response) -> Response:
        sent.append(request.headers.get("Cookie"))
        response.headers["Set-Cookie"] = "affinity=abc; Path=/; HttpOnly"
        return response

    async def register(ws: ServerConnection) -> None:
        await ws.recv()  # the client's register message
        page = {"_c": "Page", "_i": 1}
        await ws.send(bytes([0]) + msgpack.packb([1, {"session_id": "s1", "page_patch": page}]))
        await ws.wait_closed()

    async with serve(register, "127.0.0.1", 0, process_response=set_affinity) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with await HeadlessSession.connect(url, cookies={"theme": "dark"}) as first:
            assert first.cookies == {"theme": "dark", "affinity": "abc"}
        async with await HeadlessSession.connect(url, cookies=first.cookies) as again:
            assert again.cookies == first.cookies
        async with await HeadlessSession.connect(url) as plain:
            assert plain.cookies == {"affinity": "abc"}
    assert sent == ["theme=dark", "theme=dark; affinity=abc", None]
