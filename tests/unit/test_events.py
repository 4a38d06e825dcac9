import json

import pytest

from counter_service.events import CounterEvent, InvalidEvent, parse_event


def test_round_trip() -> None:
    event = CounterEvent("clicks", 42, 7)
    assert parse_event(event.encode()) == event
    assert parse_event(event.encode().encode()) == event


def test_large_values_keep_every_digit() -> None:
    raw = '{"name":"views","value":9007199254740993,"version":9223372036854775807}'
    assert parse_event(raw) == CounterEvent("views", 9007199254740993, 2**63 - 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        "not json",
        "[1, 2]",
        '"clicks"',
        '{"name": "clicks", "value": 1}',
        '{"name": "clicks", "value": 1, "version": 1, "extra": 0}',
        '{"name": "a b", "value": 1, "version": 1}',
        '{"name": "clicks", "value": 1, "version": 1, "ts": "now"}',
        '{"name": "clicks", "value": 1, "version": 1, "ts": -1}',
        '{"name": 5, "value": 1, "version": 1}',
        '{"name": "clicks", "value": "1", "version": 1}',
        '{"name": "clicks", "value": 1.5, "version": 1}',
        '{"name": "clicks", "value": true, "version": 1}',
        '{"name": "clicks", "value": 1, "version": 0}',
        '{"name": "clicks", "value": 1, "version": -3}',
        '{"name": "clicks", "value": 1e400, "version": 1}',
        '{"name": "clicks", "value": 99999999999999999999, "version": 1}',
        json.dumps({"name": "clicks", "value": 1, "version": 1, "pad": "x" * 600}),
    ],
)
def test_malformed_or_foreign_messages_are_refused(raw: str | bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(raw)
