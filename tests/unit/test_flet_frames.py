"""What a client may send (counter_service.flet.frames): every frame decoded as Flet
decodes it and classified by its decoded action; bodies checked field by field. The
guard tests at the top fail loudly if a Flet upgrade changes the protocol they mirror."""

import dataclasses
import inspect
from dataclasses import MISSING, fields
from typing import Any, get_type_hints

import flet as ft
import msgpack
import pytest
from flet.controls.base_control import BaseControl
from flet.messaging.protocol import (
    ControlEventBody,
    InvokeMethodResponseBody,
    MessageAction,
    RegisterClientRequestBody,
    UpdateControlPropsBody,
)
from flet_web.fastapi.flet_app import FletApp

from counter_service.flet.frames import (
    AS_USED,
    CLIENT_BODIES,
    CONTINUOUS_EVENTS,
    DATA,
    EVENT,
    METHOD_RESULT,
    PROPS,
    REGISTER,
    STREAMED_CHANGES,
    BadFrame,
    FrameTooLarge,
    check_for,
    check_frame,
    continuous,
)

# Flet's protocol, as this module was written against (Flet 1.0.5).


def test_the_actions_a_client_sends_keep_their_numbers() -> None:
    assert (REGISTER, EVENT, PROPS, METHOD_RESULT) == (1, 3, 4, 5)
    assert {a.name: a.value for a in MessageAction} == {
        "REGISTER_CLIENT": 1,
        "PATCH_CONTROL": 2,
        "CONTROL_EVENT": 3,
        "UPDATE_CONTROL_PROPS": 4,
        "INVOKE_METHOD": 5,
        "SESSION_CRASHED": 6,
        "PYTHON_OUTPUT": 7,
    }


FLET_BODIES: dict[type, dict[str, Any]] = {
    RegisterClientRequestBody: {"session_id": str, "page_name": str, "page": dict[str, Any]},
    ControlEventBody: {"target": int, "name": str, "data": Any},
    UpdateControlPropsBody: {"id": int, "props": Any},
    InvokeMethodResponseBody: {"control_id": int, "call_id": str, "result": Any, "error": str},
}


@pytest.mark.parametrize("body", list(FLET_BODIES))
def test_flets_body_dataclasses_keep_their_fields_types_and_required_fields(body: type) -> None:
    assert get_type_hints(body) == FLET_BODIES[body]
    required = [f.name for f in fields(body) if f.default is f.default_factory is MISSING]
    assert required == list(FLET_BODIES[body])  # every field: Body(**body) needs them all


def test_each_override_names_a_field_flet_still_annotates_otherwise() -> None:
    for (body, name), used_as in AS_USED.items():
        assert get_type_hints(body)[name] != used_as, f"{body.__name__}.{name}: drop the override"


def test_flet_decodes_frames_and_builds_each_body_as_this_module_assumes() -> None:
    source = inspect.getsource(FletApp)
    assert "msgpack.unpackb(data[1:], ext_hook=decode_ext_from_msgpack)" in source
    assert "ptype == 0x00" in source
    assert "ptype == 0x01" in source
    for action, body in CLIENT_BODIES.items():
        assert f"MessageAction.{MessageAction(action).name}" in source
        assert f"{body.__name__}(**body)" in source


def test_an_annotation_without_a_check_fails_loudly() -> None:
    with pytest.raises(TypeError, match="no check"):
        check_for(list[int])


# What passes and what does not.


def frame(message: Any) -> dict[str, bytes]:
    return {"bytes": b"\x00" + msgpack.packb(message)}


REGISTER_BODY = {"session_id": None, "page_name": "", "page": {"route": "/"}}
CLICK = {"target": 7, "name": "click", "data": None}
RESULT = {"control_id": 7, "call_id": "c1", "result": None, "error": None}
GOOD_AFTER_REGISTER = [
    [3, CLICK],
    [3, {"target": 7, "name": "change", "data": {"value": "x", "n": [1, 2]}}],
    [4, {"id": 7, "props": {"value": "typed", "nested": {"a": 1}}}],
    [5, RESULT],
    [5, {**RESULT, "error": "it failed", "result": [1]}],
]


