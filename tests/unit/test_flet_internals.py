"""Guard tests for every Flet internal this library leans on (counter_service.flet.internals).
Each fails loudly if a Flet upgrade changes what it relies on."""

import asyncio
import inspect
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import flet as ft
import msgpack
import pytest
from flet.controls import base_control
from flet.controls.base_control import BaseControl
from flet.controls.context import _context_page
from flet.controls.object_patch import ObjectPatch
from flet.messaging.protocol import (
    Message,
    MessageAction,
    PatchControlBody,
    configure_encode_object_for_msgpack,
)
from flet.messaging.session import Session
from flet.pubsub.pubsub_client import PubSubClient
from flet.pubsub.pubsub_hub import PubSubHub
from flet_web.fastapi import app_manager
from flet_web.fastapi.flet_app import FletApp

from counter_service.flet import internals
from counter_service.flet.internals import (
    CrossProcessHub,
    cache_event_types,
    hub_of,
    install_hub,
    send_value,
    session_evicted,
    uninstall_hub,
    value_patch,
)
from tests.support import eventually

ENCODE = configure_encode_object_for_msgpack(BaseControl)


def wire(message: Message) -> bytes:
    """What Flet's FletApp.send_message puts on the websocket."""
    return bytes(msgpack.packb([message.action, message.body], default=ENCODE))


def on_the_wire(text: ft.Text) -> ft.Text:
    wire(Message(MessageAction.PATCH_CONTROL, text))  # first serialisation, as on page.add
    return text


class Connection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_message(self, message: Message) -> None:
        self.sent.append(wire(message))


# 1. The direct value patch


def test_value_patch_is_exactly_flets_own_diff() -> None:
    text = on_the_wire(ft.Text(key="clicks", value="0", size=40))
    text.value = "5"
    patch, added, removed = ObjectPatch.from_diff(text, text, control_cls=BaseControl)
    assert (added, removed) == ([], [])
    flets = PatchControlBody(text._i, patch.to_message())
    ours = {"id": text._i, "patch": value_patch("5")}
    assert wire(Message(MessageAction.PATCH_CONTROL, ours)) == wire(
        Message(MessageAction.PATCH_CONTROL, flets)
    )


def test_a_direct_push_leaves_flet_nothing_to_send() -> None:
    text = on_the_wire(ft.Text(key="clicks", value="0"))
    connection = Connection()
    assert send_value(text, "7", connection)
    assert text.value == "7"
    patch, *_ = ObjectPatch.from_diff(text, text, control_cls=BaseControl)
    assert patch.to_message() == [[0]]  # what update() would send now: nothing
    expected = {"id": text._i, "patch": value_patch("7")}
    assert connection.sent == [wire(Message(MessageAction.PATCH_CONTROL, expected))]


def test_a_connection_whose_send_loop_ended_raises_attribute_error() -> None:
    # send_value relies on this to tell "the socket is gone" from a bug.
    app = object.__new__(FletApp)
    app._FletApp__send_queue = None  # type: ignore[attr-defined]  # as after its send loop
    with pytest.raises(AttributeError):
        app.send_message(Message(MessageAction.PATCH_CONTROL, {"id": 1, "patch": []}))
    text = on_the_wire(ft.Text(key="clicks", value="0"))
    assert not send_value(text, "3", app)
    assert text.value == "3"
    assert "value" in text._dirty  # left for the reconnect's full render


# 2. The event-type cache


def test_flet_still_resolves_event_types_through_the_cached_function() -> None:
    source = inspect.getsource(BaseControl._trigger_event)
    assert "get_event_field_type(self, field_name)" in source


@pytest.mark.parametrize(
    ("control", "field"),
    [(ft.Button(content="x"), "on_click"), (ft.Text("x"), "on_tap"), (ft.Column(), "on_scroll")],
)
def test_cached_event_types_match_flets_own(control: BaseControl, field: str) -> None:
    original = _original_event_type_function()
    cache_event_types()
    cached = base_control.get_event_field_type  # type: ignore[attr-defined]  # patched name
    assert cached is not original
    assert cached(control, field) == original(control, field) is not None


def test_page_events_resolve_to_flets_types_once_cached() -> None:
    original = _original_event_type_function()
    cache_event_types()
    cached = base_control.get_event_field_type  # type: ignore[attr-defined]  # patched name
    fake_page = object.__new__(ft.Page)
    for field in ("on_route_change", "on_connect", "on_disconnect", "on_close"):
        assert cached(fake_page, field) == original(fake_page, field) is not None, field


