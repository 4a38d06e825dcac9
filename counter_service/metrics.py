"""Prometheus metrics of one process's service, in a registry of its own.

Only three things are measured as they happen, each one histogram observation: an
increment's duration, a counter event's delay from publication to the relay, and the
event loop's lag. Everything else is a count the service keeps anyway, read when
Prometheus scrapes (`ServiceCollector`), so metrics add nothing else to the hot paths.
Every family is listed, with what to alert on, in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from counter_service.errors import (
    Busy,
    CorruptCounter,
    CounterOverflow,
    InvalidCounterName,
    ReservedCounter,
    StoreError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from counter_service.flet.websockets import WebsocketStats
    from counter_service.service import CounterService

PREFIX = "counter_service_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds. An increment is one round trip (sub-millisecond on a LAN) unless Redis is slow
# or gone; past 10 s only the count matters.
INCREMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Checked in order: StoreUnavailable is a StoreError.
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (CorruptCounter, "corrupt"),
    (CounterOverflow, "overflow"),
    (InvalidCounterName, "invalid"),
    (ReservedCounter, "invalid"),
    (Busy, "busy"),
    (StoreUnavailable, "unavailable"),
    (StoreError, "refused"),
    # The caller stopped waiting (a session closed mid-click): not the service's fault.
    (asyncio.CancelledError, "cancelled"),
)
INCREMENT_OUTCOMES = (
    "ok", "corrupt", "overflow", "invalid", "busy", "unavailable", "refused", "cancelled",
    "error",
)  # fmt: skip
RELAY_OUTCOMES = ("applied", "stale", "suspect", "invalid", "unwatched")
REFUSAL_REASONS = ("bad frame", "never registered", "not reading", "flooding")
WEBSOCKET_STATES = ("registered", "unregistered")


def increment_outcome(error: BaseException | None) -> str:
    """The `outcome` label of an increment that raised `error` (None: it succeeded)."""
    if error is None:
        return "ok"
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            return outcome
    return "error"  # a bug somewhere


def package_version() -> str:
    """The installed version of counter-service, or "unknown" when run from a bare tree."""
    try:
        return metadata.version("counter-service")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The Prometheus families of one `CounterService`.

    Each instance has its own `CollectorRegistry`, not prometheus_client's global one:
    several services (tests, several apps) can live in one process."""

    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry()
        self.increment_duration = Histogram(
            PREFIX + "increment_duration_seconds",
            "Time CounterService.incr took, from the call to its result or error.",
            ["outcome"],
            registry=self.registry,
            buckets=INCREMENT_BUCKETS,
        )
        # Resolved once: labels() costs more than the observation itself.
        self._increments = {o: self.increment_duration.labels(o) for o in INCREMENT_OUTCOMES}
        self.delivery_delay = _delivery_delay(self.registry)
        self.loop_lag = loop_lag_histogram(self.registry)
        _info(self.registry, worker_id)

    def observe_increment(self, started: float, error: BaseException | None = None) -> None:
        """Record an increment begun at `time.perf_counter()` value `started`."""
        self._increments[increment_outcome(error)].observe(time.perf_counter() - started)

    def observe_delivery_delay(self, seconds: float) -> None:
        """Record how long after its publication the relay applied a counter event."""
        self.delivery_delay.observe(seconds)

    def watch(self, service: CounterService) -> None:
        """Expose `service`'s own counts and states at every scrape."""
        self.registry.register(ServiceCollector(service, self.increment_duration))

    def watch_websockets(self, stats: WebsocketStats) -> None:
        """Expose what the websocket guard refused and throttled, at every scrape."""
        self.registry.register(WebsocketCollector(stats))

    def count_pages(self, pages: Callable[[], int], sessions: Callable[[], int]) -> None:
        """Expose `pages()` (the pages this process keeps current) and `sessions()`
        (the Flet sessions it holds) at every scrape."""
        gauge = Gauge(
            PREFIX + "pages",
            "Pages of this process that receive counter updates.",
            registry=self.registry,
        )
        gauge.set_function(pages)
        held = Gauge(
            PREFIX + "flet_sessions",
            "Flet sessions this process holds: live, and departed until they expire.",
            registry=self.registry,
        )
        held.set_function(sessions)

    def exposition(self) -> bytes:
        """Every family in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _delivery_delay(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        PREFIX + "event_delivery_delay_seconds",
        "Time from Redis publishing a counter event to this worker's relay applying it."
        " Compares Redis's clock with this worker's: clock skew shifts it (clamped at 0).",
        registry=registry,
        buckets=DELAY_BUCKETS,
    )


def loop_lag_histogram(registry: CollectorRegistry | None) -> Histogram:
    """The event-loop lag histogram, in `registry` (None: in none, for a sampler alone)."""
    return Histogram(
        PREFIX + "event_loop_lag_seconds",
        "How late the event loop woke a task that slept 0.1 s; every callback waits as long.",
        registry=registry,
        buckets=LAG_BUCKETS,
    )


def _info(registry: CollectorRegistry, worker_id: str) -> None:
    info = Gauge(
        PREFIX + "info",
        "Always 1; its labels name this worker and the counter-service version.",
        ["worker", "version"],
        registry=registry,
    )
    info.labels(worker_id, package_version()).set(1)


class ServiceCollector:
    """Reads the service's counts at scrape time, on the event loop that changes them."""

    def __init__(self, service: CounterService, increment_duration: Histogram) -> None:
        self._service = service
        self._increment_duration = increment_duration

    def collect(self) -> Iterator[Metric]:
        """Every family built from the service's stats, as they are now."""
        yield self._increments()
        yield from _relay(self._service)
        yield from _subscription(self._service)
        yield from _messages(self._service)
        yield from _health(self._service)

    def _increments(self) -> Metric:
        # The histogram's counts are the increments: one observation per call, not two.
        family = _labelled_counter("increments", "Calls of CounterService.incr.", "outcome")
        for metric in self._increment_duration.collect():
            for sample in metric.samples:
                if sample.name.endswith("_count"):
                    family.add_metric([sample.labels["outcome"]], sample.value)
        return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=[label])


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _relay(service: CounterService) -> Iterator[Metric]:
    stats = service.counters.stats
    events = _labelled_counter("relay_events", "Counter events the relay received.", "outcome")
    for outcome in RELAY_OUTCOMES:
        events.add_metric([outcome], getattr(stats, outcome))
    yield events
    yield _counter("readbacks", "Counters read back from Redis.", stats.readbacks)
    yield _counter("stale_reads", "Read-backs that newer events overtook.", stats.stale_reads)
    yield _counter("readback_failures", "Read-back batches that failed.", stats.read_failures)


