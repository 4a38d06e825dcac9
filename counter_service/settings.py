"""One frozen settings object, built from flags or the environment at the edge."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from counter_service.errors import SettingsError
from counter_service.redis.urls import InvalidRedisUrl, parse_redis_url

DEFAULT_NAMESPACE = "counter-service"
DEFAULT_TICK_MS = 30
DEFAULT_PRESENCE_TTL_S = 15.0
DEFAULT_MAX_CONNECTIONS = 2
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_RECONCILE_S = 10.0
DEFAULT_SESSION_TIMEOUT_S = 60
DEFAULT_EVENTS_PER_S = 20.0
DEFAULT_EVENT_BURST = 40
DEFAULT_MAX_PENDING_INCREMENTS = 1000
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_REGISTER_TIMEOUT_S = 10.0
DEFAULT_SEND_TIMEOUT_S = 10.0
DEFAULT_LAG_THRESHOLD_S = 1.0
FANOUT_MODES = ("direct", "update")

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Source:
    """Where a user sets one field: its command-line flag (if any) and variable."""

    flag: str | None
    env: str
    parse: Callable[[str], Any] = str


SOURCES: dict[str, Source] = {
    "redis_url": Source("--redis-url", "REDIS_URL"),
    "namespace": Source("--namespace", "COUNTER_NAMESPACE"),
    "tick_ms": Source("--tick-ms", "COUNTER_TICK_MS", int),
    "presence_ttl_s": Source("--presence-ttl", "COUNTER_PRESENCE_TTL", float),
    "max_connections": Source(None, "COUNTER_MAX_CONNECTIONS", int),
    "fanout": Source("--fanout", "COUNTER_FANOUT"),
    "max_message_bytes": Source(None, "COUNTER_MAX_MESSAGE_BYTES", int),
    "reconcile_s": Source(None, "COUNTER_RECONCILE_S", float),
    "session_timeout_s": Source("--session-timeout", "COUNTER_SESSION_TIMEOUT", int),
    "events_per_s": Source(None, "COUNTER_EVENTS_PER_S", float),
    "event_burst": Source(None, "COUNTER_EVENT_BURST", int),
    "max_pending_increments": Source(None, "COUNTER_MAX_PENDING_INCREMENTS", int),
    "max_frame_bytes": Source(None, "COUNTER_MAX_FRAME_BYTES", int),
    "register_timeout_s": Source(None, "COUNTER_REGISTER_TIMEOUT", float),
    "send_timeout_s": Source(None, "COUNTER_SEND_TIMEOUT", float),
    "lag_threshold_s": Source(None, "COUNTER_LAG_THRESHOLD", float),
    "tls_ca_file": Source(None, "COUNTER_TLS_CA_FILE"),
    "tls_cert_file": Source(None, "COUNTER_TLS_CERT_FILE"),
    "tls_key_file": Source(None, "COUNTER_TLS_KEY_FILE"),
    "wait_replicas": Source(None, "COUNTER_WAIT_REPLICAS", int),
    "wait_timeout_ms": Source(None, "COUNTER_WAIT_TIMEOUT_MS", int),
}
"""Every field, with the flag and environment variable that set it."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run, validated once.

    `redis_url=None` selects the embedded in-process store (fakeredis), meant for a
    single process in development: nothing is shared with other processes.
    """

    redis_url: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    tick_ms: int = DEFAULT_TICK_MS
    presence_ttl_s: float = DEFAULT_PRESENCE_TTL_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    fanout: str = FANOUT_MODES[0]
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    reconcile_s: float = DEFAULT_RECONCILE_S
    session_timeout_s: int = DEFAULT_SESSION_TIMEOUT_S
    """How long Flet keeps a session whose browser left (it may reconnect to it)."""
    events_per_s: float = DEFAULT_EVENTS_PER_S
    """Sustained control events (clicks, ...) one session may send a second."""
    event_burst: int = DEFAULT_EVENT_BURST
    """Events one session may send at once after a quiet spell."""
    max_pending_increments: int = DEFAULT_MAX_PENDING_INCREMENTS
    """Increments a worker holds while Redis is busy; more are refused as busy."""
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    """Largest websocket frame a client may send."""
    register_timeout_s: float = DEFAULT_REGISTER_TIMEOUT_S
    """How long a new websocket may take to send Flet's register message."""
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    """How long a client may leave one frame unread before it is dropped."""
    lag_threshold_s: float = DEFAULT_LAG_THRESHOLD_S
    """Event-loop lag that, held for 10 s, makes the worker not ready."""
    tls_ca_file: str | None = None
    """CA certificates to verify Redis's certificate with (`rediss`), instead of the system's."""
    tls_cert_file: str | None = None
    """Client certificate, for a Redis that asks for one (`tls-auth-clients yes`)."""
    tls_key_file: str | None = None
    """The client certificate's private key."""
    wait_replicas: int = 0
    """Acknowledge an increment only once this many replicas have it (`WAIT`)."""
    wait_timeout_ms: int = 100
    """How long an increment waits for its replicas before it is reported not replicated."""

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url)
        if not _NAMESPACE_RE.fullmatch(self.namespace):
            _refuse("namespace", self.namespace, "use 1-64 letters, digits, '_', '-' or '.'")
        _check_range("tick_ms", self.tick_ms, 1, 10_000)
        _check_range("presence_ttl_s", self.presence_ttl_s, 1.0, 3600.0)
        _check_range("max_connections", self.max_connections, 1, 1024)
        _check_range("max_message_bytes", self.max_message_bytes, 64, 1024 * 1024)
        _check_range("reconcile_s", self.reconcile_s, 0.5, 3600.0)
        _check_range("session_timeout_s", self.session_timeout_s, 1, 86_400)
        _check_range("events_per_s", self.events_per_s, 0.1, 10_000.0)
        _check_range("event_burst", self.event_burst, 1, 100_000)
        _check_range("max_pending_increments", self.max_pending_increments, 1, 1_000_000)
        _check_range("max_frame_bytes", self.max_frame_bytes, 4096, 16 * 1024 * 1024)
        _check_range("register_timeout_s", self.register_timeout_s, 0.1, 3600.0)
        _check_range("send_timeout_s", self.send_timeout_s, 0.1, 3600.0)
        _check_range("lag_threshold_s", self.lag_threshold_s, 0.01, 3600.0)
        _check_range("wait_replicas", self.wait_replicas, 0, 16)
        _check_range("wait_timeout_ms", self.wait_timeout_ms, 1, 60_000)
        for field_name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            _check_file(field_name, getattr(self, field_name))
        if self.wait_replicas and self.redis_url and "+cluster" in self.redis_url:
            _refuse("wait_replicas", self.wait_replicas, "is not supported on a cluster")
        if self.fanout not in FANOUT_MODES:
            _refuse("fanout", self.fanout, f"must be one of {', '.join(FANOUT_MODES)}")

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set and the in-process store is used."""
        return self.redis_url is None

    @property
    def redacted_url(self) -> str:
        """The Redis URL with any password replaced by `***`, fit for logs."""
        return "embedded" if self.redis_url is None else redact(self.redis_url)

    @property
    def tick_s(self) -> float:
        """The coalescing tick in seconds."""
        return self.tick_ms / 1000

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; `None` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]  # fields are checked in __post_init__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment variables in `SOURCES` (`REDIS_URL`,
        `COUNTER_NAMESPACE`, `COUNTER_TICK_MS`, ...); unset or empty means default."""
        env = os.environ if env is None else env
        given = {}
        for field in fields(cls):
            source = SOURCES[field.name]
            raw = env.get(source.env)
            if raw:
                given[field.name] = _parse(field.name, source, raw)
        return cls(**given)


def redact(url: str) -> str:
    """`url` with any password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _parse(field: str, source: Source, raw: str) -> Any:
    try:
        return source.parse(raw)
    except ValueError:
        kind = getattr(source.parse, "__name__", "value")
        raise SettingsError(field, raw, f"is not a valid {kind}") from None


def _refuse(field: str, value: object, problem: str) -> None:
    raise SettingsError(field, value, problem)


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        _refuse(field, value, f"must be between {low} and {high}")


def _check_redis_url(url: str | None) -> None:
    if url is None:
        return
    try:
        parse_redis_url(url)
    except InvalidRedisUrl as exc:
        _refuse("redis_url", redact(url), f"{exc} (for example redis://127.0.0.1:6379/0)")


def _check_file(field: str, path: str | None) -> None:
    if path is not None and not os.path.isfile(path):
        _refuse(field, path, "is not a readable file")
