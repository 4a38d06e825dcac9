"""Cross-process `page.pubsub` and atomic live counters for Flet apps on many workers.

import counter_service
app = counter_service.app(main)   # instead of flet_web.fastapi.app(main)
"""

from counter_service.errors import (
    Busy,
    CorruptCounter,
    CounterOverflow,
    CounterServiceError,
    InvalidCounterName,
    MessageTooLarge,
    NotReplicated,
    ReservedCounter,
    SettingsError,
    StoreError,
    StoreUnavailable,
)
from counter_service.events import CounterEvent
from counter_service.flet.app import app
from counter_service.flet.bridge import (
    PageCounters,
    counters,
    on_missed_messages,
    on_throttled,
    service_of,
)
from counter_service.names import ONLINE
from counter_service.redis.probe import RedisConfigError, check_redis
from counter_service.service import CounterService
from counter_service.settings import Settings
from counter_service.versions import CounterUpdate

__all__ = [
    "ONLINE",
    "Busy",
    "CorruptCounter",
    "CounterEvent",
    "CounterOverflow",
    "CounterService",
    "CounterServiceError",
    "CounterUpdate",
    "InvalidCounterName",
    "MessageTooLarge",
    "NotReplicated",
    "PageCounters",
    "RedisConfigError",
    "ReservedCounter",
    "Settings",
    "SettingsError",
    "StoreError",
    "StoreUnavailable",
    "app",
    "check_redis",
    "counters",
    "on_missed_messages",
    "on_throttled",
    "service_of",
]
