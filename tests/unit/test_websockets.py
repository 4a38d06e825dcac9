"""The websocket guard with scripted clients and apps: what counts as online, what is
refused, what is throttled, and that every handling ends."""

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from flet.controls.context import _context_page
from flet.messaging.session import Session
from flet.pubsub.pubsub_hub import PubSubHub
from flet_web.fastapi import app_manager
from flet_web.fastapi.flet_app import FletApp
from starlette.types import Message

from counter_service.flet import internals
from counter_service.flet.websockets import (
    SEND_BURST_FACTOR,
    YIELD_EVERY_FRAMES,
    Limits,
    TokenBucket,
    WebsocketGuard,
    WebsocketLife,
    current_websocket,
)
from tests.support import eventually

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
    b"",  # an empty frame before register: Flet would skip it, and wait on
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


# At most 100 frames, the register message included, then none.
FLOODABLE = Limits(events_per_s=5, event_burst=10, max_frames_per_s=0.001, frame_burst=100)
FLOODABLE = dataclasses.replace(FLOODABLE, grace_s=0.05)


class Backlog(Client):
    """A client whose frames all arrived at once: as with uvicorn's queue, taking the
    next one does not yield to the event loop."""

    async def receive(self) -> Message:
        if self.frames:
            return {"type": "websocket.receive", "bytes": self.frames.pop(0)}
        return await super().receive()


async def test_a_backlog_of_frames_lets_other_connections_in_as_it_is_judged() -> None:
    client = Backlog(REGISTER, *[EVENT] * 320)  # all but the first event throttled: dropped
    pending: list[int] = []  # frames the client still had, at each turn of another task
    judging = True

    async def another_connection() -> None:
        while judging:
            pending.append(len(client.frames))
            await asyncio.sleep(0)

    other = asyncio.ensure_future(another_connection())
    limits = Limits(events_per_s=0.001, event_burst=1, grace_s=0.05)
    guard = await run(client, FletLike(hang_after_disconnect=False), Counter(), limits)
    judging = False
    await other
    assert guard.stats.throttled_events == 319
    judged_between_turns = [a - b for a, b in itertools.pairwise(pending)]
    assert max(judged_between_turns) <= YIELD_EVERY_FRAMES <= 64


async def test_a_flood_far_over_the_rate_is_disconnected() -> None:
    counter = Counter()
    app = FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, *[EVENT] * 500, stays=True)
    guard = await run(client, app, counter, FLOODABLE)
    assert guard.stats.rejected == {"flooding": 1}
    assert client.close_codes == [1008]
    assert len(app.received) == 1 + 10  # the register and the burst; nothing after
    assert guard.stats.throttled_events == 89  # the rest of the first 100 frames, then out
    assert counter.events == ["+", "-"]


async def test_every_frame_counts_towards_the_flood_limit_from_the_first_one() -> None:
    app = FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, *[PROPS] * 5, stays=True)
    limits = dataclasses.replace(FLOODABLE, frame_burst=3)
    guard = await run(client, app, Counter(), limits)
    assert guard.stats.rejected == {"flooding": 1}
    assert [m["bytes"] for m in app.received] == [REGISTER, PROPS, PROPS]


async def test_frames_under_the_frame_rate_are_never_called_a_flood() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100.0, burst=10, clock=lambda: now[0])
    for _ in range(1000):  # 100 frames a second for 10 s
        now[0] += 0.01
        assert bucket.take()


# Events by their decoded action, whatever their encoding

CLICK = msgpack.packb({"target": 1, "name": "click", "data": None})
ENCODED_EVENTS = {
    "fixarray": b"\x00\x92\x03" + CLICK,
    "array16": b"\x00\xdc\x00\x02\x03" + CLICK,
    "uint8 action": b"\x00\x92\xcc\x03" + CLICK,
    "int64 action": b"\x00\x92\xd3" + (3).to_bytes(8, "big") + CLICK,
}


@pytest.mark.parametrize("encoding", list(ENCODED_EVENTS))
async def test_events_are_throttled_however_they_are_encoded(encoding: str) -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    limits = Limits(events_per_s=0.001, event_burst=5, grace_s=0.05)
    guard = await run(Client(REGISTER, *[ENCODED_EVENTS[encoding]] * 50), app, counter, limits)
    assert len(app.received) == 1 + 5  # the register and the burst
    assert guard.stats.throttled_events == 45


