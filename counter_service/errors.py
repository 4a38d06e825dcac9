"""The exceptions the library raises, so callers can tell a broken counter from an outage."""

from __future__ import annotations


class CounterServiceError(Exception):
    """Base of every error this library raises on purpose."""


class SettingsError(CounterServiceError, ValueError):
    """A setting has a value the service cannot run with: `field` is the Settings field,
    `value` what it was given, `problem` what is wrong with it."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(f"{field}={value!r} {problem}")
        self.field = field
        self.value = value
        self.problem = problem


class InvalidCounterName(CounterServiceError, ValueError):
    """A counter name outside letters, digits and `_-.:` (1 to 200 characters)."""


class ReservedCounter(CounterServiceError, ValueError):
    """The counter is maintained by the service itself and cannot be incremented."""


class CounterOverflow(CounterServiceError, ValueError):
    """The increment would take the counter outside a signed 64-bit integer."""


class CorruptCounter(CounterServiceError):
    """A counter's key in Redis holds something that is not a counter.

    Nothing was written. Repairing the key (`DEL` or `SET` to an integer) heals it."""

    def __init__(self, name: str, key: str, problem: str) -> None:
        super().__init__(f"counter {name!r} is broken: Redis key {key!r} {problem}")
        self.name = name
        self.key = key
        self.problem = problem


class Busy(CounterServiceError):
    """The worker already holds as many increments as it may (`max_pending_increments`);
    this one was refused at once, not queued. Try again shortly."""


class StoreError(CounterServiceError):
    """Redis refused a command (out of memory, read-only replica, missing permission...)."""


class NotReplicated(StoreError):
    """The increment counted on the master, but not enough replicas confirmed it in time
    (`wait_replicas`): a failover now could lose it."""


class StoreUnavailable(StoreError, ConnectionError):
    """Redis could not be reached or did not answer in time; nothing was changed
    that the caller can rely on (an increment may still have been applied)."""


class MessageTooLarge(CounterServiceError, ValueError):
    """An app message is larger than the configured limit (`max_message_bytes`)."""