def test_the_cache_asks_flet_once_per_class_and_event(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(control: Any, field_name: str) -> Any:
        calls.append(field_name)
        return ft.ControlEvent

    monkeypatch.setattr(base_control, "get_event_field_type", counting)
    cache_event_types()
    cache_event_types()  # idempotent: not a cache of a cache
    for _ in range(3):
        base_control.get_event_field_type(ft.Button(content="x"), "on_click")  # type: ignore[attr-defined]  # patched name
    assert calls == ["on_click"]


def _original_event_type_function() -> Any:
    from flet.controls.control_event import get_event_field_type

    return get_event_field_type


# 3. The cross-process hub


class Published:
    def __init__(self) -> None:
        self.calls: list[tuple[str | None, Any, str | None]] = []
        self.closed: list[str] = []

    def __call__(self, topic: str | None, message: Any, exclude: str | None) -> None:
        if message == "refuse":
            raise TypeError("refused")
        self.calls.append((topic, message, exclude))


async def test_flet_sessions_get_the_installed_hub_for_their_main() -> None:
    async def main(page: ft.Page) -> None:
        return None

    published = Published()
    hub = CrossProcessHub(published, asyncio.get_running_loop(), published.closed.append)
    install_hub(main, hub)
    try:
        assert app_manager.get_pubsubhub(main) is hub
    finally:
        uninstall_hub(main)
    assert app_manager.get_pubsubhub(main) is not hub


async def test_page_pubsub_sends_through_the_hub_it_was_given() -> None:
    published = Published()
    hub = CrossProcessHub(published, asyncio.get_running_loop(), published.closed.append)
    client = PubSubClient(hub, "session-a")
    assert hub_of(SimpleNamespace(pubsub=client)) is hub  # type: ignore[arg-type]  # a page as far as hub_of looks
    client.send_all("a")
    client.send_all_on_topic("t", "b")
    client.send_others("c")
    client.send_others_on_topic("t", "d")
    assert published.calls == [
        (None, "a", None),
        ("t", "b", None),
        (None, "c", "session-a"),
        ("t", "d", "session-a"),
    ]


async def test_delivery_uses_flets_own_routing_with_the_exclusion() -> None:
    published = Published()
    hub = CrossProcessHub(published, asyncio.get_running_loop(), published.closed.append)
    got: list[tuple[str, Any]] = []

    def handler_for(session: str) -> Any:
        async def on_topic(topic: str, message: Any) -> None:
            got.append((session, (topic, message)))

        return on_topic

    for session in ("a", "b"):
        hub.subscribe_topic(session, "t", handler_for(session))
    hub.deliver("t", 1, "a")
    hub.deliver("t", 2, None)
    hub.deliver("other", 3, None)
    await eventually(lambda: len(got) == 3, what="three deliveries")
    assert sorted(got) == [("a", ("t", 2)), ("b", ("t", 1)), ("b", ("t", 2))]


async def test_a_send_from_flets_thread_pool_publishes_on_the_loop() -> None:
    published = Published()
    hub = CrossProcessHub(published, asyncio.get_running_loop(), published.closed.append)
    publishing_threads: list[int] = []
    original = published.__call__

    def recording(topic: str | None, message: Any, exclude: str | None) -> None:
        publishing_threads.append(threading.get_ident())
        original(topic, message, exclude)

    hub._publish = recording
    await asyncio.to_thread(hub.send_all, "from a thread")
    with pytest.raises(TypeError, match="refused"):
        await asyncio.to_thread(hub.send_all, "refuse")
    assert publishing_threads == [threading.get_ident()] * 2
    assert published.calls == [(None, "from a thread", None)]


def test_flet_unsubscribes_a_closing_session_from_its_hub() -> None:
    assert "unsubscribe_all()" in inspect.getsource(Session.close)


# 4. Session cleanup


def test_session_evicted_reads_flets_expiry() -> None:
    def page(expires_at: datetime | None) -> Any:
        return SimpleNamespace(session=SimpleNamespace(expires_at=expires_at))

    now = datetime.now(UTC)
    assert not session_evicted(page(None))
    assert not session_evicted(page(now + timedelta(seconds=30)))
    assert session_evicted(page(now - timedelta(seconds=1)))


async def test_an_abandoned_session_is_disconnected_with_flets_timeout() -> None:
    calls: list[int] = []

    class FakeSession:
        expires_at = None
        connection = "old"

        async def disconnect(self, timeout: int) -> None:
            calls.append(timeout)

    page: Any = SimpleNamespace(session=FakeSession())
    await internals.disconnect_if_abandoned(page, "old", 42)
    await internals.disconnect_if_abandoned(page, "another", 42)  # reconnected meanwhile
    assert calls == [42]
    assert list(inspect.signature(Session.disconnect).parameters) == [
        "self",
        "session_timeout_seconds",
    ]


# 5. Reconnects


def test_flet_reattaches_a_session_through_the_session_manager() -> None:
    source = inspect.getsource(FletApp)
    assert "await app_manager.reconnect_session(" in source
    assert list(inspect.signature(app_manager.reconnect_session).parameters)[:2] == [
        "session_id",
        "conn",
    ]


async def test_reconnect_handlers_hear_of_a_reattached_session() -> None:
    session: Any = SimpleNamespace(id="abc", attach_connection=lambda conn: None)
    session.dispatch_connect_event = _no_connect_handler
    heard: list[Any] = []
    stop = internals.on_reconnect(heard.append)
    await app_manager.add_session("page-abc", session)
    try:
        await app_manager.reconnect_session("page-abc", object())
    finally:
        stop()
        app_manager._FletAppManager__sessions.pop("page-abc", None)  # type: ignore[attr-defined]  # test cleanup
    assert heard == [session]


async def _no_connect_handler() -> None:
    return None


# 6. The session table


async def test_session_count_is_the_size_of_flets_session_table() -> None:
    before = internals.session_count()
    await app_manager.add_session("page-counted", SimpleNamespace(id="counted"))
    try:
        assert internals.session_count() == before + 1
    finally:
        app_manager._FletAppManager__sessions.pop("page-counted", None)  # type: ignore[attr-defined]  # test cleanup
    assert internals.session_count() == before


def test_flets_own_variable_overrides_the_configured_session_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLET_SESSION_TIMEOUT", raising=False)
    assert internals.session_timeout(60) == 60
    monkeypatch.setenv("FLET_SESSION_TIMEOUT", "7")
    assert internals.session_timeout(60) == 7
    assert "FLET_SESSION_TIMEOUT" in inspect.getsource(FletApp.__init__)


# 7. Re-attaching


def test_flet_reattaches_only_a_detached_session() -> None:
    source = inspect.getsource(FletApp)
    assert "if candidate is not None and candidate.connection is None:" in source


async def test_the_hub_says_when_a_topic_gets_its_first_and_loses_its_last_subscriber() -> None:
    heard: list[tuple[str, bool]] = []
    published = Published()
    hub = CrossProcessHub(
        published,
        asyncio.get_running_loop(),
        published.closed.append,
        on_topics=lambda topic, wanted: heard.append((topic, wanted)),
    )

    async def handler(topic: str, message: Any) -> None:
        return None

    hub.subscribe_topic("a", "news", handler)
    hub.subscribe_topic("b", "news", handler)
    hub.subscribe_topic("a", "sport", handler)
    hub.unsubscribe_topic("a", "news")
    assert heard == [("news", True), ("sport", True)]
    hub.unsubscribe_all("a")
    hub.unsubscribe_topic("b", "news")
    await asyncio.to_thread(hub.subscribe_topic, "c", "late", handler)  # from Flet's pool
    await eventually(lambda: ("late", True) in heard, what="a subscription from a thread")
    assert heard == [
        ("news", True),
        ("sport", True),
        ("sport", False),
        ("news", False),
        ("late", True),
    ]


# 3b. Plain pubsub handlers, in order per session


async def test_flets_hub_without_an_executor_calls_a_plain_handler_in_place() -> None:
    # CrossProcessHub gives Flet no executor, so that Flet hands each plain call to the
    # session's chain (in place, on the delivering thread) instead of to its pool.
    hub = PubSubHub(loop=asyncio.get_running_loop(), executor=None)
    calls: list[tuple[int, Any]] = []
    hub.subscribe("a", lambda message: calls.append((threading.get_ident(), message)))
    hub.send_all("m")
    assert calls == [(threading.get_ident(), "m")]
    assert "inspect.iscoroutinefunction(handler)" in inspect.getsource(PubSubHub)


class Recorder:
    """A plain handler that takes a while and notes whether calls ever overlapped."""

    def __init__(self, work_s: float = 0.0) -> None:
        self.work_s = work_s
        self.got: list[Any] = []
        self.threads: set[int] = set()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.work_s)  # the handler's work, not synchronisation
        with self.lock:
            self.active -= 1
            self.got.append(args[-1])
            self.threads.add(threading.get_ident())