@pytest.mark.parametrize("message", GOOD_AFTER_REGISTER)
def test_well_formed_frames_after_register_pass_with_their_action(message: list[Any]) -> None:
    checked = check_frame(frame(message), registered=True, max_bytes=1000)
    assert (checked.action, checked.body) == (message[0], message[1])


@pytest.mark.parametrize("session_id", [None, "", "abc123"])
def test_a_register_message_passes_with_or_without_a_session(session_id: str | None) -> None:
    body = {**REGISTER_BODY, "session_id": session_id}
    checked = check_frame(frame([1, body]), registered=False, max_bytes=1000)
    assert checked.action == REGISTER
    assert checked.session_id == (session_id or None)


# The same click, encoded as msgpack allows; Flet decodes every one of them.
CLICK_BODY = msgpack.packb(CLICK)
EVENT_ENCODINGS = {
    "fixarray, fixint": b"\x00\x92\x03" + CLICK_BODY,
    "array16": b"\x00\xdc\x00\x02\x03" + CLICK_BODY,
    "array32": b"\x00\xdd\x00\x00\x00\x02\x03" + CLICK_BODY,
    "uint8 action": b"\x00\x92\xcc\x03" + CLICK_BODY,
    "int16 action": b"\x00\x92\xd1\x00\x03" + CLICK_BODY,
    "uint64 action": b"\x00\x92\xcf" + (3).to_bytes(8, "big") + CLICK_BODY,
}


@pytest.mark.parametrize("encoding", list(EVENT_ENCODINGS))
def test_every_encoding_of_an_event_is_classified_as_an_event(encoding: str) -> None:
    data = EVENT_ENCODINGS[encoding]
    assert msgpack.unpackb(data[1:]) == [3, CLICK]  # what Flet will see
    checked = check_frame({"bytes": data}, registered=True, max_bytes=1000)
    assert (checked.action, checked.body) == (EVENT, CLICK)


