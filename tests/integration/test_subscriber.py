"""The generic subscriber against a real redis-server: reconnects, deafness, callbacks."""

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from counter_service.backoff import Backoff
from counter_service.devtools.fleet import RedisProcess
from counter_service.pubsub.subscriber import Subscriber
from counter_service.redis.connections import ServerConnections
from counter_service.redis.text import BRIEF_LIMIT, brief
from counter_service.settings import Settings
from tests.support import eventually

CHANNELS = ("subtest:a", "subtest:b")


class Harness:
    def __init__(self, url: str, probe_interval: float = 0.1, base: float = 0.05) -> None:
        self.connections = ServerConnections(Settings(redis_url=url, max_connections=1), "t")
        self.subscriber = Subscriber(
            self.connections.new_pubsub,
            backoff=Backoff(base=base, cap=max(base, 0.2)),
            probe_interval=probe_interval,
        )
        self.received: list[tuple[str, bytes]] = []
        self.subscribes: list[bool] = []
        self.states: list[bool] = []
        for channel in CHANNELS:
            self.subscriber.route(channel, lambda data, c=channel: self.received.append((c, data)))
        self.subscriber.on_subscribed(self.on_subscribed)
        self.subscriber.on_state(self.states.append)

    async def on_subscribed(self, resubscribed: bool) -> None:
        self.subscribes.append(resubscribed)

    async def close(self) -> None:
        await self.subscriber.stop()
        await self.connections.aclose()


@pytest.fixture
async def harness(redis_server: RedisProcess) -> AsyncIterator[Harness]:
    h = Harness(redis_server.url, base=0.3)
    await h.subscriber.start()
    await eventually(lambda: h.subscriber.subscribed, what="subscribed")
    yield h
    await h.close()


async def test_messages_reach_the_handler_of_their_channel(
    harness: Harness, redis_client: Redis
) -> None:
    await redis_client.publish("subtest:a", "1")
    await redis_client.publish("subtest:b", "2")
    await redis_client.publish("subtest:other", "3")
    await eventually(lambda: len(harness.received) == 2, what="two messages")
    assert harness.received == [("subtest:a", b"1"), ("subtest:b", b"2")]
    assert harness.subscribes == [False]
    assert harness.states == [True]


async def test_a_killed_subscription_comes_back_and_says_it_was_resubscribed(
    harness: Harness, redis_client: Redis
) -> None:
    assert await redis_client.client_kill_filter(_type="pubsub") == 1
    await eventually(lambda: harness.subscribes == [False, True], what="resubscribed")
    assert harness.states == [True, False, True]
    assert harness.subscriber.stats.failures == 1
    await redis_client.publish("subtest:a", "after")
    await eventually(lambda: harness.received == [("subtest:a", b"after")])


async def test_a_frozen_server_is_detected_and_left(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    h = Harness(redis_server.url, probe_interval=0.1)
    await h.subscriber.start()
    try:
        await eventually(lambda: h.subscriber.subscribed)
        assert redis_server.pid is not None
        os.kill(redis_server.pid, signal.SIGSTOP)  # TCP stays up, nothing answers
        try:
            await eventually(lambda: not h.subscriber.subscribed, what="deaf connection noticed")
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        await eventually(lambda: h.subscriber.subscribed, what="resubscribed after thaw")
        assert h.subscriber.stats.failures >= 1
    finally:
        await h.close()


async def test_an_outage_is_one_warning_per_attempt_without_tracebacks(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = Harness(redis_server.url)
    await h.subscriber.start()
    try:
        await eventually(lambda: h.subscriber.subscribed)
        redis_server.stop()
        await eventually(lambda: h.subscriber.stats.failures >= 3, what="three failed attempts")
        redis_server.start()
        await eventually(lambda: h.subscriber.subscribed, what="back")
    finally:
        await h.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == h.subscriber.stats.failures  # one line per attempt, no more
    lost, *attempts = [r.getMessage() for r in warnings]
    assert lost.startswith("pub/sub connection to Redis lost (")
    assert all(a.startswith("cannot reach Redis (") for a in attempts)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in warnings)
    [back] = [r for r in caplog.records if "is back" in r.getMessage()]
    assert back.levelno == logging.INFO


def test_an_error_is_briefed_on_one_short_line() -> None:
    sentinels = ", ".join([f"<redis.asyncio.client.Redis({'x' * 900})> - ConnectionError()"] * 2)
    error = ConnectionError(f"No master found for 'mymaster' : {sentinels}")
    assert brief(error) == "No master found for 'mymaster'"
    assert brief(ConnectionError("a\nb   c")) == "a b c"
    long = brief(RuntimeError("y" * 1000))
    assert len(long) == BRIEF_LIMIT
    assert long.endswith("...")
    assert brief(TimeoutError()) == "TimeoutError"


async def test_a_failing_handler_does_not_cost_the_subscription(
    harness: Harness, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(_data: bytes) -> None:
        raise RuntimeError("handler bug")

    harness.subscriber._handlers[b"subtest:a"] = boom
    await redis_client.publish("subtest:a", "x")
    await redis_client.publish("subtest:b", "y")
    await eventually(lambda: harness.received == [("subtest:b", b"y")])
    assert harness.subscriber.stats.handler_errors == 1
    assert harness.subscriber.subscribed
    [record] = [r for r in caplog.records if "handling a message" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


async def test_stop_closes_the_subscription(harness: Harness, redis_client: Redis) -> None:
    assert await redis_client.pubsub_numsub(CHANNELS[0]) == [(CHANNELS[0].encode(), 1)]
    await harness.subscriber.stop()
    for _ in range(50):
        if await redis_client.pubsub_numsub(CHANNELS[0]) == [(CHANNELS[0].encode(), 0)]:
            break
        await asyncio.sleep(0.02)
    assert await redis_client.pubsub_numsub(CHANNELS[0]) == [(CHANNELS[0].encode(), 0)]


async def test_channels_added_while_running_are_confirmed_then_delivered(
    harness: Harness, redis_client: Redis
) -> None:
    confirmed: list[str] = []
    harness.subscriber.on_confirmed(confirmed.append)
    harness.subscriber.route("subtest:late", lambda data: harness.received.append(("late", data)))
    await eventually(lambda: confirmed == ["subtest:late"], what="late channel confirmed")
    await redis_client.publish("subtest:late", "x")
    await eventually(lambda: harness.received == [("late", b"x")])
    harness.subscriber.unroute("subtest:late")
    for _ in range(50):  # until Redis has dropped it
        if await redis_client.pubsub_numsub("subtest:late") == [(b"subtest:late", 0)]:
            break
        await asyncio.sleep(0.02)
    await redis_client.publish("subtest:late", "y")
    await redis_client.publish("subtest:a", "z")
    await eventually(lambda: ("subtest:a", b"z") in harness.received)
    assert ("late", b"y") not in harness.received
    assert harness.subscriber.subscribed
    assert harness.subscribes == [False]  # no reconnect was needed
