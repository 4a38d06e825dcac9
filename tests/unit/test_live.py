from types import SimpleNamespace
from typing import Any

import flet as ft
import msgpack
from flet.controls.base_control import BaseControl
from flet.messaging.protocol import Message, configure_encode_object_for_msgpack

from counter_service.events import CounterEvent
from counter_service.flet.live import PLACEHOLDER, Fanout, LiveCounters
from counter_service.versions import CounterUpdate

ENCODE = configure_encode_object_for_msgpack(BaseControl)


class Connection:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_message(self, message: Message) -> None:
        self.sent.append(
            msgpack.unpackb(msgpack.packb([message.action, message.body], default=ENCODE))
        )


def page(connection: Connection | None) -> Any:
    return SimpleNamespace(session=SimpleNamespace(connection=connection))


def change(value: int, version: int | None = None, name: str = "clicks") -> CounterUpdate:
    return CounterUpdate.change(CounterEvent(name, value, version or value))


def board(connection: Connection | None, *names: str, direct: bool = True) -> LiveCounters:
    live = LiveCounters(page(connection), direct=direct)
    for name in names or ("clicks",):
        live.bind(name, ft.Text(key=name))
    return live


def test_a_text_shows_the_placeholder_until_the_value_is_known() -> None:
    text = ft.Text(key="clicks")
    live = LiveCounters(page(Connection()))
    live.bind("clicks", text)
    assert text.value == PLACEHOLDER
    assert live.value("clicks") is None
    live.show(change(4))
    assert (text.value, live.value("clicks")) == ("4", 4)


def test_only_newer_versions_or_truths_are_sent() -> None:
    connection = Connection()
    live = board(connection)
    for item in (change(3), change(2), change(3), change(4)):
        live.show(item)
    live.show(CounterUpdate.truth(CounterEvent("clicks", 1, 1)))
    assert [m[1]["patch"][1][3] for m in connection.sent] == ["3", "4", "1"]


def test_a_broken_counter_shows_the_placeholder_and_tells_the_page() -> None:
    connection = Connection()
    live = board(connection)
    seen: list[CounterUpdate] = []
    live.on_change = seen.append
    live.show(change(5))
    broken = CounterUpdate.broken("clicks", "holds a list")
    live.show(broken)
    assert live.value("clicks") is None
    assert connection.sent[-1][1]["patch"][1][3] == PLACEHOLDER
    assert seen[-1] == broken


def test_a_page_away_keeps_the_value_for_its_reconnect() -> None:
    text = ft.Text(key="clicks")
    live = LiveCounters(page(None))
    live.bind("clicks", text)
    live.show(change(5))
    assert text.value == "5"


def test_update_mode_goes_through_flets_update() -> None:
    text = ft.Text(key="clicks")
    calls: list[str | None] = []
    text.update = lambda: calls.append(text.value)  # type: ignore[method-assign]
    live = LiveCounters(page(Connection()), direct=False)
    live.bind("clicks", text)
    live.show(change(9))
    assert calls == ["9"]


def test_update_mode_tolerates_a_text_not_on_the_page_yet() -> None:
    text = ft.Text(key="clicks")
    live = LiveCounters(page(Connection()), direct=False)
    live.bind("clicks", text)
    live.show(change(8))
    assert text.value == "8"


def test_update_mode_tolerates_a_socket_that_just_closed() -> None:
    text = ft.Text(key="clicks")

    def gone() -> None:  # what Flet's send_message raises once its send loop ended
        raise AttributeError("'NoneType' object has no attribute 'put_nowait'")

    text.update = gone  # type: ignore[method-assign]
    live = LiveCounters(page(Connection()), direct=False)
    live.bind("clicks", text)
    live.show(change(7))
    assert text.value == "7"


def test_counters_without_a_text_are_ignored() -> None:
    connection = Connection()
    board(connection, "views").show(change(1))
    assert connection.sent == []


class Watching:
    def __init__(self) -> None:
        self.events: list[str] = []

    def watch(self, name: str) -> None:
        self.events.append(f"+{name}")

    def unwatch(self, name: str) -> None:
        self.events.append(f"-{name}")


def test_fanout_reaches_only_pages_that_show_the_counter() -> None:
    watching = Watching()
    fanout = Fanout(watching.watch, watching.unwatch)
    connections = [Connection() for _ in range(3)]
    boards = [
        board(connections[0], "clicks"),
        board(connections[1], "views"),
        board(connections[2], "clicks", "views"),
    ]
    for live in boards:
        for name in live.names:
            fanout.add(live, name)
    fanout.deliver([change(1), change(7, name="views")])
    assert [len(c.sent) for c in connections] == [1, 1, 2]
    assert len(fanout) == 3
    assert watching.events == ["+clicks", "+views"]


def test_the_last_page_to_leave_unwatches_its_counters() -> None:
    watching = Watching()
    fanout = Fanout(watching.watch, watching.unwatch)
    first, second = board(Connection(), "clicks", "views"), board(Connection(), "clicks")
    for live in (first, second):
        for name in live.names:
            fanout.add(live, name)
    fanout.remove(first)
    assert watching.events == ["+clicks", "+views", "-views"]
    fanout.remove(second)
    fanout.remove(second)  # idempotent
    assert watching.events[-1] == "-clicks"
    assert len(fanout) == 0
