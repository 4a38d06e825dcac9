"""What a client may send on Flet's websocket, checked before Flet sees it.

Flet 1.0.5 stops reading a websocket for good when a frame does not parse or has an
unknown shape; before the register message nothing then ever notices that the client
left, and after it each such frame logs a traceback (or, for an event, an asyncio
"Task exception was never retrieved"). So every frame is decoded here as Flet decodes
it (msgpack, Flet's extension types) and classified by its decoded action, never by
its bytes; its body must have the fields Flet's protocol dataclass for that action
declares, each of the type Flet uses it as. A frame that fails closes the connection
with one warning line (counter_service.flet.websockets). Before the register message a
client has nothing else to send, so anything else, an empty frame included, fails.

Control events are told apart as continuous (`continuous`: what a device streams while
one gesture lasts, such as scrolling, pointer moves, drags, a slider's value, typing)
or discrete (a click, a submit, a toggle), for the guard's rate limits.

Flet's dataclasses, their fields, the `MessageAction` values and the event names this
relies on are pinned by tests/unit/test_flet_frames.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, fields
from types import NoneType, UnionType
from typing import Any, NamedTuple, Union, get_args, get_origin, get_type_hints

import flet as ft
import msgpack
from flet.messaging.protocol import (
    ControlEventBody,
    InvokeMethodResponseBody,
    MessageAction,
    RegisterClientRequestBody,
    UpdateControlPropsBody,
    decode_ext_from_msgpack,
)

PROTOCOL_FRAME = 0x00
DATA_CHANNEL_FRAME = 0x01
REGISTER = MessageAction.REGISTER_CLIENT.value
EVENT = MessageAction.CONTROL_EVENT.value
PROPS = MessageAction.UPDATE_CONTROL_PROPS.value
METHOD_RESULT = MessageAction.INVOKE_METHOD.value
DATA = -1
"""The action reported for a data-channel frame."""

CLIENT_BODIES: dict[int, type] = {
    REGISTER: RegisterClientRequestBody,
    EVENT: ControlEventBody,
    PROPS: UpdateControlPropsBody,
    METHOD_RESULT: InvokeMethodResponseBody,
}
"""The actions a client sends, and the dataclass Flet builds each one's body into."""

AS_USED: dict[tuple[type, str], Any] = {
    # A first visit has no session to resume: browsers send null (Flet tests truthiness).
    (RegisterClientRequestBody, "session_id"): str | None,
    # Annotated Any, but Flet applies it with patch_dataclass, which iterates its items.
    (UpdateControlPropsBody, "props"): dict[str, Any],
    # Null when the method succeeded, as Flet's own docstring and web client have it.
    (InvokeMethodResponseBody, "error"): str | None,
}
"""Fields whose type, as Flet's clients send them and Flet uses them, is not the
annotation of Flet's dataclass."""

Check = Callable[[Any], bool]


def _anything(_value: Any) -> bool:
    return True


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool: True is no control id


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_str_map(value: Any) -> bool:
    return type(value) is dict and all(type(key) is str for key in value)


def _is_none(value: Any) -> bool:
    return value is None


def check_for(annotation: Any) -> Check:
    """How to check a value Flet declares as `annotation`; TypeError for an annotation
    this module does not know (a Flet upgrade changed its protocol: look again)."""
    if annotation is Any:
        return _anything
    if annotation is int:
        return _is_int
    if annotation is str:
        return _is_str
    if annotation is NoneType:
        return _is_none
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict and args[:1] == (str,):
        return _is_str_map
    if origin in (Union, UnionType):
        checks = [check_for(arg) for arg in args]
        return lambda value: any(check(value) for check in checks)
    raise TypeError(f"no check for a field of type {annotation!r}")


class Body(NamedTuple):
    """What Flet accepts as the body of one action: a check per field, and the fields
    it requires (`Body(**body)` fails without them)."""

    checks: dict[str, Check]
    required: frozenset[str]


def _required(field: Field[Any]) -> bool:
    return field.default is MISSING and field.default_factory is MISSING


def body_of(dataclass: type) -> Body:
    """The `Body` of a Flet protocol dataclass, from its fields and their types."""
    hints = get_type_hints(dataclass)
    checks = {
        f.name: check_for(AS_USED.get((dataclass, f.name), hints[f.name]))
        for f in fields(dataclass)
    }
    return Body(checks, frozenset(f.name for f in fields(dataclass) if _required(f)))


_BODIES = {action: body_of(dataclass) for action, dataclass in CLIENT_BODIES.items()}


