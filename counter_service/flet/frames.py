"""What a client may send on Flet's websocket, checked before Flet sees it.

Flet 1.0.5 stops reading a websocket for good when a frame does not parse or has an
unknown shape; before the register message nothing then ever notices that the client
left, and after it each such frame logs a traceback. So every frame is checked here the
way Flet will decode it, and a bad one closes the connection with one warning line.
The body fields come from Flet's own protocol dataclasses (pinned by
tests/unit/test_flet_frames.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, NamedTuple

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
DATA = -1
"""The action reported for a data-channel frame."""


def _accepted(body: type) -> tuple[frozenset[str], frozenset[str]]:
    """The keys Flet's `Body(**body)` accepts, and those it requires."""
    names = frozenset(field.name for field in fields(body))
    required = frozenset(f.name for f in fields(body) if f.default is f.default_factory is MISSING)
    return names, required


_BODIES: dict[int, tuple[frozenset[str], frozenset[str]]] = {
    action.value: _accepted(body)
    for action, body in (
        (MessageAction.REGISTER_CLIENT, RegisterClientRequestBody),
        (MessageAction.CONTROL_EVENT, ControlEventBody),
        (MessageAction.UPDATE_CONTROL_PROPS, UpdateControlPropsBody),
        (MessageAction.INVOKE_METHOD, InvokeMethodResponseBody),
    )
}
"""The actions a client sends, with the body keys Flet accepts and requires for each."""


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
        return Frame(DATA)  # Flet skips empty frames
    if data[0] == DATA_CHANNEL_FRAME and registered:
        return Frame(DATA)
    if data[0] != PROTOCOL_FRAME:
        raise BadFrame(f"a frame of unknown type 0x{data[0]:02x}")
    return _check_message(_decode(data[1:]), registered)


_EVENT_PREFIX = bytes([PROTOCOL_FRAME, 0x92, EVENT])  # [3, ...] as msgpack


def looks_like_event(message: Mapping[str, Any]) -> bool:
    """True if the frame starts like a control event, without decoding it (so a
    throttled flood costs a byte comparison; a fake passes later checks or fails them)."""
    data = message.get("bytes")
    return data is not None and data[:3] == _EVENT_PREFIX


def _decode(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, ext_hook=decode_ext_from_msgpack)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise BadFrame(f"a frame that is not msgpack ({type(exc).__name__})") from None


def _check_message(decoded: Any, registered: bool) -> Frame:
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise BadFrame("a message that is not [action, body]")
    action, body = decoded
    keys = _BODIES.get(action) if type(action) is int else None
    if keys is None:
        raise BadFrame(f"an unknown action {action!r:.20}")
    accepted, required = keys
    if not isinstance(body, dict) or not required <= set(body) <= accepted:
        raise BadFrame(f"a body for action {action} that is not {sorted(accepted)}")
    if (action == REGISTER) == registered:
        raise BadFrame("a second register message" if registered else "a message before register")
    if action == REGISTER and not isinstance(body["page"], dict):
        raise BadFrame("a register message without a page")
    return Frame(int(action), body)
