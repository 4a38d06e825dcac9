import asyncio

from redis.asyncio import Redis

from counter_service.names import Names
from counter_service.presence import Presence
from counter_service.redis.store import CounterStore
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


async def eventually_online(redis: Redis, expected: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await online(redis)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"online is {seen}, not {expected}"
        await asyncio.sleep(0.02)
