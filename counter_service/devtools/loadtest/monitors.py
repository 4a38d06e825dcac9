"""Watching from outside while the load runs: Redis connections and totals, each server's
event-loop lag (GET /metrics.json), and this process's own event-loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from redis.asyncio import Redis

from counter_service.devtools.loadtest.recorder import NUMBERS
from counter_service.devtools.loadtest.targets import http_url
from counter_service.events import CounterEvent
from counter_service.names import Names
from counter_service.redis.store import CounterStore
from counter_service.stats import histogram_quantile

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
REDIS_EVERY_S = 0.5
METRICS_EVERY_S = 1.0
METRICS_TIMEOUT_S = 5.0
LAG_EVERY_S = 0.1
# The JSON view: it has the exact lag summary of the last minute besides the histogram
# (GET /metrics is the Prometheus format, with the histogram only).
METRICS_PATH = "/metrics.json"
LAG_FIELD = "event_loop_lag_ms"
HISTOGRAM_FIELD = "event_loop_lag_histogram"

# Names the load test's own Redis connections so it can leave them out of its counts.
OWN_NAME = "counter-loadtest"


async def read_counters(redis_url: str, namespace: str) -> dict[str, int]:
    """The stored value of every page number (a missing key reads as 0)."""
    client = Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, client_name=OWN_NAME)
    try:
        results = await CounterStore(client, Names(namespace)).read_many(NUMBERS)
    finally:
        await client.aclose()
    return {r.name: r.value for r in results if isinstance(r, CounterEvent)}


async def repeat(every: float, step: Callable[[], Awaitable[bool]]) -> None:
    """Run `step` every `every` seconds until it returns False (or the task is cancelled)."""
    while await step():  # noqa: ASYNC110  # a sampling period, not waiting for a condition
        await asyncio.sleep(every)


@dataclass
class RedisConnections:
    """Max client connections seen by CLIENT LIST, not counting the load test's own."""

    url: str
    samples: int = 0
    max_total: int = 0
    max_pubsub: int = 0
    last_total: int = 0
    errors: int = 0
    _client: Redis | None = None

    async def step(self) -> bool:
        if self._client is None:
            self._client = Redis.from_url(
                self.url, socket_timeout=REDIS_TIMEOUT_S, client_name=OWN_NAME
            )
        try:
            clients = await self._client.client_list()
        except Exception:
            self.errors += 1
            logger.debug("CLIENT LIST failed", exc_info=True)
            return True
        self._record(clients)
        return True

    def _record(self, clients: list[dict[str, Any]]) -> None:
        clients = [c for c in clients if c.get("name") != OWN_NAME]
        pubsub = sum(1 for c in clients if int(c.get("sub", 0) or 0) + int(c.get("psub", 0) or 0))
        self.samples += 1
        self.last_total = len(clients)
        self.max_total = max(self.max_total, self.last_total)
        self.max_pubsub = max(self.max_pubsub, pubsub)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def fetch_json(url: str) -> tuple[int, str, Any]:
    """GET `url`: (status, content type, parsed JSON or None). Raises OSError if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as reply:
            kind = reply.headers.get_content_type()
            body = reply.read(1 << 20)
            status = int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), None
    if kind != "application/json":
        return status, kind, None
    try:
        return status, kind, json.loads(body)
    except ValueError:
        return status, kind, None


def lag_reading(field: Any) -> tuple[float, float] | None:
    """(p99, max) in ms from an `event_loop_lag_ms` field: a number, or a summary dict
    with `max` (and maybe `p99`) as GET /metrics.json serves it; None if neither."""
    if _is_number(field):
        return float(field), float(field)
    top = field.get("max") if isinstance(field, dict) else None
    if not _is_number(top):
        return None
    p99 = field.get("p99")
    return float(p99 if _is_number(p99) else top), float(top)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class ServerLag:
    """One server's event-loop lag from GET /metrics.json, or why it is not available."""

    url: str
    status: str = "not polled"
    p99_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    missed: int = 0
    histograms: list[tuple[float, Any]] = field(default_factory=list)

    async def step(self) -> bool:
        try:
            url = http_url(self.url) + METRICS_PATH
            code, kind, body = await asyncio.to_thread(fetch_json, url)
        except OSError as exc:  # busy or gone: a busy server is when lag matters most
            self.missed += 1
            self.status = self.status if self.max_ms else f"unreachable: {exc}"
            return True
        reading = lag_reading(body.get(LAG_FIELD)) if isinstance(body, dict) else None
        if code == 200 and reading is not None:
            if isinstance(body, dict) and HISTOGRAM_FIELD in body:
                self.histograms.append((time.monotonic(), body[HISTOGRAM_FIELD]))
            self.p99_ms.append(reading[0])
            self.max_ms.append(reading[1])
            self.status = "exposed"
            return True
        self.status = _not_exposed(code, kind, body)
        return False  # polling again would not change the answer


def phase_lag(histograms: list[tuple[float, Any]], start: float, end: float) -> Any:
    """Lag between `start` and `end` from the cumulative histograms read closest around
    them (inside the phase when a poll was missed): {"p50_le_ms", "p99_le_ms", "samples",
    "window_s"} with bucket upper bounds, or None without two readings that overlap it."""
    before = [(t, h) for t, h in histograms if t <= start] or histograms[:1]
    after = [(t, h) for t, h in histograms if t >= end] or histograms[-1:]
    if not before or not after or after[0][0] <= before[-1][0] or after[0][0] <= start:
        return None
    (opened, first), (closed, last) = before[-1], after[0]
    try:
        bounds = [float(b) for b in last["le_ms"]]
        delta = [
            int(b) - int(a) for a, b in zip(first["cumulative"], last["cumulative"], strict=True)
        ]
    except (KeyError, TypeError, ValueError):
        return None  # not the histogram this tool knows
    return {
        "p50_le_ms": histogram_quantile(bounds, delta, 50),
        "p99_le_ms": histogram_quantile(bounds, delta, 99),
        "samples": delta[-1],
        "window_s": round(min(closed, end) - max(opened, start), 3),
    }


def _not_exposed(code: int, kind: str, body: Any) -> str:
    if code == 404:
        hint = "a load balancer? give each replica with --metrics-url"
        return f"not exposed (GET {METRICS_PATH}: HTTP 404; {hint})"
    if code != 200:
        return f"not exposed (GET {METRICS_PATH}: HTTP {code})"
    if body is None:
        return f"not exposed (GET {METRICS_PATH}: 200 {kind}, not JSON)"
    return f"not exposed (GET {METRICS_PATH} has no {LAG_FIELD})"


@dataclass
class LoopLag:
    """This process's event-loop lag: how late a 100 ms sleep wakes up."""

    max_ms: float = 0.0
    samples: int = 0

    async def step(self) -> bool:
        started = time.monotonic()
        await asyncio.sleep(LAG_EVERY_S)
        late = (time.monotonic() - started - LAG_EVERY_S) * 1000.0
        self.max_ms = max(self.max_ms, late)
        self.samples += 1
        return True


class Monitors:
    """Every monitor of a run as background tasks, started and stopped together."""

    def __init__(self, redis_url: str | None, urls: list[str]) -> None:
        self.redis = None if redis_url is None else RedisConnections(redis_url)
        self.servers = [ServerLag(url) for url in urls]
        self.loop = LoopLag()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._spawn(repeat(0.0, self.loop.step))
        for server in self.servers:
            self._spawn(repeat(METRICS_EVERY_S, server.step))
        if self.redis is not None:
            self._spawn(repeat(REDIS_EVERY_S, self.redis.step))

    def _spawn(self, job: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(job))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
