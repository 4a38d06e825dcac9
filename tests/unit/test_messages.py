import json
import math
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import pytest

from counter_service.errors import MessageTooLarge
from counter_service.pubsub.messages import (
    MAX_DEPTH,
    AppMessage,
    InvalidMessage,
    check_json,
    encode,
    parse,
)


class Colour(IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**70), 1.5, "héllo", [], {}, {"a": [1, {"b": None}]}, "x" * 1000],
)
def test_json_values_pass(value: Any) -> None:
    check_json(value)
    message = AppMessage("w", None, "t", value)
    assert parse(encode(message, 1 << 20)) == message


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        (1, 2),  # would arrive as a list
        {1: "a"},  # would arrive with a str key
        b"bytes",
        object(),
        math.nan,
        math.inf,
        Colour.RED,  # would arrive as a plain int
        OrderedDict(a=1),
        [[{"deep": {1}}]],
    ],
)
def test_anything_json_would_change_or_refuse_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=r"JSON|keys must be str"):
        check_json(value)


def test_nesting_is_bounded() -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        value = [value]
    with pytest.raises(TypeError, match="nested"):
        check_json(value)


def test_the_size_limit_counts_encoded_bytes() -> None:
    message = AppMessage("worker", None, None, "é" * 100)
    size = len(encode(message, 10_000).encode())
    assert size > 200  # two bytes per é
    assert encode(message, size)
    with pytest.raises(MessageTooLarge, match=f"{size} bytes is over the limit of {size - 1}"):
        encode(message, size - 1)


def test_a_topic_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="topic"):
        encode(AppMessage("w", None, 5, "m"), 1000)  # type: ignore[arg-type]  # wrong on purpose


def test_exclusion_applies_only_on_the_senders_worker() -> None:
    message = AppMessage("w1", "session-a", None, "m")
    assert message.excluded_on("w1") == "session-a"
    assert message.excluded_on("w2") is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff",
        "[]",
        "{}",
        json.dumps({"w": "x", "s": None, "t": None}),
        json.dumps({"w": 1, "s": None, "t": None, "m": 1}),
        json.dumps({"w": "x", "s": 5, "t": None, "m": 1}),
        json.dumps({"w": "x", "s": None, "t": [], "m": 1}),
        json.dumps({"w": "x", "s": None, "t": None, "m": 1, "extra": 1}),
    ],
)
def test_foreign_messages_are_refused(raw: str | bytes) -> None:
    with pytest.raises(InvalidMessage):
        parse(raw)


def test_an_envelope_up_to_the_senders_limit_is_accepted_and_one_byte_more_refused() -> None:
    limit = 4096
    message = AppMessage("w", None, "t", "é" * 10)
    text = encode(message, limit)
    padded = text.replace('"m":"', '"m":"' + "x" * (limit - len(text.encode())))
    assert len(padded.encode()) == limit
    assert parse(padded, limit).message == "x" * (limit - len(text.encode())) + "é" * 10
    assert parse(padded.encode(), limit) == parse(padded, limit)
    with pytest.raises(InvalidMessage, match=f"{limit + 1} bytes, over the limit of {limit}"):
        parse(padded.replace('"m":"', '"m":"x'), limit)


def test_a_giant_forged_envelope_is_refused_without_a_limit_given() -> None:
    giant = json.dumps({"w": "x", "s": None, "t": None, "m": "x" * (6 << 20)})
    with pytest.raises(InvalidMessage, match="over the limit"):
        parse(giant.encode())


def test_nesting_deep_enough_to_exhaust_the_decoder_is_refused() -> None:
    deep = '{"w":"x","s":null,"t":null,"m":' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(InvalidMessage, match="not JSON: RecursionError"):
        parse(deep)


def test_nesting_deeper_than_a_sender_may_is_refused() -> None:
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(InvalidMessage, match="nested"):
        parse('{"w":"x","s":null,"t":null,"m":' + deep + "}")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_what_no_sender_can_send_is_refused(constant: str) -> None:
    with pytest.raises(InvalidMessage, match="not a JSON value"):
        parse('{"w":"x","s":null,"t":null,"m":[' + constant + "]}")
