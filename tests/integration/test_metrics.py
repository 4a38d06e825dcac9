"""The metrics move when the thing happens: a service on a real redis-server, scraped in
the Prometheus format after increments, forged events, garbage, an outage and a crash."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import RedisProcess
from counter_service.errors import (
    CorruptCounter,
    CounterOverflow,
    InvalidCounterName,
    ReservedCounter,
    StoreUnavailable,
)
from counter_service.events import INT64_MAX, CounterEvent
from counter_service.service import CounterService
from counter_service.settings import Settings
from tests.support import eventually, metric_samples


@pytest.fixture
async def service(redis_server: RedisProcess) -> AsyncIterator[CounterService]:
    async with CounterService(Settings(redis_url=redis_server.url, namespace="m")) as running:
        await eventually(lambda: running.ready, what="service ready")
        yield running


def value(service: CounterService, name: str, **labels: str) -> float:
    """One sample of the service's Prometheus exposition, parsed back."""
    samples = metric_samples(service.metrics.exposition().decode())
    return samples[(name, frozenset(labels.items()))]


def increments(service: CounterService, outcome: str) -> float:
    return value(service, "counter_service_increments_total", outcome=outcome)


def relay(service: CounterService, outcome: str) -> float:
    return value(service, "counter_service_relay_events_total", outcome=outcome)


async def test_an_increment_counts_as_ok_and_observes_its_duration(
    service: CounterService,
) -> None:
    await service.incr("clicks")
    await service.incr("clicks")
    assert increments(service, "ok") == 2
    duration = "counter_service_increment_duration_seconds"
    assert value(service, duration + "_count", outcome="ok") == 2
    assert value(service, duration + "_sum", outcome="ok") > 0
    assert value(service, duration + "_bucket", outcome="ok", le="10.0") == 2
    assert increments(service, "corrupt") == 0


async def test_failed_increments_count_by_outcome(
    service: CounterService, redis_client: Redis
) -> None:
    await redis_client.set(service.names.value("broken"), "not a number")
    await redis_client.set(service.names.value("full"), INT64_MAX)
    for name, error in [
        ("broken", CorruptCounter),
        ("full", CounterOverflow),
        ("has space", InvalidCounterName),
        ("online", ReservedCounter),
    ]:
        with pytest.raises(error):
            await service.incr(name)
    counted = {o: increments(service, o) for o in ("corrupt", "overflow", "invalid", "ok")}
    assert counted == {"corrupt": 1, "overflow": 1, "invalid": 2, "ok": 0}


async def test_an_outage_counts_unavailable_increments_and_a_resubscribe(
    service: CounterService, redis_server: RedisProcess
) -> None:
    assert value(service, "counter_service_resubscribes_total") == 0
    redis_server.stop()
    await eventually(lambda: not service.subscriber.subscribed, what="outage noticed")
    with pytest.raises(StoreUnavailable):
        await service.incr("clicks")
    assert increments(service, "unavailable") == 1
    assert value(service, "counter_service_subscribed") == 0
    assert value(service, "counter_service_ready") == 0
    assert value(service, "counter_service_pubsub_failures_total") >= 1
    redis_server.start()
    await eventually(lambda: service.ready, timeout=20, what="back")
    assert value(service, "counter_service_resubscribes_total") == 1
    assert value(service, "counter_service_subscribed") == 1


async def test_each_kind_of_event_counts_under_its_outcome(
    service: CounterService, redis_client: Redis
) -> None:
    service.watch("clicks")
    await eventually(lambda: service.latest("clicks") is not None, what="first read")
    readbacks = value(service, "counter_service_readbacks_total")
    assert readbacks >= 1
    event = await service.incr("clicks")
    await eventually(lambda: relay(service, "applied") == 1, what="applied")
    channel = service.names.counter_channel("clicks")
    await redis_client.publish(channel, event.encode())  # the one it holds
    await redis_client.publish(channel, CounterEvent("clicks", 99, 50).encode())  # a gap
    await redis_client.publish(channel, "garbage")
    await redis_client.publish(channel, CounterEvent("nobody-watches", 1, 1).encode())
    await eventually(lambda: relay(service, "unwatched") >= 1, what="all four handled")
    assert [relay(service, o) for o in ("stale", "suspect", "invalid")] == [1, 1, 1]
    await eventually(
        lambda: value(service, "counter_service_readbacks_total") > readbacks, what="read back"
    )


async def test_applied_events_observe_their_delay_since_publication(
    service: CounterService,
) -> None:
    service.watch("clicks")
    await eventually(lambda: service.latest("clicks") is not None, what="first read")
    for _ in range(3):
        await service.incr("clicks")
    delay = "counter_service_event_delivery_delay_seconds"
    await eventually(lambda: value(service, delay + "_count") == 3, what="three delays")
    assert value(service, delay + "_bucket", le="+Inf") == 3


async def test_app_messages_count_published_and_foreign(
    service: CounterService, redis_client: Redis
) -> None:
    await service.publish("topic", {"hello": 1})
    await redis_client.publish(service.names.topic_channel(None), json.dumps({"not": "ours"}))
    invalid = "counter_service_app_messages_invalid_total"
    await eventually(lambda: value(service, invalid) == 1, what="garbage dropped")
    assert value(service, "counter_service_app_messages_published_total") == 1


async def test_a_crashed_background_task_counts_its_crash_and_comes_back_up(
    service: CounterService, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(*_args: object) -> CounterEvent:
        monkeypatch.undo()  # crash once; the restarted task reports normally again
        raise RuntimeError("a bug in presence")

    monkeypatch.setattr(service.presence._store, "report_presence", crash)
    service.presence.refresh()
    crashes = "counter_service_background_task_crashes_total"
    await eventually(lambda: value(service, crashes, task="counter-presence") == 1, what="crash")
    await eventually(
        lambda: value(service, "counter_service_background_task_up", task="counter-presence") == 1,
        what="restarted",
    )
    assert value(service, crashes, task="counter-flusher") == 0
