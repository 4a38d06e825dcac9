import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from counter_service import CounterEvent, CounterUpdate, Names
from counter_service.backoff import Backoff
from counter_service.devtools.fleet import RedisProcess
from counter_service.pubsub.relay import Relay
from counter_service.redis.connections import RedisConnections
from counter_service.redis.store import CounterStore
from tests.support import eventually

NAMES = Names("relaytest")
COUNTERS = ("views", "clicks")


class Harness:
    """A relay on a real Redis, recording what it hands on."""

    def __init__(self, url: str, backoff: Backoff, probe_interval: float) -> None:
        self.connections = RedisConnections(url, max_connections=2)
        self.store = CounterStore(self.connections.commands, NAMES)
        self.updates: list[CounterUpdate] = []
        self.relay = Relay(
            new_client=self.connections.new_subscriber,
            store=self.store,
            channel=NAMES.channel,
            counters=COUNTERS,
            on_update=self.updates.append,
            backoff=backoff,
            probe_interval=probe_interval,
        )

    def shows(self, name: str, value: int) -> bool:
        return self.relay.latest.value(name) == value


@pytest.fixture
async def harness(redis_server: RedisProcess) -> AsyncIterator[Harness]:
    # A slow first retry makes "published while disconnected" certain, not a race.
    h = Harness(redis_server.url, Backoff(base=0.6, cap=1.0), probe_interval=0.1)
    await h.relay.start()
    await eventually(lambda: h.relay.subscribed, what="relay subscribed")
    yield h
    await h.relay.stop()
    await h.connections.aclose()


async def test_changes_are_relayed_in_version_order(harness: Harness) -> None:
    for _ in range(20):
        await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 20))
    versions = [u.event.version for u in harness.updates if u.event.name == "clicks"]
    assert versions == sorted(versions)


async def test_resync_after_the_subscription_is_killed(
    harness: Harness, redis_client: Redis
) -> None:
    await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 1))
    assert await redis_client.client_kill_filter(_type="pubsub") == 1
    assert await redis_client.pubsub_numsub(NAMES.channel) == [(NAMES.channel.encode(), 0)]
    for _ in range(3):
        await harness.store.incr("clicks")  # published to nobody
    await eventually(lambda: harness.shows("clicks", 4), what="resync after CLIENT KILL")
    assert harness.relay.stats.resyncs == 2
    assert harness.relay.stats.failures == 1


async def test_resync_after_a_redis_restart_accepts_the_lower_truth(
    harness: Harness, redis_server: RedisProcess
) -> None:
    for _ in range(5):
        await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 5))
    redis_server.restart()  # no persistence: every counter is gone
    await eventually(lambda: harness.relay.stats.resyncs == 2, what="resubscribed")
    assert harness.shows("clicks", 0)
    assert harness.updates[-1] == CounterUpdate(CounterEvent("clicks", 0, 0), reset=True)
    await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 1), what="new history relayed")


async def test_garbage_on_the_channel_is_counted_and_dropped(
    harness: Harness, redis_client: Redis
) -> None:
    junk = [b"\x00\xff", b"hello", b'{"name":"clicks","value":1e9,"version":1}', b"[]" * 400]
    for message in junk:
        await redis_client.publish(NAMES.channel, message)
    await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 1))
    assert harness.relay.stats.invalid == len(junk)
    assert harness.relay.stats.failures == 0


async def test_duplicates_and_stale_events_are_dropped(
    harness: Harness, redis_client: Redis
) -> None:
    await harness.store.incr("clicks")
    await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 2))
    stale = CounterEvent("clicks", 1, 1).encode()
    await redis_client.publish(NAMES.channel, stale)
    await redis_client.publish(NAMES.channel, CounterEvent("clicks", 2, 2).encode())
    await harness.store.incr("clicks")
    await eventually(lambda: harness.shows("clicks", 3))
    assert harness.relay.stats.stale == 2
    assert [u.event.value for u in harness.updates if u.event.name == "clicks"] == [0, 1, 2, 3]


async def test_a_frozen_server_is_detected_and_left(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    h = Harness(redis_server.url, Backoff(base=0.05, cap=0.2), probe_interval=0.1)
    await h.relay.start()
    try:
        await eventually(lambda: h.relay.subscribed)
        assert redis_server.pid is not None
        os.kill(redis_server.pid, signal.SIGSTOP)  # TCP stays up, nothing answers
        try:
            await eventually(lambda: not h.relay.subscribed, what="deaf connection noticed")
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        await eventually(lambda: h.relay.subscribed, what="resubscribed after thaw")
        await h.store.incr("clicks")
        await eventually(lambda: h.shows("clicks", 1))
        assert h.relay.stats.failures >= 1
    finally:
        await h.relay.stop()
        await h.connections.aclose()


async def test_stop_closes_the_subscription(harness: Harness, redis_client: Redis) -> None:
    assert await redis_client.pubsub_numsub(NAMES.channel) == [(NAMES.channel.encode(), 1)]
    await harness.relay.stop()
    await eventually(lambda: True)
    await asyncio.sleep(0.05)
    assert await redis_client.pubsub_numsub(NAMES.channel) == [(NAMES.channel.encode(), 0)]