def new_hub() -> CrossProcessHub:
    published = Published()
    return CrossProcessHub(published, asyncio.get_running_loop(), published.closed.append)


async def test_plain_handlers_of_one_session_run_one_after_another_in_delivery_order() -> None:
    hub = new_hub()
    on_topic, on_all = Recorder(work_s=0.001), Recorder(work_s=0.001)
    hub.subscribe_topic("a", "t", on_topic)
    hub.subscribe("b", on_all)
    for i in range(60):
        hub.deliver("t", i, None)
        hub.deliver(None, i, None)
    await eventually(lambda: len(on_topic.got) == len(on_all.got) == 60, what="every call")
    for recorder in (on_topic, on_all):
        assert recorder.got == list(range(60))
        assert recorder.most_active == 1
        assert threading.get_ident() not in recorder.threads  # Flet's pool, not the loop


async def test_one_sessions_plain_handlers_share_one_order() -> None:
    hub = new_hub()
    got: list[Any] = []

    def on_all(message: Any) -> None:
        time.sleep(0.001)  # the handler's work, not synchronisation
        got.append(("*", message))

    hub.subscribe("a", on_all)
    hub.subscribe_topic("a", "t", lambda topic, message: got.append((topic, message)))
    for i in range(30):
        hub.deliver(None, i, None)
        hub.deliver("t", i, None)
    await eventually(lambda: len(got) == 60, what="every call")
    assert got == [entry for i in range(30) for entry in (("*", i), ("t", i))]