class Frame(NamedTuple):
    """A frame Flet can take: its action (`DATA` for a data-channel frame) and body."""

    action: int
    body: dict[str, Any] | None = None

    @property
    def session_id(self) -> str | None:
        """The session a register message asks to re-attach to, if any."""
        value = None if self.body is None else self.body.get("session_id")
        return value if isinstance(value, str) and value else None


class BadFrame(ValueError):
    """A frame Flet could not handle; the message says why, shortly."""


class FrameTooLarge(BadFrame):
    """A frame over the size limit."""


def check_frame(message: Mapping[str, Any], registered: bool, max_bytes: int) -> Frame:
    """The action and body of one `websocket.receive` message, or `BadFrame` if Flet
    could not take it (`registered`: the register message went through already)."""
    data = message.get("bytes")
    if data is None:
        raise BadFrame("a text frame (Flet speaks binary frames)")
    if len(data) > max_bytes:
        raise FrameTooLarge(f"a frame of {len(data)} bytes (the limit is {max_bytes})")
    if not data:
        if not registered:
            raise BadFrame("an empty frame before register")
        return Frame(DATA)  # Flet skips empty frames
    if data[0] == DATA_CHANNEL_FRAME and registered:
        return Frame(DATA)
    if data[0] != PROTOCOL_FRAME:
        raise BadFrame(f"a frame of unknown type 0x{data[0]:02x}")
    return _check_message(_decode(data[1:]), registered)


def _decode(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, ext_hook=decode_ext_from_msgpack)
    except Exception as exc:  # msgpack (and Flet's ext hook) raise many unrelated types
        raise BadFrame(f"a frame that is not msgpack ({type(exc).__name__})") from None


def _check_message(decoded: Any, registered: bool) -> Frame:
    if type(decoded) is not list or len(decoded) != 2:
        raise BadFrame("a message that is not [action, body]")
    action, body = decoded
    expected = _BODIES.get(action) if type(action) is int else None
    if expected is None:
        raise BadFrame(f"an unknown action {action!r:.20}")
    _check_body(action, body, expected)
    if (action == REGISTER) == registered:
        raise BadFrame("a second register message" if registered else "a message before register")
    return Frame(action, body)


def _check_body(action: int, body: Any, expected: Body) -> None:
    if type(body) is not dict or not expected.required <= body.keys() <= expected.checks.keys():
        raise BadFrame(f"a body for action {action} that is not {sorted(expected.checks)}")
    for name, value in body.items():
        if not expected.checks[name](value):
            raise BadFrame(f"a body for action {action} whose {name} is a {type(value).__name__}")


CONTINUOUS_EVENTS = frozenset(
    {
        # The pointer moving over, across or along a control.
        "hover",
        "move",
        "tap_move",
        # Scrolling (Flet sends start, update, end and user events for every gesture).
        "scroll",
        # Drags, pans, pinches and swipes, while they last.
        "pan_update",
        "right_pan_update",
        "horizontal_drag_update",
        "vertical_drag_update",
        "scale_update",
        "interaction_update",
        "force_press_update",
        "long_press_move_update",
        "secondary_long_press_move_update",
        "tertiary_long_press_move_update",
        "update",
        # The window, or a control, changing size.
        "resize",
        "size_change",
        "media_change",
        # Typing, and a key held down.
        "keyboard_event",
        "key_down",
        "key_up",
        "key_repeat",
        "text_change",
        "selection_change",
        # Device sensors.
        "reading",
    }
)
"""Control events a device streams at its own rate while one gesture lasts, on any
control, by Flet 1.0.5's names (`on_<name>`)."""

STREAMED_CHANGES: tuple[type, ...] = (
    ft.Slider,
    ft.RangeSlider,
    ft.CupertinoSlider,
    ft.TextField,  # CupertinoTextField too
    ft.SearchBar,
    ft.AutoComplete,
    ft.CupertinoPicker,
    ft.CupertinoDatePicker,
    ft.CupertinoTimerPicker,
)
"""Controls whose `change` event is streamed too: while a thumb is dragged, a wheel spun,
or text typed. A `change` of any other control (a checkbox, a dropdown) is discrete."""


def continuous(name: str, control: Callable[[], object]) -> bool:
    """True if control event `name` is one a device streams while a gesture lasts;
    `control()` is the event's target control (None if unknown), asked for `change` only."""
    if name in CONTINUOUS_EVENTS:
        return True
    return name == "change" and isinstance(control(), STREAMED_CHANGES)