def _subscription(service: CounterService) -> Iterator[Metric]:
    stats, subscribed = service.subscriber.stats, service.subscriber.subscribed
    again = max(0, stats.subscribes - 1)
    yield _counter("resubscribes", "Pub/sub subscriptions made again after a loss.", again)
    yield _counter("pubsub_failures", "Pub/sub connections lost or refused.", stats.failures)
    errors = stats.handler_errors
    yield _counter("pubsub_handler_errors", "Channel messages whose handler raised.", errors)
    yield _gauge("subscribed", "1 while the pub/sub subscription is up.", subscribed)


def _messages(service: CounterService) -> Iterator[Metric]:
    published, invalid = service.publisher.published, service.invalid_messages
    yield _counter("app_messages_published", "App messages Redis took from here.", published)
    yield _counter("app_messages_invalid", "Foreign messages on the app channel.", invalid)


def _health(service: CounterService) -> Iterator[Metric]:
    yield _gauge("live_connections", "Open websocket connections.", service.presence.live)
    yield _gauge("ready", "1 while subscribed and every background task runs.", service.ready)
    up = GaugeMetricFamily(PREFIX + "background_task_up", "1 while the task runs.", labels=["task"])
    crashes = _labelled_counter("background_task_crashes", "Crashes of the task.", "task")
    for task in service.tasks:
        up.add_metric([task.name], task.up)
        crashes.add_metric([task.name], task.crashes)
    yield up
    yield crashes


class WebsocketCollector:
    """Reads the websocket guard's counts at scrape time."""

    def __init__(self, stats: WebsocketStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Open websockets by state, refused connections by reason, and refused events."""
        open_now = GaugeMetricFamily(
            PREFIX + "websockets_open",
            "Websockets being handled, by state: registered, or not yet.",
            labels=["state"],
        )
        for state in WEBSOCKET_STATES:
            open_now.add_metric([state], self._stats.open.get(state, 0))
        yield open_now
        refused = _labelled_counter(
            "websockets_refused", "Websocket connections closed by the guard.", "reason"
        )
        for reason in REFUSAL_REASONS:
            refused.add_metric([reason], self._stats.rejected.get(reason, 0))
        yield refused
        throttled = self._stats.throttled_events
        yield _counter("events_throttled", "Control events refused by the rate limit.", throttled)