async def test_a_slow_sessions_plain_handler_holds_up_neither_others_nor_the_loop() -> None:
    hub = new_hub()
    released = threading.Event()
    waited: list[bool] = []
    hub.subscribe("slow", lambda message: waited.append(released.wait(10)))
    hub.subscribe("quick", lambda message: released.set())
    hub.deliver(None, "m", None)  # the slow session's handler is called first
    await eventually(lambda: waited == [True], timeout=15, what="the slow one released")


async def test_a_failing_plain_handler_does_not_stop_its_sessions_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = new_hub()
    got: list[Any] = []

    def handler(message: Any) -> None:
        if message == "boom":
            raise RuntimeError("a bug in the app")
        got.append(message)

    hub.subscribe("a", handler)
    for message in ("before", "boom", "after"):
        hub.deliver(None, message, None)
    await eventually(lambda: got == ["before", "after"], what="the call after the failure")
    assert "a pubsub handler failed" in caplog.text


async def test_a_plain_handler_subscribed_twice_is_called_once_per_message() -> None:
    hub = new_hub()
    recorder = Recorder()
    hub.subscribe("a", recorder)
    hub.subscribe("a", recorder)
    hub.deliver(None, "once", None)
    hub.deliver(None, "marker", None)
    await eventually(lambda: "marker" in recorder.got, what="the marker")
    assert recorder.got == ["once", "marker"]


async def test_a_session_that_unsubscribed_leaves_no_chain_once_its_calls_ran() -> None:
    hub = new_hub()
    recorder = Recorder(work_s=0.001)
    hub.subscribe_topic("a", "t", recorder)
    for i in range(5):
        hub.deliver("t", i, None)
    hub.unsubscribe_all("a")
    await eventually(lambda: len(recorder.got) == 5, what="calls already delivered")
    await eventually(lambda: "a" not in hub._chains, what="the chain freed")


# 8. What the websocket guard needs of a Flet connection


def hooks(max_send_bytes: int = 1000) -> tuple[internals.ConnectionHooks, list[Any]]:
    heard: list[Any] = []
    made = internals.ConnectionHooks(
        max_send_bytes,
        on_send_overflow=lambda frames, size: heard.append(("overflow", frames, size)),
        on_bad_patch=lambda error: heard.append(("bad patch", type(error))),
    )
    return made, heard


