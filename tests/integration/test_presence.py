import asyncio
import logging

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import RedisProcess
from counter_service.devtools.topologies import create_acl_user
from counter_service.names import Names
from counter_service.presence import Presence
from counter_service.redis.store import CounterStore
from tests.integration.test_store import unreachable_sentinels
from tests.support import eventually

NAMES = Names("presencetest")


async def online(redis: Redis) -> int:
    return int(await redis.get(NAMES.value("online")) or 0)


async def test_changes_are_reported_promptly_and_the_key_expires_within_the_ttl(
    redis_client: Redis,
) -> None:
    presence = Presence(CounterStore(redis_client, NAMES), "w1", ttl_s=8.0, min_gap=0.01)
    await presence.start()
    try:
        for _ in range(3):
            presence.connected()
        presence.disconnected()
        await eventually(lambda: presence.healthy)
        await eventually_online(redis_client, 2)
        count, deadline = (await redis_client.hget(NAMES.presence, "w1") or b"").split(b":")
        now_s, now_us = await redis_client.time()
        left_ms = int(deadline) - (now_s * 1000 + now_us // 1000)
        assert count == b"2"
        assert 0 < left_ms <= 6000  # 3/4 of the TTL: dead workers leave within one TTL
    finally:
        await presence.stop()
    assert await online(redis_client) == 0
    assert not await redis_client.hexists(NAMES.presence, "w1")


async def test_two_workers_add_up(redis_client: Redis) -> None:
    store = CounterStore(redis_client, NAMES)
    a = Presence(store, "a", ttl_s=8.0, min_gap=0.01)
    b = Presence(store, "b", ttl_s=8.0, min_gap=0.01)
    await a.start()
    await b.start()
    try:
        a.connected()
        b.connected()
        b.connected()
        await eventually_online(redis_client, 3)
    finally:
        await a.stop()
    await eventually_online(redis_client, 2)
    await b.stop()


async def test_disconnects_never_count_below_zero(redis_client: Redis) -> None:
    presence = Presence(CounterStore(redis_client, NAMES), "w", ttl_s=8.0, min_gap=0.01)
    presence.disconnected()
    assert presence.live == 0


def presence_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "counter_service.presence" and r.levelno >= logging.WARNING
    ]


async def test_an_outage_is_left_to_the_subscriber_to_report(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    presence = Presence(CounterStore(client, NAMES), "w", ttl_s=1.0, min_gap=0.01)
    await presence.start()
    try:
        await eventually(lambda: presence.healthy)
        redis_server.stop()
        await eventually(lambda: not presence.healthy, what="the report failed")
        await eventually(
            lambda: sum("presence report failed" in r.getMessage() for r in caplog.records) >= 3,
            what="three failed reports",
        )
        assert presence_warnings(caplog) == []  # each at DEBUG only
        redis_server.start()
        await eventually(lambda: presence.healthy, what="reporting again")
    finally:
        await presence.stop()
        await client.aclose()


async def test_a_refusal_is_one_warning_while_it_repeats(
    redis_server: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    url = await create_acl_user(redis_server.url, "pat", "pw", ["~*", "&*", "+@all", "-hset"])
    client = Redis.from_url(url)
    presence = Presence(CounterStore(client, NAMES), "w", ttl_s=1.0, min_gap=0.01)
    await presence.start()
    try:
        await eventually(lambda: presence._backoff.failures >= 3, what="three refused reports")
        [warning] = presence_warnings(caplog)  # the summary holds the repeats back
        assert "(HSET)" in warning
        assert not presence.healthy
    finally:
        await presence.stop()
        await client.aclose()


async def eventually_online(redis: Redis, expected: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await online(redis)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"online is {seen}, not {expected}"
        await asyncio.sleep(0.02)


async def test_leaving_while_the_sentinels_are_unreachable_is_one_short_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = unreachable_sentinels()
    presence = Presence(CounterStore(connections.commands, NAMES), "w1", ttl_s=8, min_gap=0.01)
    await presence.start()
    try:
        await eventually(lambda: presence.task.running)
    finally:
        await presence.stop()
        await connections.aclose()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith("could not remove worker w1 from presence (Redis is unreachable")
    assert len(warning) < 300, warning
