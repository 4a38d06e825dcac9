"""Redis URLs: a single server, a Sentinel-managed master, or a Cluster's seed nodes.

    redis://[user:password@]host[:port][/db][?query]        rediss:// for TLS
    unix://[user:password@]/path/to/socket[?db=N&...]
    redis+sentinel://[user:password@]host[:port][,host[:port]...]/SERVICE[/DB][?query]
    redis+cluster://[user:password@]host[:port][,host[:port]...][?query]

The Sentinel form is the redis-sentinel-url package's convention: the user and password
are the master's (and its replicas'); the sentinels are reached without them. `rediss+`
in front of either means TLS. Hosts are names or addresses, IPv6 ones in brackets
(`[::1]:6379`); credentials may be percent-encoded. Ports and database numbers are ASCII
digits (a database at most `MAX_DB`); a space, a control character, a `#` or a `%` that
does not start an escape of UTF-8 is refused rather than trimmed, dropped or kept.

The query takes redis-py's connection options by their redis-py names, and only those
that mean something for that kind of connection (`QUERY_OPTIONS`); each is converted to
its type here, so a typo or a bad value is refused with a message that names it instead
of failing at every connection attempt. TLS options need a TLS scheme.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote

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
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
# ASCII only: str.isdigit() and int() take other scripts' digits too ("٣" is 3).
_DIGITS_RE = re.compile(r"[0-9]+")
_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]+)?")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_DB = 2**31 - 2
"""The highest database number Redis can have (`databases` is at most INT_MAX)."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class InvalidRedisUrl(ValueError):
    """A Redis URL this library cannot use; the message says what is wrong."""


class InvalidRedisOption(InvalidRedisUrl):
    """The URL's form is right, but one of its query options is not (the message names it)."""


Parser = Callable[[str], object]


def _positive_float(text: str) -> float:
    if not _DECIMAL_RE.fullmatch(text.removeprefix("-")):
        raise ValueError("must be a number")
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _non_negative_int(text: str) -> int:
    if not _DIGITS_RE.fullmatch(text):
        raise ValueError("must be a whole number, 0 or more")
    return int(text)


def _db_number(text: str) -> int:
    number = _non_negative_int(text)
    if number > MAX_DB:
        raise ValueError(f"is past Redis's last database number, {MAX_DB}")
    return number


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"must be one of {', '.join(_TRUE + _FALSE)}")


def _file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError("is not a readable file")
    return text


def _directory(text: str) -> str:
    if not os.path.isdir(text):
        raise ValueError("is not a directory")
    return text


def _cert_reqs(text: str) -> str:
    if text not in ("none", "optional", "required"):
        raise ValueError("must be none, optional or required")
    return text


