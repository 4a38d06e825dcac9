"""`/readyz` of a real worker on a real redis-server: it fails while the worker cannot
serve (Redis down, relay not subscribed, the event loop lagging), and a connection that
Redis drops and that comes right back does not make it flap."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import flet as ft
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

import counter_service
from counter_service.devtools.fleet import RedisProcess, ServerProcess
from counter_service.devtools.headless import HeadlessSession

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
WATCH_S = 1.0
"""How long /readyz is polled after a connection was dropped (the audit saw 30-50 ms
of 503 after `CLIENT KILL TYPE pubsub`)."""
Readyz = tuple[int, dict[str, Any]]


@pytest.fixture
def worker(tmp_path: Path, redis_server: RedisProcess) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path, redis_server.url)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def client(worker: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=worker.url, timeout=WAIT_S) as http:
        yield http


async def readyz(client: httpx.AsyncClient) -> Readyz:
    response = await client.get("/readyz")
    return response.status_code, response.json()


async def until(client: httpx.AsyncClient, check: Callable[[Readyz], bool], what: str) -> Readyz:
    """The first /readyz answer that passes `check`, within WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not check(answer := await readyz(client)):
        assert time.monotonic() < deadline, f"/readyz never {what}; last: {answer}"
        await asyncio.sleep(0.05)
    return answer


async def answers_for(client: httpx.AsyncClient, seconds: float) -> list[Readyz]:
    """Every /readyz answer while polling it for `seconds`, about every 10 ms."""
    answers, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        answers.append(await readyz(client))
        await asyncio.sleep(0.01)
    return answers


def not_ready(answers: list[Readyz]) -> list[Readyz]:
    return [answer for answer in answers if answer[0] != 200]


async def subscribes(client: httpx.AsyncClient) -> int:
    return int((await client.get("/metrics.json")).json()["subscriber"]["subscribes"])


async def test_a_dropped_command_connection_does_not_fail_readyz(
    client: httpx.AsyncClient, redis_client: Redis
) -> None:
    for _ in range(3):
        await until(client, lambda a: a[0] == 200, "ready")  # its pool holds a connection
        assert await redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        assert not_ready(await answers_for(client, WATCH_S)) == []


async def test_a_dropped_subscription_that_comes_right_back_does_not_fail_readyz(
    client: httpx.AsyncClient, redis_client: Redis
) -> None:
    for _ in range(3):
        before = await subscribes(client)
        assert await redis_client.client_kill_filter(_type="pubsub") == 1
        assert not_ready(await answers_for(client, WATCH_S)) == []
        assert await subscribes(client) > before  # it was lost, and is back


async def test_readyz_fails_while_redis_is_stopped(
    client: httpx.AsyncClient, redis_server: RedisProcess
) -> None:
    redis_server.stop()
    _, body = await until(client, lambda a: a[0] == 503, "503 without Redis")
    assert body["redis_reachable"] is False
    redis_server.start()
    await until(client, lambda a: a[0] == 200, "200 once Redis is back")


async def test_readyz_fails_while_the_relay_cannot_subscribe_though_ping_works(
    client: httpx.AsyncClient, redis_client: Redis
) -> None:
    await redis_client.execute_command("ACL", "SETUSER", "default", "-subscribe")
    assert await redis_client.client_kill_filter(_type="pubsub") == 1
    _, body = await until(client, lambda a: a[0] == 503, "503 while not subscribed")
    assert (body["relay_subscribed"], body["redis_reachable"]) == (False, True)
    await redis_client.execute_command("ACL", "SETUSER", "default", "+subscribe")
    await until(client, lambda a: a[0] == 200, "200 once subscribed again")


# A worker whose event loop is kept busy, for the lag case.

LAG_ENV = {"COUNTER_LAG_THRESHOLD": "0.05", "COUNTER_LAG_SUSTAINED": "1"}
BLOCK_SLICE_S = 0.2


def lagging_app() -> FastAPI:
    """An app whose button blocks the event loop for as many seconds as its click's
    data says, in slices (so that /readyz is still answered, slowly)."""

    async def main(page: ft.Page) -> None:
        async def block(event: ft.Event[ft.Button]) -> None:
            end = time.monotonic() + float(str(event.data))
            while time.monotonic() < end:
                time.sleep(BLOCK_SLICE_S)  # noqa: ASYNC251  # blocking the loop is the point
                await asyncio.sleep(0)

        page.add(ft.Button(key="block", content="block", on_click=block))

    return counter_service.app(main)


async def test_readyz_fails_while_the_event_loop_lags_for_the_sustained_period(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    app = f"{__name__}:lagging_app"
    server = ServerProcess(
        tmp_path, redis_server.url, extra_env=LAG_ENV, args=["--factory"], app=app
    )
    try:
        server.start()
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=WAIT_S) as client,
            await HeadlessSession.connect(server.url) as session,
        ):
            await session.wait_for(lambda s: s.control("block") is not None, WAIT_S)
            await session.trigger("block", "click", "8")
            _, body = await until(client, lambda a: a[1]["event_loop_lagging"], "lagging")
            assert body["ready"] is False
            await until(client, lambda a: a[0] == 200, "200 once the loop is free")
    finally:
        server.stop()