def test_fletapp_makes_its_send_queue_after_the_accept_and_uses_it_for_every_frame() -> None:
    handle = inspect.getsource(FletApp.handle)
    assert handle.index("await self.__websocket.accept()") < handle.index(
        "self.__send_queue = asyncio.Queue()"
    )
    assert "self.__send_queue.put_nowait(" in inspect.getsource(FletApp.send_message)
    assert "self.__send_queue.put_nowait(" in inspect.getsource(FletApp.send_data_channel_frame)
    loop = inspect.getsource(FletApp._FletApp__send_loop)  # type: ignore[attr-defined]  # private
    assert "await self.__send_queue.get()" in loop
    assert "if message is None:" in loop


async def test_a_send_queue_fletapp_makes_under_the_guard_is_bounded() -> None:
    made, heard = hooks(max_send_bytes=3 * (100 + internals.FRAME_COST))
    app: Any = object.__new__(FletApp)
    with internals.guard_connection(made):
        app._FletApp__send_queue = asyncio.Queue()  # as FletApp.handle does
    queue = app._FletApp__send_queue
    assert isinstance(queue, internals.SendQueue)
    assert made.send_queue is queue
    for _ in range(3):
        app.send_data_channel_frame(1, b"x" * 95)  # 100 bytes with its header
    assert heard == []
    assert queue.qsize() == 3
    app.send_data_channel_frame(1, b"x" * 95)
    assert heard == [("overflow", 4, 4 * (100 + internals.FRAME_COST))]
    app.send_message(Message(MessageAction.PATCH_CONTROL, {"id": 1, "patch": []}))
    assert queue.qsize() == 0  # discarded
    assert heard[1:] == []  # and told once
    made.end_sends()
    assert queue.get_nowait() is None  # the end of Flet's send loop still goes through


def test_a_send_queue_made_outside_the_guard_is_flets_own() -> None:
    app: Any = object.__new__(FletApp)
    app._FletApp__send_queue = asyncio.Queue()
    assert type(app._FletApp__send_queue) is asyncio.Queue


def test_a_frame_alone_in_the_send_queue_always_fits() -> None:
    made, heard = hooks(max_send_bytes=10)
    queue = internals.SendQueue(made)
    queue.put_nowait(b"x" * 1000)
    assert heard == []
    assert queue.queued_bytes == 1000 + internals.FRAME_COST
    assert queue.get_nowait() == b"x" * 1000
    assert queue.queued_bytes == 0


def new_session() -> Session:
    hub = PubSubHub(loop=asyncio.get_running_loop(), executor=None)
    return Session(SimpleNamespace(pubsubhub=hub, dispose=lambda: None))  # type: ignore[arg-type]  # what Session reads


async def test_props_flet_cannot_apply_go_to_the_guard_instead_of_raising() -> None:
    session = new_session()
    bogus = {"theme_mode": "no such mode"}
    with pytest.raises(ValueError, match="ThemeMode"):
        session.apply_patch(session.page._i, bogus)  # what Flet's receive loop would get
    made, heard = hooks()
    with internals.guard_connection(made):
        session.apply_patch(session.page._i, bogus)
        session.apply_page_patch(bogus)  # the register message's page goes the same way
    assert heard == [("bad patch", ValueError)] * 2
    source = inspect.getsource(FletApp)
    assert "self.__session.apply_patch(req.id, req.props)" in source
    assert "self.__session.apply_page_patch(req.page)" in source
    assert "self.apply_patch(self.__page._i, patch)" in inspect.getsource(Session.apply_page_patch)


async def test_the_session_of_a_connection_is_found_in_its_handlers_context() -> None:
    session = new_session()
    assert internals.current_session() is None
    _context_page.set(session.page)
    assert internals.current_session() is session
    register = inspect.getsource(FletApp._FletApp__on_message)  # type: ignore[attr-defined]  # private
    assert "_context_page.set(self.__session.page)" in register


async def test_has_control_reads_the_sessions_index() -> None:
    session = new_session()
    assert internals.has_control(session, session.page._i)
    assert not internals.has_control(session, 999_999)
    source = inspect.getsource(Session.handle_invoke_method_results)
    assert "if control_id in self.__index:" in source  # else it raises


