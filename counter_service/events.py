"""The counter change event published on the channel: parsing, validation and encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from counter_service.names import COUNTER_NAME_RE

# Redis integers are signed 64-bit.
INT64_MAX = 2**63 - 1
_MAX_EVENT_BYTES = 512
_FIELDS = frozenset({"name", "value", "version"})


class InvalidEvent(ValueError):
    """A message on the channel that is not a well-formed counter event."""


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A counter is at `value`; `version` grows by one with every change.

    `published_ms` is Redis's clock when the change was published (None for a state
    read from Redis); it is not part of the state, so it does not take part in `==`."""

    name: str
    value: int
    version: int
    published_ms: int | None = field(default=None, compare=False)

    def encode(self) -> str:
        """The JSON text the scripts publish for this event."""
        data: dict[str, object] = {"name": self.name, "value": self.value, "version": self.version}
        if self.published_ms is not None:
            data["ts"] = self.published_ms
        return json.dumps(data)


def parse_event(raw: bytes | str) -> CounterEvent:
    """Parse and validate one channel message; raise `InvalidEvent` if it is not ours."""
    if len(raw) > _MAX_EVENT_BYTES:
        raise InvalidEvent(f"message of {len(raw)} bytes is too long for an event")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"ts"} != _FIELDS:
        raise InvalidEvent("expected an object with exactly name, value, version (and ts)")
    return CounterEvent(
        name=_name(data["name"]),
        value=_int(data["value"], "value", -INT64_MAX - 1),
        version=_int(data["version"], "version", 1),
        published_ms=None if "ts" not in data else _int(data["ts"], "ts", 0),
    )


def _name(value: object) -> str:
    if not isinstance(value, str) or not COUNTER_NAME_RE.fullmatch(value):
        raise InvalidEvent(f"bad counter name {value!r:.80}")
    return value


def _int(value: object, field: str, low: int) -> int:
    # bool is an int subclass; true/false on the wire is not a count.
    if type(value) is not int or not low <= value <= INT64_MAX:
        raise InvalidEvent(f"bad {field} {value!r:.40}")
    return value
