"""The change event published on the channel: parsing, validation and encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass

from counter_service.names import COUNTER_NAME_RE

# Redis integers are signed 64-bit.
_INT64_MAX = 2**63 - 1
_MAX_EVENT_BYTES = 512


class InvalidEvent(ValueError):
    """A message on the channel that is not a well-formed counter event."""


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """A counter changed to `value`; `version` grows by one with every change."""

    name: str
    value: int
    version: int

    def encode(self) -> str:
        """The JSON text the increment script publishes for this event."""
        return json.dumps({"name": self.name, "value": self.value, "version": self.version})


def parse_event(raw: bytes | str) -> CounterEvent:
    """Parse and validate one channel message; raise `InvalidEvent` if it is not ours."""
    if len(raw) > _MAX_EVENT_BYTES:
        raise InvalidEvent(f"message of {len(raw)} bytes is too long for an event")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"name", "value", "version"}:
        raise InvalidEvent("expected an object with exactly name, value and version")
    return CounterEvent(
        name=_name(data["name"]),
        value=_int(data["value"], "value", -_INT64_MAX - 1),
        version=_int(data["version"], "version", 1),
    )


def _name(value: object) -> str:
    if not isinstance(value, str) or not COUNTER_NAME_RE.fullmatch(value):
        raise InvalidEvent(f"bad counter name {value!r}")
    return value


def _int(value: object, field: str, low: int) -> int:
    # bool is an int subclass; true/false on the wire is not a count.
    if type(value) is not int or not low <= value <= _INT64_MAX:
        raise InvalidEvent(f"bad {field} {value!r}")
    return value