@pytest.mark.parametrize("departed", [False, True])
async def test_an_ended_session_is_gone_from_flets_table_at_once(departed: bool) -> None:
    session = new_session()
    closed: list[str] = []
    session.page.on_close = lambda _event: closed.append("closed")
    await app_manager.add_session("page-ended", session)
    try:
        if departed:
            await session.disconnect(3600)  # Flet's own disconnect: kept for an hour
        await internals.end_session(session)
        assert "page-ended" not in app_manager._FletAppManager__sessions  # type: ignore[attr-defined]  # Flet's table
        assert session_evicted(session.page)
        await eventually(lambda: closed == ["closed"], what="the page's on_close")
    finally:
        app_manager._FletAppManager__sessions.pop("page-ended", None)  # type: ignore[attr-defined]  # test cleanup
    assert list(inspect.signature(app_manager.delete_session).parameters) == ["session_id"]


# 7 and 8, after the second audit: re-attaching, lasting send queues, event data


def test_flets_handler_detaches_its_session_once_its_receive_loop_ended() -> None:
    # What the guard's re-attach wait (WebsocketGuard.let_go) waits for: the old
    # connection's handler returning.
    handle = inspect.getsource(FletApp.handle)
    assert handle.index("await self.__receive_loop()") < handle.index(
        "await app_manager.disconnect_session("
    )
    assert "self.__conn = None" in inspect.getsource(Session.disconnect)


def test_a_send_queue_says_since_when_it_holds_more_than_may_wait_for_long() -> None:
    made, heard = hooks(max_send_bytes=10_000)
    made.lasting_send_bytes = 2 * (100 + internals.FRAME_COST)
    queue = internals.SendQueue(made)
    queue.put_nowait(b"x" * 100)
    queue.put_nowait(b"x" * 100)
    assert queue.over_since is None
    before = time.monotonic()
    queue.put_nowait(b"x" * 100)
    assert queue.over_since is not None
    assert queue.over_since >= before
    queue.put_nowait(b"x" * 100)
    assert queue.over_since >= before  # since it first went over, not since the last frame
    queue.get_nowait()
    assert queue.over_since is not None  # still over
    queue.get_nowait()
    assert queue.over_since is None
    assert heard == []  # far below what may wait at once


async def test_control_of_reads_the_sessions_index() -> None:
    session = new_session()
    assert internals.control_of(session, session.page._i) is session.page
    assert internals.control_of(session, 999_999) is None


KEY = {"key": "A", "shift": False, "ctrl": False, "alt": False, "meta": False}


async def test_flet_builds_an_event_object_from_the_clients_data_and_fails_on_bad_data() -> None:
    trigger = inspect.getsource(BaseControl._trigger_event)  # Flet's own, under the guard's
    assert "e = from_dict(event_type, args)" in trigger
    assert '"control": self,' in trigger
    assert "**(event_data or {})," in trigger
    dispatch = inspect.getsource(Session.dispatch_event)
    assert "await control._trigger_event(event_name, event_data)" in dispatch
    assert "exc_info=True" in dispatch  # what the guard spares the log
    page = new_session().page
    with pytest.raises(TypeError, match="missing"):
        await page._trigger_event("keyboard_event", {"key": 5})  # no guard: Flet's behaviour


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("keyboard_event", {"key": 5}),  # shift, ctrl... missing
        ("route_change", {"nosuch": 1}),  # route missing
        ("platform_brightness_change", {"brightness": "no such brightness"}),
        ("keyboard_event", {**KEY, "control": 5}),  # replaces the event's control
    ],
)
async def test_event_data_flet_cannot_use_goes_to_the_guard_without_a_traceback(
    name: str, data: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    session = new_session()
    ran: list[Any] = []
    setattr(session.page, f"on_{name}", ran.append)
    heard: list[tuple[str, type]] = []
    made, _ = hooks()
    made.on_bad_event = lambda event, error: heard.append((event, type(error)))
    with internals.guard_connection(made):
        await session.dispatch_event(session.page._i, name, data)
    assert heard == [(name, TypeError if name != "platform_brightness_change" else ValueError)]
    assert ran == []
    assert all(r.exc_info is None for r in caplog.records)


async def test_event_data_flet_can_use_reaches_the_handler_under_the_guard() -> None:
    session = new_session()
    got: list[Any] = []

    def on_key(event: Any) -> None:
        ft.context.disable_auto_update()  # this session has no connection to update
        got.append((event.key, event.control))

    session.page.on_keyboard_event = on_key
    made, heard = hooks()
    with internals.guard_connection(made):
        await session.dispatch_event(session.page._i, "keyboard_event", KEY)
    assert got == [("A", session.page)]
    assert heard == []
