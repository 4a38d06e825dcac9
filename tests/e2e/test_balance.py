"""`counter-service balance` as a real subprocess in front of two real replicas, one of
them on a redis-server of its own: stopping that Redis leaves its replica up but answering
503 on /readyz. Such a replica keeps its pinned browser, reconnects included, gets no new
sessions while not ready, and gets them again once ready; SIGTERM leaves no nginx process
behind. (It runs as the current user: this machine's Python is not one that an
unprivileged user may run. nginx itself runs unprivileged in tests/e2e/test_routing.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from counter_service.balancer import replica_id
from counter_service.balancer.nginx import find_nginx
from counter_service.devtools.fleet import HOST, RedisProcess, ServerProcess, free_ports
from counter_service.devtools.headless import HeadlessSession
from counter_service.devtools.loadtest.targets import worker_id
from tests.stack import BALANCE, COOKIE, STEP, Up, alive, new_browsers, session_on

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]

SPREAD_SESSIONS = 20
POLL_S = "0.2"


@dataclass
class Pair:
    """Replica `shared` on one Redis, replica `alone` on a Redis of its own."""

    shared: ServerProcess
    alone: ServerProcess
    alone_redis: RedisProcess

    def address(self, replica: ServerProcess) -> str:
        return f"{HOST}:{replica.port}"

    def worker(self, replica: ServerProcess) -> str:
        found = worker_id(replica.url)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    log_dir = tmp_path_factory.mktemp("balance")
    redis_ports = free_ports(2)
    redises = [RedisProcess(log_dir, port) for port in redis_ports]
    replicas = [ServerProcess(log_dir, redis.url) for redis in redises]
    try:
        for process in [*redises, *replicas]:
            process.start()
        yield Pair(replicas[0], replicas[1], redises[1])
    finally:
        for process in [*replicas, *redises]:
            process.stop()


@pytest.fixture
def balance(pair: Pair) -> Iterator[Up]:
    port = free_ports(1)[0]
    replicas = f"{pair.address(pair.shared)},{pair.address(pair.alone)}"
    argv = [*BALANCE, "--listen", f"{HOST}:{port}", "--replicas", replicas, "--interval", POLL_S]
    running = Up(argv, port)
    try:
        running.wait_for(r"listening on ")
        yield running
    finally:
        running.stop()


async def test_a_replica_up_but_not_ready_keeps_its_browser_and_gets_no_new_sessions(
    pair: Pair, balance: Up
) -> None:
    shared, alone = pair.worker(pair.shared), pair.worker(pair.alone)
    sessions = await asyncio.gather(*(session_on(balance.url) for _ in range(SPREAD_SESSIONS)))
    pinned = next(s for s in sessions if s.value("replica") == alone)
    cookies, session_id = pinned.cookies, pinned.session_id
    assert cookies[COOKIE] == replica_id(pair.address(pair.alone))
    await asyncio.gather(*(s.close() for s in sessions))
    mark = len(balance.lines)
    pair.alone_redis.stop()
    try:
        not_ready = rf"replica {pair.address(pair.alone)} not ready: Redis unreachable"
        await asyncio.to_thread(balance.wait_for, not_ready, mark)
        rotation = rf"nginx routes new sessions to replica {pair.address(pair.shared)}$"
        await asyncio.to_thread(balance.wait_for, rotation, mark)
        assert {r for r, _ in await new_browsers(balance.url, 10)} == {shared}
        back = await HeadlessSession.connect(
            balance.url, cookies=cookies, session_id=session_id, timeout=STEP
        )
        async with back:
            await back.wait_for(lambda s: s.value("replica") is not None, timeout=STEP)
            assert (back.value("replica"), back.session_id) == (alone, session_id)
            assert back.cookies == cookies  # nginx did not move it
    finally:
        pair.alone_redis.start()
    both = rf"nginx routes new sessions to replicas {pair.address(pair.shared)},"
    await asyncio.to_thread(balance.wait_for, both, mark)
    spread = await new_browsers(balance.url, SPREAD_SESSIONS)
    assert {r for r, _ in spread} == {shared, alone}


def test_sigterm_stops_balance_and_leaves_no_nginx_process(balance: Up) -> None:
    master = balance.nginx_pid()
    workers = balance.nginx_workers()
    assert workers
    directory = Path(balance.wait_for(r"nginx pid=\d+ config=(\S+)/nginx.conf$")[1])
    assert balance.stop() == 0
    assert balance.lines[-1] == "stopped"
    assert not [pid for pid in [master, *workers] if alive(pid)], "nginx processes left behind"
    assert not directory.exists()
