"""GET /metrics of an app on the embedded store: the Prometheus format, exactly the families
docs/metrics.md lists, with their labels; and each increment error's outcome."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from counter_service import Settings
from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    InvalidCounterName,
    ReservedCounter,
    StoreError,
    StoreUnavailable,
)
from counter_service.flet.websockets import WebsocketStats
from counter_service.metrics import Metrics, increment_outcome
from tests.support import metric_families, metric_samples
from ui.app import create_app

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(counter_service_\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def documented() -> dict[str, tuple[str, set[str]]]:
    """Name -> (type, label names) from the table in docs/metrics.md."""
    rows = ROW.findall(DOCS.read_text())
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[str, str]]:
    """(content type, body) of GET /metrics once the loop-lag sampler has run."""
    with TestClient(create_app(Settings())) as client:
        deadline = time.monotonic() + 10
        while client.get("/metrics.json").json()["event_loop_lag_ms"]["samples"] == 0:
            assert time.monotonic() < deadline, "the loop-lag sampler never ran"
            time.sleep(0.05)
        response = client.get("/metrics")
        assert response.status_code == 200
        yield response.headers["content-type"], response.text


def test_metrics_are_served_in_the_prometheus_text_format(scraped: tuple[str, str]) -> None:
    kind, body = scraped
    assert kind.startswith("text/plain; version=")
    assert list(text_string_to_metric_families(body))  # the parser raises on anything else


def test_the_app_exposes_exactly_the_documented_families_with_their_types(
    scraped: tuple[str, str],
) -> None:
    docs = documented()
    assert len(docs) >= 20  # the table was read
    assert metric_families(scraped[1]) == {name: kind for name, (kind, _) in docs.items()}


def test_every_family_carries_the_documented_labels(scraped: tuple[str, str]) -> None:
    docs = documented()
    for family in text_string_to_metric_families(scraped[1]):
        name = family.name + "_total" if family.type == "counter" else family.name
        if name in docs:
            labels = {label for sample in family.samples for label in sample.labels}
            assert labels - {"le"} == docs[name][1], name


def test_labelled_families_export_every_label_value_from_the_start(
    scraped: tuple[str, str],
) -> None:
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped[1]):
        for sample in family.samples:
            for label in ("outcome", "task"):
                if label in sample.labels:
                    values.setdefault(f"{sample.name}:{label}", set()).add(sample.labels[label])
    assert values["counter_service_increments_total:outcome"] == {
        "ok", "corrupt", "overflow", "invalid", "busy", "unavailable", "refused", "cancelled",
        "error",
    }  # fmt: skip
    assert values["counter_service_relay_events_total:outcome"] == {
        "applied", "stale", "suspect", "invalid", "unwatched",
    }  # fmt: skip
    assert values["counter_service_background_task_up:task"] == {
        "pubsub-subscriber", "message-publisher", "counter-readback", "counter-reconcile",
        "counter-presence", "counter-flusher", "loop-lag",
    }  # fmt: skip


def test_the_websocket_families_export_every_state_and_reason_from_the_start(
    scraped: tuple[str, str],
) -> None:
    samples = metric_samples(scraped[1])
    for state in ("registered", "unregistered"):
        assert samples[("counter_service_websockets_open", frozenset({("state", state)}))] == 0
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples
        if name == "counter_service_websockets_refused_total"
    }
    assert reasons == {"bad frame", "never registered", "not reading", "flooding"}


def test_open_websockets_are_read_from_the_guard_at_each_scrape() -> None:
    stats = WebsocketStats()
    metrics = Metrics("w1")
    metrics.watch_websockets(stats)
    stats.moved(None, "unregistered")
    stats.moved(None, "unregistered")
    stats.moved("unregistered", "registered")
    samples = metric_samples(metrics.exposition().decode())
    assert samples[("counter_service_websockets_open", frozenset({("state", "registered")}))] == 1
    unregistered = frozenset({("state", "unregistered")})
    assert samples[("counter_service_websockets_open", unregistered)] == 1


def test_a_running_app_reports_itself_ready_subscribed_and_sampling_its_loop(
    scraped: tuple[str, str],
) -> None:
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(scraped[1])
        for sample in family.samples
        if not sample.labels or set(sample.labels) == {"worker", "version"}
    }
    assert samples["counter_service_ready"].value == 1
    assert samples["counter_service_subscribed"].value == 1
    assert samples["counter_service_pages"].value == 0
    assert samples["counter_service_event_loop_lag_seconds_count"].value > 0
    assert samples["counter_service_info"].labels["worker"]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (CorruptCounter("c", "k", "holds a list"), "corrupt"),
        (CounterOverflow("too big"), "overflow"),
        (InvalidCounterName("bad"), "invalid"),
        (ReservedCounter("online"), "invalid"),
        (StoreUnavailable("down"), "unavailable"),
        (StoreError("OOM"), "refused"),
        (asyncio.CancelledError(), "cancelled"),
        (RuntimeError("bug"), "error"),
    ],
)
def test_each_increment_error_has_its_outcome(error: BaseException | None, outcome: str) -> None:
    assert increment_outcome(error) == outcome
