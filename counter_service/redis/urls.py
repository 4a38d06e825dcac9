"""Redis URLs: a single server, a Sentinel-managed master, or a Cluster's seed nodes.

    redis://[user:password@]host:port[/db][?query]        rediss:// for TLS, unix:///path
    redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB][?query]
    redis+cluster://[user:password@]host:port[,host:port...][?query]

The Sentinel form is the redis-sentinel-url package's convention: the user and password
are the master's (and its replicas'); the sentinels are reached without them. `rediss+`
in front of either means TLS. Query arguments go to redis-py's connections as
`redis://` URLs pass them (for example `ssl_ca_certs=/path/ca.pem`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

Kind = Literal["server", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
SCHEMES = tuple(_SCHEMES)
DEFAULT_PORT = {"server": 6379, "sentinel": 26379, "cluster": 6379}


class InvalidRedisUrl(ValueError):
    """A Redis URL this library cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to reach it."""

    kind: Kind
    url: str
    """The URL as given (a single server's goes to redis-py unchanged)."""
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    """Sentinels or cluster seed nodes (empty for a single server)."""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    """Query arguments, for redis-py's connections."""


def parse_redis_url(url: str) -> RedisTarget:
    """The target of `url`; `InvalidRedisUrl` if it is not one of the forms above."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise InvalidRedisUrl(f"scheme must be one of {', '.join(SCHEMES)}")
    kind, tls = _SCHEMES[scheme]
    if kind == "server":
        return RedisTarget("server", url, tls=tls)
    parts = urlsplit(url)
    hosts = _hosts(parts.netloc.rpartition("@")[2], DEFAULT_PORT[kind])
    service, db = _path(parts.path, kind)
    return RedisTarget(
        kind,
        url,
        tls=tls,
        hosts=hosts,
        service=service,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        options=dict(parse_qsl(parts.query)),
    )


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise InvalidRedisUrl(f"{item.strip()!r} is not host:port")
        try:
            hosts.append((host.strip("[]"), int(port) if port else default_port))
        except ValueError:
            raise InvalidRedisUrl(f"{item.strip()!r}: the port is not a number") from None
    return tuple(hosts)


def _path(path: str, kind: Kind) -> tuple[str, int]:
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            raise InvalidRedisUrl("a cluster has no database numbers or service: drop the path")
        return "", 0
    if not parts or len(parts) > 2:
        raise InvalidRedisUrl("a Sentinel URL ends in /SERVICE or /SERVICE/DB")
    try:
        return parts[0], int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise InvalidRedisUrl(f"database {parts[1]!r} is not a number") from None
