"""One frozen settings object, built from flags or the environment at the edge."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar
from urllib.parse import urlsplit

from counter_service.errors import SettingsError

DEFAULT_NAMESPACE = "counter-service"
DEFAULT_TICK_MS = 30
DEFAULT_PRESENCE_TTL_S = 15.0
DEFAULT_MAX_CONNECTIONS = 2
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_RECONCILE_S = 10.0
FANOUT_MODES = ("direct", "update")

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")

_Num = TypeVar("_Num", int, float)


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

    def __post_init__(self) -> None:
        _check_redis_url(self.redis_url)
        if not _NAMESPACE_RE.fullmatch(self.namespace):
            raise SettingsError(
                f"namespace {self.namespace!r}: use 1-64 letters, digits, '_', '-' or '.'"
            )
        _check_range("tick_ms", self.tick_ms, 1, 10_000)
        _check_range("presence_ttl_s", self.presence_ttl_s, 1.0, 3600.0)
        _check_range("max_connections", self.max_connections, 1, 1024)
        _check_range("max_message_bytes", self.max_message_bytes, 64, 1024 * 1024)
        _check_range("reconcile_s", self.reconcile_s, 0.5, 3600.0)
        if self.fanout not in FANOUT_MODES:
            raise SettingsError(f"fanout {self.fanout!r} must be one of {', '.join(FANOUT_MODES)}")

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set and the in-process store is used."""
        return self.redis_url is None

    @property
    def redacted_url(self) -> str:
        """The Redis URL with any password replaced by `***`, fit for logs."""
        if self.redis_url is None:
            return "embedded"
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()

    @property
    def tick_s(self) -> float:
        """The coalescing tick in seconds."""
        return self.tick_ms / 1000

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; `None` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]  # fields are checked in __post_init__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `REDIS_URL`, `COUNTER_NAMESPACE`, `COUNTER_TICK_MS`,
        `COUNTER_PRESENCE_TTL`, `COUNTER_MAX_CONNECTIONS`, `COUNTER_FANOUT`,
        `COUNTER_MAX_MESSAGE_BYTES`, `COUNTER_RECONCILE_S` (unset or empty means default)."""
        env = os.environ if env is None else env
        return cls(
            redis_url=env.get("REDIS_URL") or None,
            namespace=env.get("COUNTER_NAMESPACE") or DEFAULT_NAMESPACE,
            tick_ms=_parse(env, "COUNTER_TICK_MS", int, DEFAULT_TICK_MS),
            presence_ttl_s=_parse(env, "COUNTER_PRESENCE_TTL", float, DEFAULT_PRESENCE_TTL_S),
            max_connections=_parse(env, "COUNTER_MAX_CONNECTIONS", int, DEFAULT_MAX_CONNECTIONS),
            fanout=env.get("COUNTER_FANOUT") or FANOUT_MODES[0],
            max_message_bytes=_parse(
                env, "COUNTER_MAX_MESSAGE_BYTES", int, DEFAULT_MAX_MESSAGE_BYTES
            ),
            reconcile_s=_parse(env, "COUNTER_RECONCILE_S", float, DEFAULT_RECONCILE_S),
        )


def _parse(env: Mapping[str, str], name: str, kind: type[_Num], default: _Num) -> _Num:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name}={value!r} must be between {low} and {high}")


def _check_redis_url(url: str | None) -> None:
    if url is None:
        return
    scheme = urlsplit(url).scheme
    if scheme not in _REDIS_SCHEMES:
        raise SettingsError(
            f"redis URL {url!r}: scheme must be one of {', '.join(_REDIS_SCHEMES)}"
            " (for example redis://127.0.0.1:6379/0)"
        )
