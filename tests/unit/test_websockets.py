"""The websocket guard with scripted clients and apps: what counts as online, what is
refused, what is throttled, and that every handling ends."""

import asyncio
import logging
from typing import Any

import msgpack
import pytest
from starlette.types import Message

from counter_service.flet.websockets import (
    Limits,
    TokenBucket,
    WebsocketGuard,
    WebsocketLife,
    current_websocket,
)

REGISTER = b"\x00" + msgpack.packb([1, {"session_id": None, "page_name": "", "page": {}}])
EVENT = b"\x00" + msgpack.packb([3, {"target": 1, "name": "click", "data": None}])
FAST = Limits(register_timeout_s=0.2, send_timeout_s=0.2, grace_s=0.05)


class Counter:
    def __init__(self) -> None:
        self.live = 0
        self.events: list[str] = []

    def connected(self) -> None:
        self.live += 1
        self.events.append("+")

    def disconnected(self) -> None:
        self.live -= 1
        self.events.append("-")


class Client:
    """Feeds `frames` to the server, then leaves (or waits for ever if `stays`)."""

    def __init__(self, *frames: bytes | str, stays: bool = False) -> None:
        self.frames = list(frames)
        self.stays = stays
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        await asyncio.sleep(0)
        if self.frames:
            frame = self.frames.pop(0)
            key = "text" if isinstance(frame, str) else "bytes"
            return {"type": "websocket.receive", key: frame}
        if self.stays:
            await asyncio.Event().wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def close_codes(self) -> list[int]:
        return [m.get("code", 1000) for m in self.sent if m["type"] == "websocket.close"]


class FletLike:
    """Accepts, then reads like Flet: stops at a disconnect, and then (like Flet before
    a register went through) never returns."""

    def __init__(self, hang_after_disconnect: bool = True) -> None:
        self.received: list[Message] = []
        self.hang = hang_after_disconnect
        self.live_when_reading: list[int] = []
        self.cancelled = False

    async def __call__(self, _scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            self.received.append(message)
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise


async def run(client: Client, app: Any, counter: Counter, limits: Limits = FAST) -> WebsocketGuard:
    guard = WebsocketGuard(app, counter, limits)
    await asyncio.wait_for(guard({"type": "websocket"}, client.receive, client.send), 5)
    return guard


async def test_a_client_counts_online_only_once_it_registered() -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    await run(Client(REGISTER, EVENT), app, counter)
    assert counter.events == ["+", "-"]
    assert [m["bytes"] for m in app.received] == [REGISTER, EVENT]


async def test_a_client_that_leaves_before_registering_is_never_counted() -> None:
    counter, app = Counter(), FletLike()
    await run(Client(), app, counter)
    assert counter.events == []
    assert app.cancelled  # at once: there is no session to wait for


GARBAGE = [
    b"\xff\x00\x01random",
    b"\x00" + b"\xc1",  # never-used msgpack byte
    b"\x00" + msgpack.packb({"not": "a list"}),
    b"\x00" + msgpack.packb([99, {}]),
    b"\x00" + msgpack.packb([3, {"target": 1}]),  # a body Flet cannot build
    b"\x00" + msgpack.packb([3, {"target": 1, "name": "click", "data": None}]),  # before register
    b"\x01\x00\x00\x00\x00data",  # a data-channel frame before register
    "a text frame",
]


@pytest.mark.parametrize("frame", GARBAGE)
async def test_garbage_before_register_closes_the_connection_and_ends_the_handler(
    frame: bytes | str,
) -> None:
    counter, app, client = Counter(), FletLike(), Client(frame, stays=True)
    guard = await run(client, app, counter)
    assert counter.events == []
    assert client.close_codes == [1003]
    assert app.received == []  # Flet never saw it
    assert guard.stats.rejected == {"bad frame": 1}


async def test_garbage_after_register_ends_the_session_cleanly() -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, b"\x00\xc1", EVENT, stays=True)
    await run(client, app, counter)
    assert counter.events == ["+", "-"]
    assert client.close_codes == [1003]
    assert [m["bytes"] for m in app.received] == [REGISTER]


async def test_a_second_register_is_refused() -> None:
    counter, client = Counter(), Client(REGISTER, REGISTER, stays=True)
    await run(client, FletLike(hang_after_disconnect=False), counter)
    assert client.close_codes == [1003]


async def test_an_oversized_frame_is_refused_with_1009() -> None:
    counter = Counter()
    client = Client(REGISTER, b"\x00" + b"x" * 2000, stays=True)
    limits = Limits(max_frame_bytes=1000, grace_s=0.05)
    await run(client, FletLike(hang_after_disconnect=False), counter, limits)
    assert client.close_codes == [1009]