def _tls_version(text: str) -> ssl.TLSVersion:
    versions = {"TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3}
    if text not in versions:
        raise ValueError(f"must be one of {', '.join(versions)}")
    return versions[text]


_SOCKET: dict[str, Parser] = {
    "socket_timeout": _positive_float,
    "socket_connect_timeout": _positive_float,
    "health_check_interval": _non_negative_int,
}
_TCP: dict[str, Parser] = {**_SOCKET, "socket_keepalive": _bool}
TLS_OPTIONS: dict[str, Parser] = {
    "ssl_ca_certs": _file,
    "ssl_ca_path": _directory,
    "ssl_certfile": _file,
    "ssl_keyfile": _file,
    "ssl_password": str,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": _bool,
    "ssl_ciphers": str,
    "ssl_min_version": _tls_version,
}
"""redis-py's `SSLConnection` arguments, as a `rediss` URL's query may give them."""
# redis-py's asyncio RedisCluster takes every TLS argument but these two.
_CLUSTER_TLS = {k: v for k, v in TLS_OPTIONS.items() if k not in ("ssl_ca_path", "ssl_password")}
QUERY_OPTIONS: dict[str, dict[str, Parser]] = {
    "redis": {**_TCP, "db": _db_number},
    "rediss": {**_TCP, "db": _db_number, **TLS_OPTIONS},
    "unix": {**_SOCKET, "db": _db_number},
    "redis+sentinel": _TCP,
    "rediss+sentinel": {**_TCP, **TLS_OPTIONS},
    "redis+cluster": _TCP,
    "rediss+cluster": {**_TCP, **_CLUSTER_TLS},
}
"""The query options each scheme accepts, with the parser that converts each value."""


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to reach it."""

    kind: Kind
    url: str
    """The URL as given."""
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    """The server (one), the sentinels, or the cluster's seed nodes; empty for a socket."""
    socket_path: str | None = None
    """A `unix://` URL's socket."""
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    """Query options, converted to their types, for redis-py's connections."""


def parse_redis_url(url: str) -> RedisTarget:
    """The target of `url`; `InvalidRedisUrl` if it is not one of the forms above."""
    _check_characters(url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise InvalidRedisUrl(f"scheme must be one of {', '.join(SCHEMES)}")
    kind, tls = _SCHEMES[scheme]
    location, path, query = _split(url)
    userinfo, _, netloc = location.rpartition("@")
    username, password = _credentials(userinfo)
    options = _options(scheme, query)
    if scheme == "unix":
        return RedisTarget(
            kind,
            url,
            socket_path=_socket_path(netloc, path),
            db=_take_db(options) or 0,
            username=username,
            password=password,
            options=options,
        )
    hosts = _hosts(netloc, DEFAULT_PORT[kind], several=kind != "server")
    service, db = _path(path, kind, options)
    return RedisTarget(
        kind,
        url,
        tls=tls,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        options=options,
    )


def _check_characters(url: str) -> None:
    """Refuse what urllib would pass over in silence: a space (a host "h " would be
    trimmed), a `#` (everything after it dropped, a password's end included) and a `%`
    that is not an escape of UTF-8 (kept as is, or turned into U+FFFD)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidRedisUrl(
            "the URL has a space or a control character: remove it (in a password: %20)"
        )
    if "#" in url:
        raise InvalidRedisUrl("a Redis URL has no #fragment (a '#' in a password is %23)")
    if _BAD_ESCAPE_RE.search(url):  # not shown: it may be in the password
        raise InvalidRedisUrl("a '%' in the URL starts no percent escape (a '%' itself is %25)")
    try:
        unquote(url, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRedisUrl("a percent escape in the URL is not UTF-8") from None


def _split(url: str) -> tuple[str, str, str]:
    """The network location, path and query of `url` (urllib's own split refuses some
    bad hosts with messages of its own, and knows nothing of host lists)."""
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    location, slash, path = rest.partition("/")
    return location, slash + path, query


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None


def _options(scheme: str, query: str) -> dict[str, object]:
    allowed = QUERY_OPTIONS[scheme]
    options: dict[str, object] = {}
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise InvalidRedisOption(_unknown_option(scheme, name))
        if name in options:
            raise InvalidRedisOption(f"query option {name!r} is given twice")
        try:
            options[name] = allowed[name](text)
        except ValueError as exc:
            raise InvalidRedisOption(f"query option {name}={text!r}: {_reason(exc)}") from None
    return options


def _unknown_option(scheme: str, name: str) -> str:
    if name in TLS_OPTIONS and not _SCHEMES[scheme][1]:
        tls_scheme = "rediss" + scheme.removeprefix("redis") if scheme != "unix" else "rediss"
        return f"query option {name!r} needs TLS: use {tls_scheme}://"
    known = ", ".join(sorted(QUERY_OPTIONS[scheme]))
    return f"unknown query option {name!r} for {scheme}:// (known: {known})"


def _reason(error: ValueError) -> str:
    text = str(error)
    return text if text.startswith(("must", "is")) else "must be a number"


def _socket_path(netloc: str, path: str) -> str:
    if netloc:
        raise InvalidRedisUrl("a unix:// URL names a socket: unix:///path/to/redis.sock")
    if not path.startswith("/") or path == "/":
        raise InvalidRedisUrl("a unix:// URL needs the socket's absolute path")
    return unquote(path)


def _hosts(netloc: str, default_port: int, several: bool) -> tuple[tuple[str, int], ...]:
    items = netloc.split(",")
    if len(items) > 1 and not several:
        raise InvalidRedisUrl("one host only: list several with redis+sentinel or redis+cluster")
    return tuple(_host(item, default_port) for item in items)


def _host(item: str, default_port: int) -> tuple[str, int]:
    if not item:
        raise InvalidRedisUrl("a host is missing (for example 127.0.0.1:6379)")
    if item.startswith("["):
        address, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidRedisUrl(f"{item!r} is not [IPv6 address]:port")
        _check_ipv6(address, item)
        return address, _port(rest[1:], item) if rest else default_port
    if item.count(":") > 1:
        raise InvalidRedisUrl(f"{item!r}: put an IPv6 address in brackets, as [::1]:6379")
    host, colon, port = item.partition(":")
    if not _HOSTNAME_RE.fullmatch(host):
        raise InvalidRedisUrl(f"{host!r} is not a host name or address")
    return host, _port(port, item) if colon else default_port


def _check_ipv6(address: str, item: str) -> None:
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise InvalidRedisUrl(f"{item!r}: {address!r} is not an IPv6 address") from None


def _port(text: str, item: str) -> int:
    if not _DIGITS_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise InvalidRedisUrl(f"{item!r}: the port must be a number from 1 to 65535")
    return int(text)


def _path(path: str, kind: Kind, options: dict[str, object]) -> tuple[str, int]:
    parts = [unquote(p) for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            raise InvalidRedisUrl("a cluster has no database numbers or service: drop the path")
        return "", 0
    if kind == "server":
        return "", _server_db(parts, options)
    if not parts or len(parts) > 2:
        raise InvalidRedisUrl("a Sentinel URL ends in /SERVICE or /SERVICE/DB")
    return parts[0], _db(parts[1]) if len(parts) == 2 else 0


def _server_db(parts: list[str], options: dict[str, object]) -> int:
    if len(parts) > 1:
        raise InvalidRedisUrl("the path is the database number alone, as /0")
    queried = _take_db(options)
    if parts and queried is not None:
        raise InvalidRedisUrl("give the database number once: in the path or as ?db=")
    return _db(parts[0]) if parts else queried or 0


def _take_db(options: dict[str, object]) -> int | None:
    """The `db` query option, removed from the options (it is not a connection's)."""
    db = options.pop("db", None)
    return db if isinstance(db, int) else None


def _db(text: str) -> int:
    if not _DIGITS_RE.fullmatch(text):
        raise InvalidRedisUrl(f"database {text!r} is not a number, 0 or more")
    if int(text) > MAX_DB:
        raise InvalidRedisUrl(f"database {text} is past Redis's last database number, {MAX_DB}")
    return int(text)
