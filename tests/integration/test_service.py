"""Two services on one real redis-server: app messages, outages, and supervised tasks."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from counter_service.devtools.fleet import RedisProcess
from counter_service.errors import MessageTooLarge, ReservedCounter, StoreUnavailable
from counter_service.pubsub.messages import AppMessage, Publisher
from counter_service.service import CounterService
from counter_service.settings import Settings
from tests.support import eventually


@pytest.fixture
async def pair(redis_server: RedisProcess) -> AsyncIterator[tuple[CounterService, CounterService]]:
    settings = Settings(redis_url=redis_server.url, namespace="svc", max_message_bytes=1024)
    async with CounterService(settings) as a, CounterService(settings) as b:
        await eventually(lambda: a.ready and b.ready, what="both ready")
        yield a, b


def inbox(service: CounterService) -> list[AppMessage]:
    received: list[AppMessage] = []
    service.on_message(received.append)
    return received


async def test_messages_reach_every_process_in_one_order(
    pair: tuple[CounterService, CounterService],
) -> None:
    a, b = pair
    got_a, got_b = inbox(a), inbox(b)
    for i in range(20):
        a.publish_nowait("t", {"from": "a", "i": i})
        b.publish_nowait("t", {"from": "b", "i": i})
    await eventually(lambda: len(got_a) == len(got_b) == 40, what="40 messages each")
    assert got_a == got_b
    assert [m.message["i"] for m in got_a if m.message["from"] == "a"] == list(range(20))
    assert {m.worker for m in got_a} == {a.worker_id, b.worker_id}


async def test_publish_waits_until_redis_took_the_message(
    pair: tuple[CounterService, CounterService],
) -> None:
    a, b = pair
    got_b = inbox(b)
    await a.publish(None, "hello", exclude="session-1")
    assert a.publisher.published >= 1
    await eventually(lambda: len(got_b) == 1)
    assert got_b[0] == AppMessage(a.worker_id, "session-1", None, "hello")


async def test_bad_messages_are_refused_before_anything_is_sent(
    pair: tuple[CounterService, CounterService],
) -> None:
    a, _ = pair
    with pytest.raises(TypeError):
        a.publish_nowait(None, {"a set": {1}})
    with pytest.raises(MessageTooLarge):
        a.publish_nowait(None, "x" * 2000)
    assert a.publisher.published == 0


async def test_a_send_while_redis_is_unreachable_raises(
    pair: tuple[CounterService, CounterService], redis_server: RedisProcess
) -> None:
    a, _ = pair
    redis_server.stop()
    await eventually(lambda: not a.subscriber.subscribed, what="outage noticed")
    with pytest.raises(StoreUnavailable, match="not sent"):
        a.publish_nowait("t", "lost?")
    with pytest.raises(StoreUnavailable):
        await a.incr("clicks")
    redis_server.start()
    await eventually(lambda: a.ready, what="back")
    a.publish_nowait("t", "after")


async def test_an_accepted_message_is_retried_until_redis_takes_it(
    redis_server: RedisProcess, redis_client: Redis
) -> None:
    await redis_client.acl_setuser(
        "sender", enabled=True, nopass=True, commands=["+ping"], channels=["*"]
    )
    client = Redis.from_url(redis_server.url, username="sender")
    publisher = Publisher(client)
    listener = redis_client.pubsub()
    await listener.subscribe("svc:messages")
    await publisher.start()
    try:
        publisher.send_nowait("svc:messages", "kept")  # accepted, then refused (NOPERM)
        await eventually(lambda: publisher.failing, what="the publish failed")
        with pytest.raises(StoreUnavailable):
            publisher.send_nowait("svc:messages", "refused while failing")
        await redis_client.acl_setuser("sender", commands=["+publish"])
        received: list[bytes] = []
        while not received:
            message = await listener.get_message(timeout=10)
            assert message is not None, "the accepted message never arrived"
            if message["type"] == "message":
                received.append(message["data"])
        assert received == [b"kept"]
        await eventually(lambda: not publisher.failing, what="recovered")
    finally:
        await listener.aclose()
        await publisher.stop()
        await client.aclose()


async def test_resubscribe_handlers_hear_of_missed_messages(
    pair: tuple[CounterService, CounterService], redis_client: Redis
) -> None:
    a, b = pair
    heard: list[str] = []
    a.on_resubscribe(lambda: heard.append("a"))
    b.on_resubscribe(lambda: heard.append("b"))
    assert await redis_client.client_kill_filter(_type="pubsub") == 2
    await eventually(lambda: sorted(heard) == ["a", "b"], what="both re-subscribed")


async def test_online_is_not_incremented_by_hand(
    pair: tuple[CounterService, CounterService],
) -> None:
    with pytest.raises(ReservedCounter):
        await pair[0].incr("online")


async def test_a_crashed_background_task_restarts_and_readiness_says_so(
    pair: tuple[CounterService, CounterService],
) -> None:
    a, _ = pair
    task = a.counters.tasks[1]  # reconciliation
    release = asyncio.Event()
    original = task._run

    async def crash_once() -> None:
        task._run = original
        await release.wait()
        raise RuntimeError("injected bug")

    task._run = crash_once
    await task.stop()
    task.start()
    await eventually(lambda: task.up and a.ready, what="running the injected run")
    release.set()
    await eventually(lambda: not a.ready, what="not ready while a task is down")
    assert task.crashes == 1
    assert task.last_error == "RuntimeError: injected bug"
    await eventually(lambda: a.ready, what="restarted")
    assert task.up