BAD_BODIES = {
    "event target a list": [3, {**CLICK, "target": [1]}],
    "event target a bool": [3, {**CLICK, "target": True}],
    "event target a string": [3, {**CLICK, "target": "7"}],
    "event name a number": [3, {**CLICK, "name": 5}],
    "event without a name": [3, {"target": 7, "data": None}],
    "event with an extra field": [3, {**CLICK, "extra": 1}],
    "props a number": [4, {"id": 1, "props": 5}],
    "props a list": [4, {"id": 1, "props": [["route", "/"]]}],
    "props id a list": [4, {"id": [1], "props": {}}],
    "props with a binary key": [4, {"id": 1, "props": {b"route": "/"}}],
    "method result control_id a list": [5, {**RESULT, "control_id": [1]}],
    "method result call_id a number": [5, {**RESULT, "call_id": 5}],
    "method result error a number": [5, {**RESULT, "error": 5}],
    "method result without a call_id": [5, {"control_id": 7, "result": None, "error": None}],
    "body a list": [3, ["target", 7]],
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_body_flet_would_not_accept_is_refused(case: str) -> None:
    with pytest.raises(BadFrame):
        check_frame(frame(BAD_BODIES[case]), registered=True, max_bytes=1000)


BAD_REGISTERS = {
    "page a number": {**REGISTER_BODY, "page": 5},
    "page with a binary key": {**REGISTER_BODY, "page": {b"route": "/"}},
    "page_name a number": {**REGISTER_BODY, "page_name": 3},
    "session_id a list": {**REGISTER_BODY, "session_id": ["x"]},
    "no page": {"session_id": None, "page_name": ""},
}


@pytest.mark.parametrize("case", list(BAD_REGISTERS))
def test_a_register_message_flet_would_not_accept_is_refused(case: str) -> None:
    with pytest.raises(BadFrame):
        check_frame(frame([1, BAD_REGISTERS[case]]), registered=False, max_bytes=1000)


GARBAGE: dict[str, dict[str, Any]] = {
    "text": {"text": "hello"},
    "unknown frame type": {"bytes": b"\x07abc"},
    "not msgpack": {"bytes": b"\x00\xc1"},
    "a bad date extension": {"bytes": b"\x00" + msgpack.packb(msgpack.ExtType(1, b"no date"))},
    "a map": frame({"action": 3}),
    "three items": frame([3, CLICK, None]),
    "an unknown action": frame([42, {}]),
    "a server-only action": frame([2, {"id": 1, "patch": []}]),
    "a float action": frame([3.0, CLICK]),
    "a bool action": frame([True, REGISTER_BODY]),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_is_refused_before_and_after_register(case: str) -> None:
    for registered in (False, True):
        with pytest.raises(BadFrame):
            check_frame(GARBAGE[case], registered=registered, max_bytes=1000)


def test_the_register_message_comes_once_and_first() -> None:
    with pytest.raises(BadFrame, match="before register"):
        check_frame(frame([3, CLICK]), registered=False, max_bytes=1000)
    with pytest.raises(BadFrame, match="second register"):
        check_frame(frame([1, REGISTER_BODY]), registered=True, max_bytes=1000)


def test_data_channel_and_empty_frames_pass_only_after_register() -> None:
    data_frame = {"bytes": b"\x01\x00\x00\x00\x00payload"}
    assert check_frame(data_frame, registered=True, max_bytes=1000).action == DATA
    assert check_frame({"bytes": b""}, registered=True, max_bytes=1000).action == DATA
    with pytest.raises(BadFrame):
        check_frame(data_frame, registered=False, max_bytes=1000)
    with pytest.raises(BadFrame, match="empty frame before register"):
        check_frame({"bytes": b""}, registered=False, max_bytes=1000)


def test_a_frame_over_the_limit_is_too_large_before_it_is_decoded() -> None:
    with pytest.raises(FrameTooLarge):
        check_frame({"bytes": b"\x00" + b"\xc1" * 2000}, registered=True, max_bytes=1000)


# Continuous and discrete events, by Flet 1.0.5's event names.


def flet_event_names() -> set[str]:
    """Every `on_<name>` event of every control Flet exports."""
    names: set[str] = set()
    for exported in dir(ft):
        control = getattr(ft, exported, None)
        is_control = isinstance(control, type) and issubclass(control, BaseControl)
        if is_control and dataclasses.is_dataclass(control):
            names |= {f.name[3:] for f in fields(control) if f.name.startswith("on_")}
    return names


def test_every_continuous_event_is_one_flet_still_names_so() -> None:
    assert flet_event_names() >= CONTINUOUS_EVENTS


def test_every_update_flet_streams_during_a_gesture_is_continuous() -> None:
    # A new one in a Flet upgrade fails here: decide which kind it is.
    updates = {name for name in flet_event_names() if name.endswith("_update")}
    assert updates <= CONTINUOUS_EVENTS
    assert len(updates) >= 10


@pytest.mark.parametrize("control", STREAMED_CHANGES, ids=lambda c: c.__name__)
def test_every_control_whose_change_is_streamed_has_a_change_event(control: type) -> None:
    assert "on_change" in {f.name for f in fields(control)}


def test_scrolls_moves_drags_resizes_and_typing_are_continuous() -> None:
    def unasked() -> object:
        raise AssertionError("the control matters only for a change")

    for name in ("scroll", "hover", "pan_update", "resize", "keyboard_event", "selection_change"):
        assert continuous(name, unasked), name
    for name in ("click", "submit", "tap", "long_press", "change_end", "route_change", "dismiss"):
        assert not continuous(name, unasked), name


def test_a_change_is_continuous_for_sliders_pickers_and_text_fields_only() -> None:
    for control in (ft.Slider(), ft.RangeSlider(0, 1), ft.TextField(), ft.CupertinoTextField()):
        assert continuous("change", lambda c=control: c), type(control).__name__
    for control in (ft.Checkbox(), ft.Switch(), ft.Dropdown(), None):
        assert not continuous("change", lambda c=control: c), type(control).__name__