PROPS = b"\x00" + msgpack.packb([4, {"id": 1, "props": {"route": "/typed"}}])
RESULT = b"\x00" + msgpack.packb(
    [5, {"control_id": 1, "call_id": "c", "result": None, "error": None}]
)
DATA_FRAME = b"\x01\x00\x00\x00\x00bytes"


@pytest.mark.parametrize("other", [PROPS, RESULT, DATA_FRAME])
async def test_frames_that_are_not_events_pass_below_the_flood_limit(other: bytes) -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    limits = Limits(events_per_s=0.001, event_burst=1, grace_s=0.05)
    guard = await run(Client(REGISTER, *[other] * 90), app, counter, limits)
    assert len(app.received) == 1 + 90  # never throttled: the page would go out of step
    assert guard.stats.throttled_events == 0
    assert guard.stats.rejected == {}


SCROLL = b"\x00" + msgpack.packb(
    [3, {"target": 1, "name": "scroll", "data": {"event_type": "update", "pixels": 1.0}}]
)
HOVER = b"\x00" + msgpack.packb([3, {"target": 1, "name": "hover", "data": True}])


@pytest.mark.parametrize("other", [PROPS, RESULT, DATA_FRAME, SCROLL, HOVER, b""])
async def test_a_flood_of_any_kind_of_frame_is_disconnected(other: bytes) -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, *[other] * 500, stays=True)
    guard = await run(client, app, counter, FLOODABLE)
    assert guard.stats.rejected == {"flooding": 1}
    assert client.close_codes == [1008]
    assert len(app.received) == 100  # the register and 99 more: the flood limit
    assert counter.events == ["+", "-"]


async def test_events_and_other_frames_count_together_towards_the_flood_limit() -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, *[EVENT, PROPS] * 60, stays=True)
    guard = await run(client, app, counter, dataclasses.replace(FLOODABLE, frame_burst=101))
    assert guard.stats.rejected == {"flooding": 1}
    assert len(app.received) == 1 + 10 + 50  # the burst of events, every prop update


@pytest.mark.parametrize("streamed", [SCROLL, HOVER])
async def test_continuous_events_pass_unthrottled_while_clicks_are_still_throttled(
    streamed: bytes,
) -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    limits = Limits(events_per_s=0.001, event_burst=5, grace_s=0.05)
    frames = [streamed] * 80 + [EVENT] * 20 + [streamed] * 80
    guard = await run(Client(REGISTER, *frames), app, counter, limits)
    assert [m["bytes"] for m in app.received] == [
        REGISTER,
        *[streamed] * 80,
        *[EVENT] * 5,
        *[streamed] * 80,
    ]
    assert guard.stats.throttled_events == 15
    assert guard.stats.rejected == {}


MALFORMED = {
    "event target a list": [3, {"target": [1], "name": "click", "data": None}],
    "props a number": [4, {"id": 1, "props": 5}],
    "props id a list": [4, {"id": [1], "props": {"route": "/"}}],
    "method result control_id a list": [
        5,
        {"control_id": [1], "call_id": "c", "result": None, "error": None},
    ],
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_body_flet_cannot_use_closes_1003_before_flet_sees_it(case: str) -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)
    client = Client(REGISTER, b"\x00" + msgpack.packb(MALFORMED[case]), EVENT, stays=True)
    guard = await run(client, app, counter)
    assert client.close_codes == [1003]
    assert [m["bytes"] for m in app.received] == [REGISTER]
    assert guard.stats.rejected == {"bad frame": 1}
    assert counter.events == ["+", "-"]


async def test_a_frame_uvicorn_refused_as_too_big_is_counted() -> None:
    counter, app = Counter(), FletLike(hang_after_disconnect=False)

    class TooBig(Client):
        async def receive(self) -> Message:
            if not self.frames:
                return {"type": "websocket.disconnect", "code": 1009}
            return await super().receive()

    client = TooBig(REGISTER)
    guard = await run(client, app, counter)
    assert guard.stats.rejected == {"bad frame": 1}
    assert client.close_codes == []  # uvicorn closed it already


# What the guard holds open


