"""Where the load goes: the given URLs or a spawned local fleet, and which process each is."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from counter_service.devtools.fleet import Fleet

HTTP_TIMEOUT_S = 2.0
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Target:
    """One URL sessions connect to, and a label of the server process behind it."""

    url: str
    process: str


@dataclass(frozen=True)
class Targets:
    """The targets of a run; `split_known` says whether `process` labels can be trusted."""

    targets: tuple[Target, ...]
    split_known: bool
    redis_url: str | None
    fleet: dict[str, object] = field(default_factory=dict)


def http_url(url: str) -> str:
    """The http(s) form of a base URL (ws -> http, wss -> https), without a trailing /."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def worker_id(url: str) -> str | None:
    """The `worker` that GET /healthz names, or None if it does not answer that way."""
    try:
        with urllib.request.urlopen(http_url(url) + "/healthz", timeout=HTTP_TIMEOUT_S) as reply:
            body = json.loads(reply.read(65536))
    except (OSError, urllib.error.URLError, ValueError):
        return None
    worker = body.get("worker") if isinstance(body, dict) else None
    return worker if isinstance(worker, str) else None


def given_targets(urls: tuple[str, ...], redis_url: str | None) -> Targets:
    """Targets from --target: with one URL (maybe a load balancer) the split is unknown;
    with several, targets whose /healthz names the same worker are one process."""
    if len(urls) == 1:
        return Targets((Target(urls[0], UNKNOWN),), split_known=False, redis_url=redis_url)
    labels = [worker_id(url) or http_url(url) for url in urls]
    targets = tuple(Target(u, label) for u, label in zip(urls, labels, strict=True))
    return Targets(targets, split_known=True, redis_url=redis_url)


def fleet_targets(fleet: Fleet) -> Targets:
    """Targets of a started fleet, one process per server, with every PID recorded."""
    info: dict[str, object] = {
        "redis_pid": fleet.redis.pid,
        "redis_url": fleet.redis.url,
        "server_pids": [server.pid for server in fleet.servers],
        "server_urls": [server.url for server in fleet.servers],
        "log_dir": str(fleet.log_dir),
    }
    targets = tuple(Target(s.url, f"pid {s.pid}") for s in fleet.servers)
    return Targets(targets, split_known=True, redis_url=fleet.redis.url, fleet=info)


@contextmanager
def spawned(servers: int) -> Iterator[Fleet]:
    """A started local fleet, stopped (by PID) however the block ends, Ctrl-C included."""
    fleet = Fleet(servers)
    try:
        fleet.start()  # stops what it started if it fails
        yield fleet
    finally:
        with _no_interrupts():
            fleet.stop()


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C meanwhile: a second one must not cut the (bounded) teardown short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)  # SIGTERM follows SIGINT (see cli)
