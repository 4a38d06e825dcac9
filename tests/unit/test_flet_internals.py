"""The direct fan-out leans on Flet internals; these tests fail loudly if an upgrade
changes them (patch format, message body, dirty tracking)."""

import inspect
from types import SimpleNamespace
from typing import Any

import flet as ft
import msgpack
import pytest
from flet.controls import base_control
from flet.controls.base_control import BaseControl
from flet.controls.object_patch import ObjectPatch
from flet.messaging.protocol import (
    Message,
    MessageAction,
    PatchControlBody,
    configure_encode_object_for_msgpack,
)

from counter_service import CounterEvent, CounterUpdate
from counter_service.flet.bridge import Fanout, LiveNumbers, cache_event_types, value_patch

ENCODE = configure_encode_object_for_msgpack(BaseControl)


def wire(message: Message) -> bytes:
    """What Flet's FletApp.send_message puts on the websocket."""
    return msgpack.packb([message.action, message.body], default=ENCODE)


def on_the_wire(text: ft.Text) -> ft.Text:
    wire(Message(MessageAction.PATCH_CONTROL, text))  # first serialisation, as on page.add
    return text


class Connection:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_message(self, message: Message) -> None:
        self.sent.append(wire(message))


def attached(board: LiveNumbers, connection: Connection | None) -> LiveNumbers:
    board.attach(SimpleNamespace(session=SimpleNamespace(connection=connection)))  # type: ignore[arg-type]  # a page as far as the board looks
    return board


def update(value: int, version: int | None = None, reset: bool = False) -> CounterUpdate:
    return CounterUpdate(CounterEvent("clicks", value, version or value), reset)


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
    attached(LiveNumbers({"clicks": text}), connection).show(update(7))
    assert text.value == "7"
    patch, *_ = ObjectPatch.from_diff(text, text, control_cls=BaseControl)
    assert patch.to_message() == [[0]]  # what update() would send now: nothing
    expected = {"id": text._i, "patch": value_patch("7")}
    assert connection.sent == [wire(Message(MessageAction.PATCH_CONTROL, expected))]


def test_only_newer_versions_or_resets_are_sent() -> None:
    text = on_the_wire(ft.Text(key="clicks", value="0"))
    connection = Connection()
    board = attached(LiveNumbers({"clicks": text}), connection)
    for item in (update(3), update(2), update(3), update(4), update(1, reset=True)):
        board.show(item)
    assert len(connection.sent) == 3
    assert text.value == "1"


def test_a_board_off_the_wire_keeps_the_value_for_the_next_render() -> None:
    text = on_the_wire(ft.Text(key="clicks", value="0"))
    board = LiveNumbers({"clicks": text})
    board.show(update(4))
    attached(board, None).show(update(5))  # disconnected session
    assert text.value == "5"


def test_update_mode_goes_through_flets_update() -> None:
    text = ft.Text(key="clicks", value="0")
    calls: list[str] = []
    text.update = lambda: calls.append(text.value)  # type: ignore[method-assign]
    attached(LiveNumbers({"clicks": text}, direct=False), Connection()).show(update(9))
    assert calls == ["9"]


def test_counters_without_a_text_are_ignored() -> None:
    board = attached(LiveNumbers({}), Connection())
    board.show(update(1))


def test_fanout_reaches_every_board_even_past_a_broken_one() -> None:
    class Broken(Connection):
        def send_message(self, message: Message) -> None:
            raise AttributeError("'NoneType' object has no attribute 'put_nowait'")

    fanout = Fanout()
    good: list[Connection] = []
    for connection in (Connection(), Broken(), Connection()):
        text = on_the_wire(ft.Text(key="clicks", value="0"))
        fanout.add(attached(LiveNumbers({"clicks": text}), connection))
        if not isinstance(connection, Broken):
            good.append(connection)
    fanout.deliver([update(1)])
    assert [len(c.sent) for c in good] == [1, 1]


@pytest.mark.parametrize("name", ["views", "online"])
def test_each_counter_patches_its_own_text(name: str) -> None:
    texts: dict[str, Any] = {n: on_the_wire(ft.Text(key=n, value="0")) for n in ("views", "online")}
    connection = Connection()
    attached(LiveNumbers(texts), connection).show(CounterUpdate(CounterEvent(name, 3, 1)))
    assert texts[name].value == "3"
    assert [t.value for n, t in texts.items() if n != name] == ["0"]


def test_flet_still_resolves_event_types_through_the_cached_function() -> None:
    source = inspect.getsource(BaseControl._trigger_event)
    assert "get_event_field_type(self, field_name)" in source


@pytest.mark.parametrize(
    ("control", "field"),
    [
        (ft.Button(content="x"), "on_click"),
        (ft.Text("x"), "on_tap"),
        (ft.Column(), "on_scroll"),
    ],
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
    page_class = ft.Page
    fake_page = object.__new__(page_class)
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