class Fed(Client):
    """A client whose frames the test feeds one by one (`feed`); None makes it leave."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def feed(self, frame: bytes | None) -> None:
        self.queue.put_nowait(frame)

    async def receive(self) -> Message:
        frame = await self.queue.get()
        if frame is None:
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "bytes": frame}


async def test_open_websockets_are_counted_by_state_until_their_handling_ends() -> None:
    client = Fed()
    guard = WebsocketGuard(FletLike(hang_after_disconnect=False), Counter(), Limits(grace_s=0.05))
    handling = asyncio.ensure_future(guard({"type": "websocket"}, client.receive, client.send))
    await eventually(lambda: guard.stats.open["unregistered"] == 1, what="open, unregistered")
    assert guard.stats.open == {"registered": 0, "unregistered": 1}
    client.feed(REGISTER)
    await eventually(lambda: guard.stats.open["registered"] == 1, what="registered")
    assert guard.stats.open == {"registered": 1, "unregistered": 0}
    client.feed(None)
    await asyncio.wait_for(handling, 5)
    assert guard.stats.open == {"registered": 0, "unregistered": 0}


# With Flet's own session and send queue behind the guard


class FletSessionLike:
    """Reads like Flet's handler, with Flet's own parts: the register message makes a
    real `Session`, held by Flet's session manager and set as the handler's page
    context; a FletApp's send queue is made right after the accept; a disconnect
    marks the session disconnected with a timeout, as Flet does."""

    def __init__(self, on_frame: Any = None) -> None:
        self.flet_app: Any = object.__new__(FletApp)
        self.session: Session | None = None
        self.key = f"test-{id(self)}"
        self.received: list[Message] = []
        self.on_frame = on_frame

    async def __call__(self, _scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        self.flet_app._FletApp__send_queue = asyncio.Queue()
        while (message := await receive())["type"] != "websocket.disconnect":
            self.received.append(message)
            if self.session is None:
                await self._register()
            elif self.on_frame is not None:
                self.on_frame(self)
        await app_manager.disconnect_session(self.key, 60)

    async def _register(self) -> None:
        connection = SimpleNamespace(
            pubsubhub=PubSubHub(loop=asyncio.get_running_loop(), executor=None),
            dispose=lambda: None,
        )
        self.session = Session(connection)  # type: ignore[arg-type]  # what Session reads of it
        await app_manager.add_session(self.key, self.session)
        _context_page.set(self.session.page)

    def held(self) -> bool:
        return self.key in app_manager._FletAppManager__sessions  # type: ignore[attr-defined]  # Flet's table

    def forget(self) -> None:
        app_manager._FletAppManager__sessions.pop(self.key, None)  # type: ignore[attr-defined]  # test cleanup


@pytest.fixture
def flet_app() -> Iterator[FletSessionLike]:
    app = FletSessionLike()
    yield app
    app.forget()


async def test_a_refused_client_has_its_session_ended_at_once(flet_app: FletSessionLike) -> None:
    client = Client(REGISTER, b"\x00\xc1", stays=True)
    await run(client, flet_app, Counter())
    assert client.close_codes == [1003]
    assert flet_app.session is not None
    assert not flet_app.held()  # no reconnect can re-attach to it
    assert internals.session_evicted(flet_app.session.page)  # so the bridge forgets it


async def test_a_client_that_just_left_keeps_its_session_for_a_reconnect(
    flet_app: FletSessionLike,
) -> None:
    await run(Client(REGISTER, EVENT), flet_app, Counter())
    assert flet_app.held()
    assert flet_app.session is not None
    assert not internals.session_evicted(flet_app.session.page)


async def test_a_client_whose_send_queue_overflows_is_dropped_and_its_queue_discarded(
    flet_app: FletSessionLike,
) -> None:
    def send_a_lot(app: FletSessionLike) -> None:
        # Nothing reads the queue (this client reads nothing): over what may wait at once.
        for _ in range(SEND_BURST_FACTOR * 5 + 1):
            app.flet_app.send_data_channel_frame(0, b"x" * 400)

    flet_app.on_frame = send_a_lot
    client = Client(REGISTER, PROPS, stays=True)
    limits = Limits(max_send_queue_bytes=2000, grace_s=30)  # the handler must not need it
    guard = await run(client, flet_app, Counter(), limits)
    assert guard.stats.rejected == {"not reading": 1}
    assert client.close_codes == [1008]
    queue = flet_app.flet_app._FletApp__send_queue
    assert isinstance(queue, internals.SendQueue)
    assert queue.queued_bytes == 0
    assert queue.get_nowait() is None  # only the end of the send loop is left
    assert not flet_app.held()


async def test_props_flet_cannot_apply_close_1003_without_a_traceback(
    flet_app: FletSessionLike, caplog: pytest.LogCaptureFixture
) -> None:
    def apply(app: FletSessionLike) -> None:
        assert app.session is not None
        app.session.apply_patch(app.session.page._i, {"theme_mode": "no such mode"})

    flet_app.on_frame = apply
    client = Client(REGISTER, PROPS, EVENT, stays=True)
    guard = await run(client, flet_app, Counter())
    assert client.close_codes == [1003]
    assert guard.stats.rejected == {"bad frame": 1}
    assert len(flet_app.received) == 2  # the register and the props; nothing after
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_method_result_for_a_control_the_session_lacks_is_dropped(
    flet_app: FletSessionLike,
) -> None:
    unknown = b"\x00" + msgpack.packb(
        [5, {"control_id": 999_999, "call_id": "c", "result": None, "error": None}]
    )
    client = Client(REGISTER, unknown, RESULT)
    guard = await run(client, flet_app, Counter())
    assert [m["bytes"] for m in flet_app.received] == [REGISTER, RESULT]  # 1 is the page
    assert guard.stats.rejected == {}


async def test_a_client_refused_while_its_handler_waits_for_it_is_ended_at_once(
    flet_app: FletSessionLike,
) -> None:
    def overflow_later(app: FletSessionLike) -> None:
        # Another session's update, say: it runs while the handler waits for the client.
        def send_a_lot() -> None:
            for _ in range(SEND_BURST_FACTOR * 5 + 1):
                app.flet_app.send_data_channel_frame(0, b"x" * 400)

        asyncio.get_running_loop().call_later(0.05, send_a_lot)

    flet_app.on_frame = overflow_later
    client = Client(REGISTER, PROPS, stays=True)  # then silent
    limits = Limits(max_send_queue_bytes=2000, grace_s=30)  # run() gives up after 5 s
    guard = await run(client, flet_app, Counter(), limits)
    assert guard.stats.rejected == {"not reading": 1}
    assert not flet_app.held()


async def test_a_client_that_leaves_more_than_may_wait_unread_for_long_is_dropped(
    flet_app: FletSessionLike,
) -> None:
    def send_some(app: FletSessionLike) -> None:
        for _ in range(4):  # over what may wait for long, far below what may wait at once
            app.flet_app.send_data_channel_frame(0, b"x" * 400)

    flet_app.on_frame = send_some
    client = Client(REGISTER, PROPS, stays=True)  # and reads nothing of it
    # Nothing is ever sent to it (no send loop here): only the queue's bound can drop it.
    limits = Limits(max_send_queue_bytes=1000, send_timeout_s=0.2, grace_s=30)
    guard = await run(client, flet_app, Counter(), limits)
    assert guard.stats.rejected == {"not reading": 1}
    assert client.close_codes == [1008]
    assert not flet_app.held()


async def test_a_burst_over_the_send_queue_bound_that_is_read_in_time_is_not_dropped(
    flet_app: FletSessionLike,
) -> None:
    def burst(app: FletSessionLike) -> None:
        for _ in range(SEND_BURST_FACTOR):  # far over what may wait for long
            app.flet_app.send_data_channel_frame(0, b"x" * 400)

    flet_app.on_frame = burst
    client = Fed()
    limits = Limits(max_send_queue_bytes=1000, send_timeout_s=0.2, grace_s=30)
    guard = WebsocketGuard(flet_app, Counter(), limits)
    handling = asyncio.ensure_future(guard({"type": "websocket"}, client.receive, client.send))
    client.feed(REGISTER)
    client.feed(PROPS)
    await eventually(lambda: len(flet_app.received) == 2, what="the burst queued")
    (connection,) = guard._connections
    queue = flet_app.flet_app._FletApp__send_queue
    while queue.qsize():
        queue.get_nowait()  # the client read it all, in time
    connection.check_send(time.monotonic() + 3600)  # however long the watchdog looks later
    client.feed(None)
    await asyncio.wait_for(handling, 5)
    assert guard.stats.rejected == {}
    assert client.close_codes == []


# A reconnect that overtakes its old connection's end


def register_for(session_id: str) -> bytes:
    body = {"session_id": session_id, "page_name": "", "page": {}}
    return b"\x00" + msgpack.packb([1, body])


class Reattaching:
    """One guard over two apps: `old` (Flet's parts: it holds a real session) for the
    first websocket, and for every other one an app that notes when its register
    message came through, in `order`."""

    def __init__(self, old: FletSessionLike, limits: Limits) -> None:
        self.old = old
        self.order: list[str] = []
        self.guard = WebsocketGuard(self.route, Counter(), limits)
        self.old_client = Fed()

    async def route(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["name"] == "old":
            await self.old(scope, receive, send)
            self.order.append("old ended")
            return
        await send({"type": "websocket.accept"})
        await receive()
        self.order.append(scope["name"])
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async def start_old(self) -> asyncio.Future[None]:
        client = self.old_client
        handling = asyncio.ensure_future(
            self.guard({"name": "old", "type": "websocket"}, client.receive, client.send)
        )
        client.feed(REGISTER)
        await eventually(
            lambda: bool(self.guard._holders), what="the old connection holds its session"
        )
        return handling

    def reconnect(self, name: str) -> asyncio.Future[None]:
        assert self.old.session is not None
        client = Client(register_for(self.old.session.id))
        return asyncio.ensure_future(
            self.guard({"name": name, "type": "websocket"}, client.receive, client.send)
        )


async def test_a_reconnect_waits_until_the_old_connection_let_go_of_its_session(
    flet_app: FletSessionLike,
) -> None:
    both = Reattaching(flet_app, Limits(reattach_wait_s=30, grace_s=0.05))
    old = await both.start_old()
    new = both.reconnect("reconnect")
    await eventually(lambda: both.guard._reattach_waits == 1, what="the reconnect waits")
    both.old_client.feed(None)  # the old connection ends: Flet detaches the session
    await asyncio.wait_for(asyncio.gather(old, new), 5)
    assert both.order == ["old ended", "reconnect"]
    assert both.guard._holders == {}


async def test_a_reconnect_waits_for_the_old_connections_clean_up_too(
    flet_app: FletSessionLike,
) -> None:
    # Flet's handler raises when its last send hits the closed socket, and then leaves
    # the session attached: the bridge detaches it in a close callback, after the
    # handler ended. A reconnect let in before that would get a new session.
    both = Reattaching(flet_app, Limits(reattach_wait_s=30, grace_s=0.05))
    old = await both.start_old()
    (connection,) = both.guard._connections

    async def detach() -> None:
        await asyncio.sleep(0.05)
        both.order.append("old detached")

    await connection.life.on_close(detach)
    new = both.reconnect("reconnect")
    await eventually(lambda: both.guard._reattach_waits == 1, what="the reconnect waits")
    both.old_client.feed(None)
    await asyncio.wait_for(asyncio.gather(old, new), 5)
    assert both.order == ["old ended", "old detached", "reconnect"]


async def test_reconnects_over_the_bound_do_not_wait(flet_app: FletSessionLike) -> None:
    both = Reattaching(flet_app, Limits(reattach_wait_s=30, max_reattach_waits=2, grace_s=0.05))
    old = await both.start_old()
    waiting = [both.reconnect("first"), both.reconnect("second")]
    await eventually(lambda: both.guard._reattach_waits == 2, what="two reconnects wait")
    over = both.reconnect("third")
    await asyncio.wait_for(over, 5)  # answered while the other two still wait
    both.old_client.feed(None)
    await asyncio.wait_for(asyncio.gather(old, *waiting), 5)
    assert both.order[:2] == ["third", "old ended"]
    assert sorted(both.order[2:]) == ["first", "second"]


async def test_a_reconnect_waits_no_longer_than_the_reattach_wait(
    flet_app: FletSessionLike,
) -> None:
    both = Reattaching(flet_app, Limits(reattach_wait_s=0.05, grace_s=0.05))
    old = await both.start_old()
    await asyncio.wait_for(both.reconnect("reconnect"), 5)  # the old one is still there
    assert both.order == ["reconnect"]
    both.old_client.feed(None)
    await asyncio.wait_for(old, 5)


async def test_event_data_flet_cannot_use_closes_1003_without_a_traceback(
    flet_app: FletSessionLike, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[asyncio.Future[None]] = []

    def dispatch(app: FletSessionLike) -> None:
        assert app.session is not None  # as Flet runs an event: in a task of its own
        event = app.session.dispatch_event(app.session.page._i, "keyboard_event", {"key": 5})
        events.append(asyncio.ensure_future(event))

    flet_app.on_frame = dispatch
    client = Client(REGISTER, PROPS, stays=True)
    guard = await run(client, flet_app, Counter())
    assert client.close_codes == [1003]
    assert guard.stats.rejected == {"bad frame": 1}
    assert not flet_app.held()
    await asyncio.gather(*events)  # the event ended: refused, not raised
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in caplog.records)