async def test_a_client_that_never_registers_is_closed_after_the_timeout() -> None:
    counter, app, client = Counter(), FletLike(), Client(stays=True)
    guard = await run(client, app, counter)  # returns: the handler was ended
    assert client.close_codes == [1008]
    assert counter.events == []
    assert guard.stats.rejected == {"never registered": 1}


async def test_events_over_the_rate_are_dropped_and_the_page_is_told() -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    told: list[bool] = []

    async def app_with_page(scope: Any, receive: Any, send: Any) -> None:
        life = current_websocket()
        assert life is not None
        life.on_throttled(lambda: told.append(True))
        await app(scope, receive, send)

    limits = Limits(events_per_s=0.001, event_burst=5, grace_s=0.05)
    guard = await run(Client(REGISTER, *[EVENT] * 50), app_with_page, counter, limits)
    assert len(app.received) == 1 + 5  # the register and the burst
    assert guard.stats.throttled_events == 45
    assert told == [True]  # at most once a second
    assert counter.events == ["+", "-"]


def test_the_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 1.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 100.0
    assert sum(bucket.take() for _ in range(10)) == 3  # never more than the burst


async def test_a_client_that_stops_reading_is_dropped() -> None:
    counter = Counter()

    class Stalled(Client):
        async def send(self, message: Message) -> None:
            if message["type"] == "websocket.send":
                await asyncio.Event().wait()  # the client's buffers are full
            await super().send(message)

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "bytes": b"patch"})

    guard = await run(Stalled(REGISTER, stays=True), app, counter)
    assert guard.stats.rejected == {"not reading": 1}
    assert counter.events == ["+", "-"]


async def test_a_registered_handler_still_running_after_the_client_left_is_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter, app = Counter(), FletLike()
    await run(Client(REGISTER), app, counter)
    assert app.cancelled
    assert counter.events == ["+", "-"]
    assert any("still running" in r.getMessage() for r in caplog.records)


async def test_refusals_are_one_warning_line_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(20):
        await run(Client(b"\xff", stays=True), FletLike(), Counter())
    refusals = [r for r in caplog.records if "closed a websocket" in r.getMessage()]
    assert len(refusals) <= 1
    assert all(r.exc_info is None for r in refusals)


async def test_http_requests_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.append(scope["type"])

    await WebsocketGuard(app, Counter())({"type": "http"}, Client().receive, Client().send)
    assert seen == ["http"]


async def test_close_callbacks_run_after_the_handling_and_see_the_context() -> None:
    counter = Counter()
    seen: list[str] = []

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

        async def page_main() -> None:  # Flet runs main() in a task of its own
            life = current_websocket()
            assert life is not None

            async def closed() -> None:
                seen.append(f"closed, live={counter.live}")

            await life.on_close(closed)

        await asyncio.create_task(page_main())
        while (await receive())["type"] != "websocket.disconnect":
            pass

    await run(Client(REGISTER), app, counter)
    assert seen == ["closed, live=0"]
    assert current_websocket() is None


async def test_a_callback_registered_after_the_close_runs_at_once() -> None:
    life = WebsocketLife()
    await life.close()
    ran: list[bool] = []

    async def callback() -> None:
        ran.append(True)

    await life.on_close(callback)
    assert ran == [True]


async def test_handler_errors_after_the_client_left_are_not_raised() -> None:
    async def app(_scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        raise ConnectionError("sending to a closed socket")

    counter = Counter()
    await run(Client(REGISTER), app, counter)
    assert counter.events == ["+", "-"]


async def test_handler_errors_while_the_client_is_there_are_raised() -> None:
    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await run(Client(REGISTER, stays=True), app, Counter())


async def test_a_flood_far_over_the_rate_is_disconnected() -> None:
    counter = Counter()
    app = FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, *[EVENT] * 500, stays=True)
    guard = await run(client, app, counter, Limits(events_per_s=5, event_burst=10, grace_s=0.05))
    assert guard.stats.rejected == {"flooding": 1}
    assert client.close_codes == [1008]
    assert len(app.received) == 1 + 10  # the register and the burst; nothing after
    assert guard.stats.throttled_events == 101  # the flood limit (at least 100), then out
    assert counter.events == ["+", "-"]


def test_events_are_recognised_without_decoding() -> None:
    from counter_service.flet.frames import looks_like_event

    assert looks_like_event({"bytes": EVENT})
    assert not looks_like_event({"bytes": REGISTER})
    assert not looks_like_event({"text": "x"})
