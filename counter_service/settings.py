"""One frozen settings object, built from flags or the environment at the edge."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from counter_service.errors import SettingsError
from counter_service.redis.urls import InvalidRedisOption, InvalidRedisUrl, parse_redis_url

DEFAULT_NAMESPACE = "counter-service"
DEFAULT_TICK_MS = 30
DEFAULT_PRESENCE_TTL_S = 15.0
DEFAULT_MAX_CONNECTIONS = 2
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_RECONCILE_S = 10.0
DEFAULT_SESSION_TIMEOUT_S = 60
DEFAULT_EVENTS_PER_S = 20.0
DEFAULT_EVENT_BURST = 40
DEFAULT_MAX_FRAMES_PER_S = 2000.0
DEFAULT_FRAME_BURST = 4000
DEFAULT_MAX_PENDING_INCREMENTS = 1000
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
DEFAULT_MAX_SEND_QUEUE_BYTES = 4 * 1024 * 1024
DEFAULT_REGISTER_TIMEOUT_S = 10.0
DEFAULT_SEND_TIMEOUT_S = 10.0
DEFAULT_LAG_THRESHOLD_S = 1.0
DEFAULT_LAG_SUSTAINED_S = 10.0
FANOUT_MODES = ("direct", "update")

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CREDENTIALS_RE = re.compile(r"^([^:/]*://)[^/]*@")
"""The user and password part of a URL that `urlsplit` cannot parse."""


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
    "max_frames_per_s": Source(None, "COUNTER_MAX_FRAMES_PER_S", float),
    "frame_burst": Source(None, "COUNTER_FRAME_BURST", int),
    "max_pending_increments": Source(None, "COUNTER_MAX_PENDING_INCREMENTS", int),
    "max_frame_bytes": Source(None, "COUNTER_MAX_FRAME_BYTES", int),
    "max_send_queue_bytes": Source(None, "COUNTER_MAX_SEND_QUEUE", int),
    "register_timeout_s": Source(None, "COUNTER_REGISTER_TIMEOUT", float),
    "send_timeout_s": Source(None, "COUNTER_SEND_TIMEOUT", float),
    "lag_threshold_s": Source(None, "COUNTER_LAG_THRESHOLD", float),
    "lag_sustained_s": Source(None, "COUNTER_LAG_SUSTAINED", float),
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
    """Sustained discrete control events (clicks, submits...) one session may send a
    second; what a browser streams while a gesture lasts is not held to it."""
    event_burst: int = DEFAULT_EVENT_BURST
    """Events one session may send at once after a quiet spell."""
    max_frames_per_s: float = DEFAULT_MAX_FRAMES_PER_S
    """Sustained websocket frames of any kind one client may send a second; a client
    over it (beyond `frame_burst`) is disconnected as flooding."""
    frame_burst: int = DEFAULT_FRAME_BURST
    """Frames one client may send at once (a browser's seconds, arriving together after
    the worker's event loop was held up)."""
    max_pending_increments: int = DEFAULT_MAX_PENDING_INCREMENTS
    """Increments a worker holds while Redis is busy; more are refused as busy."""
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    """Largest websocket frame a client may send."""
    max_send_queue_bytes: int = DEFAULT_MAX_SEND_QUEUE_BYTES
    """Bytes that may wait to be sent to one client (one frame alone always may); a
    client with more waiting is dropped as not reading."""
    register_timeout_s: float = DEFAULT_REGISTER_TIMEOUT_S
    """How long a new websocket may take to send Flet's register message."""
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    """How long a client may leave one frame unread before it is dropped."""
    lag_threshold_s: float = DEFAULT_LAG_THRESHOLD_S
    """Event-loop lag that, held for `lag_sustained_s`, makes the worker not ready."""
    lag_sustained_s: float = DEFAULT_LAG_SUSTAINED_S
    """How long the loop must lag past `lag_threshold_s` before the worker is not ready."""
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
        _check_range("max_frames_per_s", self.max_frames_per_s, 1.0, 1_000_000.0)
        _check_range("frame_burst", self.frame_burst, 1, 10_000_000)
        _check_range("max_pending_increments", self.max_pending_increments, 1, 1_000_000)
        _check_range("max_frame_bytes", self.max_frame_bytes, 4096, 16 * 1024 * 1024)
        _check_range("max_send_queue_bytes", self.max_send_queue_bytes, 65_536, 1024**3)
        _check_range("register_timeout_s", self.register_timeout_s, 0.1, 3600.0)
        _check_range("send_timeout_s", self.send_timeout_s, 0.1, 3600.0)
        _check_range("lag_threshold_s", self.lag_threshold_s, 0.01, 3600.0)
        _check_range("lag_sustained_s", self.lag_sustained_s, 0.1, 3600.0)
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
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        flags: Mapping[str, str | None] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> Settings:
        """Build settings from the environment variables in `SOURCES` (`REDIS_URL`,
        `COUNTER_NAMESPACE`, `COUNTER_TICK_MS`, ...), unset or empty meaning default.

        `flags` (field name -> the text typed after its command-line flag) replace
        the environment's values, and `overrides` (field name -> value, None ignored)
        replace both, before anything is checked. A bad value raises a `SettingsError`
        that names where it came from and shows it as typed: `COUNTER_TICK_MS=0: must
        be between 1 and 10000`, `--tick-ms abc: is not a whole number`."""
        given = _given(os.environ if env is None else env, flags or {}, overrides or {})
        try:
            return cls(**{name: g.value for name, g in given.items()})
        except SettingsError as exc:
            if exc.field not in given:
                raise
            raise InvalidSetting(
                exc.field, exc.value, exc.problem, given[exc.field].typed
            ) from None


def check_variable(variable: str, raw: str, field: str) -> Any:
    """`raw`, the value of environment variable `variable`, parsed and checked as the
    Settings field `field` is; a `SettingsError` names `variable=raw` as typed."""
    given = _parse(field, SOURCES[field], raw, f"{variable}={_shown(field, raw)}")
    try:
        replace(Settings(), **{field: given.value})
    except SettingsError as exc:
        raise InvalidSetting(field, exc.value, exc.problem, given.typed) from None
    return given.value


class InvalidSetting(SettingsError):
    """A `SettingsError` about a value the user gave: `typed` shows it the way it was
    given (`COUNTER_TICK_MS=0`, `--tick-ms 0`), and the message is `typed: problem`."""

    def __init__(self, field: str, value: object, problem: str, typed: str) -> None:
        super().__init__(field, value, problem)
        self.typed = typed
        self.args = (f"{typed}: {problem}",)


def redact(url: str) -> str:
    """`url` with any password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even parseable (`redis://[x]:1`): hide all credentials
        return _CREDENTIALS_RE.sub(r"\1***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


_KINDS: dict[Callable[[str], Any], str] = {int: "a whole number", float: "a number"}


class _Given(NamedTuple):
    """A field's value, and how the user gave it (for error messages)."""

    value: Any  # of the field's type, checked by Settings
    typed: str


def _given(
    env: Mapping[str, str], flags: Mapping[str, str | None], overrides: Mapping[str, object]
) -> dict[str, _Given]:
    given: dict[str, _Given] = {}
    for name, source in SOURCES.items():
        if raw := env.get(source.env):
            given[name] = _parse(name, source, raw, f"{source.env}={_shown(name, raw)}")
        if source.flag and (text := flags.get(name)) is not None:
            given[name] = _parse(name, source, text, f"{source.flag} {_shown(name, text)}")
        if (value := overrides.get(name)) is not None:
            shown = _secret_free(name, value) if isinstance(value, str) else value
            given[name] = _Given(value, f"{name}={shown!r}")
    return given


def _shown(field: str, text: str) -> str:
    """`text` as it would be typed in a shell, without a URL's password."""
    return shlex.quote(_secret_free(field, text))


def _secret_free(field: str, text: str) -> str:
    if field != "redis_url":
        return text
    try:
        return redact(text)
    except ValueError:  # not even a URL: whatever it holds may be a secret
        return "***"


def _parse(field: str, source: Source, raw: str, typed: str) -> _Given:
    try:
        return _Given(source.parse(raw), typed)
    except ValueError:
        kind = _KINDS.get(source.parse, "a valid value")
        raise InvalidSetting(field, raw, f"is not {kind}", typed) from None


def _refuse(field: str, value: object, problem: str) -> None:
    raise SettingsError(field, value, problem)


def _check_range(field: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        _refuse(field, value, f"must be between {_plain(low)} and {_plain(high)}")


def _plain(bound: float) -> str:
    """`3600` rather than `3600.0`, `0.5` as it is."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _check_redis_url(url: str | None) -> None:
    if url is None:
        return
    try:
        parse_redis_url(url)
    except InvalidRedisOption as exc:  # the URL's shape is fine: no example needed
        _refuse("redis_url", redact(url), str(exc))
    except InvalidRedisUrl as exc:
        _refuse("redis_url", redact(url), f"{exc} (for example redis://127.0.0.1:6379/0)")


def _check_file(field: str, path: str | None) -> None:
    if path is not None and not os.path.isfile(path):
        _refuse(field, path, "is not a readable file")
