"""Atomic Redis counters with live cross-process updates for Flet web apps."""

from counter_service.events import CounterEvent, InvalidEvent, parse_event
from counter_service.names import InvalidCounterName, Names
from counter_service.redis.store import ONLINE
from counter_service.service import CLICKS, COUNTERS, VIEWS, CounterService, ReservedCounter
from counter_service.settings import Settings, SettingsError
from counter_service.versions import CounterUpdate, LatestValues

__all__ = [
    "CLICKS",
    "COUNTERS",
    "ONLINE",
    "VIEWS",
    "CounterEvent",
    "CounterService",
    "CounterUpdate",
    "InvalidCounterName",
    "InvalidEvent",
    "LatestValues",
    "Names",
    "ReservedCounter",
    "Settings",
    "SettingsError",
    "parse_event",
]
