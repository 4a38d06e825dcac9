"""`counter-service up` as a real subprocess, driven through its real nginx with headless
sessions: new sessions spread, a reconnect keeps its replica, a dead or frozen replica gets
no new sessions and a dead one's browsers are re-pinned, and however `up` ends (SIGTERM,
nginx or its redis-server dying, a failed start) it leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from counter_service.balancer.nginx import find_nginx
from counter_service.devtools.fleet import HOST, free_port
from counter_service.devtools.headless import HeadlessSession
from tests.stack import (
    COMMAND,
    COOKIE,
    PID_LINE,
    STEP,
    Up,
    alive,
    children_of,
    new_browsers,
    session_on,
    visit,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]

SPREAD_SESSIONS = 20  # all on one of two replicas by chance: about 2 in a million
LOADTEST = [
    *COMMAND[:-1],
    "loadtest",
    *("--sessions", str(SPREAD_SESSIONS), "--clickers", "2", "--rate", "10", "--duration", "1"),
    "--no-progress",
]
LOADTEST_S = 120.0  # a correctness bound: the run bounds itself well within


def start_up(*argv: str) -> Up:
    """`counter-service up ARGV` on a free port, once it serves."""
    port = free_port()
    running = Up([*COMMAND, *argv, "--port", str(port)], port)
    try:
        running.wait_for(r"serving ")
    except BaseException:
        running.stop()
        raise
    return running


@pytest.fixture
def up() -> Iterator[Up]:
    """`counter-service up --replicas 2`, stopped with SIGTERM afterwards."""
    running = start_up("--replicas", "2")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def up_one() -> Iterator[Up]:
    """`counter-service up --replicas 1`, for what one replica shows as well as two."""
    running = start_up("--replicas", "1")
    try:
        yield running
    finally:
        running.stop()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def ended_and_left_nothing(up: Up, pids: list[int]) -> str:
    """Wait for `up` to exit 1 by itself; its error line. Nothing it started may be left."""
    assert up.proc.wait(timeout=STEP) == 1
    up.wait_for(r"stopped$")
    assert not [pid for pid in pids if alive(pid)], "processes left behind"
    error = up.wait_for(r"counter-service up: error: (.*) \(logs in (\S+)\)$")
    shutil.rmtree(error[2])
    return error[1]


async def test_new_browsers_spread_and_a_reconnect_returns_to_its_replica(up: Up) -> None:
    replicas = {replica.worker: replica for replica in up.replicas()}
    assert len(replicas) == 2
    first = await new_browsers(up.url, SPREAD_SESSIONS)
    assert {worker for worker, _ in first} == set(replicas)
    assert all(cookies[COOKIE] == replicas[worker].id for worker, cookies in first)
    again = await asyncio.gather(*(visit(up.url, cookies) for _, cookies in first))
    assert again == first  # same replica, and no new cookie


async def test_a_reconnect_with_its_cookie_resumes_its_flet_session(up: Up) -> None:
    session = await session_on(up.url)
    replica, cookies, session_id = session.value("replica"), session.cookies, session.session_id
    await session.close()
    resumed = await HeadlessSession.connect(
        up.url, cookies=cookies, session_id=session_id, timeout=STEP
    )
    async with resumed:
        await resumed.wait_for(lambda s: s.value("replica") is not None, timeout=STEP)
        assert (resumed.session_id, resumed.value("replica")) == (session_id, replica)


async def test_a_dead_replica_gets_no_new_sessions_and_its_browsers_are_re_pinned(up: Up) -> None:
    doomed, survivor = up.replicas()
    sessions = await asyncio.gather(*(session_on(up.url) for _ in range(SPREAD_SESSIONS)))
    keep = next(s for s in sessions if s.value("replica") == survivor.worker)
    moved = next(s.cookies for s in sessions if s.value("replica") == doomed.worker)
    await asyncio.gather(*(s.close() for s in sessions if s is not keep))
    mark = len(up.lines)
    async with keep:
        os.kill(doomed.pid, signal.SIGKILL)
        await asyncio.to_thread(up.wait_for, rf"replica {doomed.number} exited", mark)
        rotation = rf"nginx routes new sessions to replica {survivor.number}$"
        await asyncio.to_thread(up.wait_for, rotation, mark)
        assert {r for r, _ in await new_browsers(up.url, 10)} == {survivor.worker}
        replica, cookies = await visit(up.url, moved)
        assert (replica, cookies[COOKIE]) == (survivor.worker, survivor.id)
        assert await visit(up.url, cookies) == (survivor.worker, cookies)
        clicks = keep.int_value("clicks")
        assert clicks is not None
        await keep.click("increment")
        await keep.wait_for(lambda s: s.int_value("clicks") == clicks + 1, timeout=STEP)


async def test_a_frozen_replica_gets_no_new_sessions_until_it_answers_again(up: Up) -> None:
    frozen, other = up.replicas()
    mark = len(up.lines)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        await asyncio.to_thread(up.wait_for, rf"replica {frozen.number} not ready", mark)
        rotation = rf"nginx routes new sessions to replica {other.number}$"
        await asyncio.to_thread(up.wait_for, rotation, mark)
        assert {r for r, _ in await new_browsers(up.url, 10)} == {other.worker}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await asyncio.to_thread(up.wait_for, rf"replica {frozen.number} ready", mark)
    await asyncio.to_thread(up.wait_for, r"nginx routes new sessions to replicas 1,2$", mark)


def test_loadtest_through_up_reports_how_sessions_spread_over_the_replicas(
    up: Up, tmp_path: Path
) -> None:
    redis_url = up.wait_for(r"redis pid=\d+ url=(\S+)")[1]
    out = tmp_path / "result.json"
    argv = [*LOADTEST, "--target", up.url, "--redis-url", redis_url, "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=LOADTEST_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["ok"], result["problems"]
    replicas = result["replicas"]
    assert set(replicas["sessions"]) == {replica.worker for replica in up.replicas()}
    assert (sum(replicas["sessions"].values()), replicas["unknown"]) == (SPREAD_SESSIONS, 0)
    # New browsers go to the replica with the fewest connections: about half each.
    assert min(replicas["sessions"].values()) >= SPREAD_SESSIONS // 4


def test_sigterm_stops_every_process_up_started(up: Up) -> None:
    assert up.nginx_workers()
    started = up.started_pids()
    assert len(started) >= 5  # redis, two replicas, nginx and its worker
    assert set(children_of(up.proc.pid)) <= set(started)
    logs = Path(up.wait_for(r"serving \S+ \(logs in (\S+);")[1])
    assert up.stop() == 0
    assert up.lines[-1] == "stopped"
    assert not [pid for pid in started if alive(pid)], "processes left behind"
    assert not logs.exists()


def test_when_nginx_dies_up_stops_everything_and_no_worker_keeps_the_port(up_one: Up) -> None:
    pids = up_one.started_pids()
    assert up_one.nginx_workers()
    os.kill(up_one.nginx_pid(), signal.SIGKILL)
    assert ended_and_left_nothing(up_one, pids).startswith("nginx exited")
    assert port_free(int(up_one.url.rsplit(":", 1)[1]))


def test_when_its_redis_server_dies_up_says_so_and_stops_everything(up_one: Up) -> None:
    pids = up_one.started_pids()
    os.kill(int(up_one.wait_for(r"redis pid=(\d+)")[1]), signal.SIGKILL)
    assert ended_and_left_nothing(up_one, pids).startswith("redis-server exited")


async def test_an_unreachable_redis_url_shows_as_redis_unreachable_and_pages_render() -> None:
    nowhere = f"redis://{HOST}:{free_port()}/0"
    running = await asyncio.to_thread(start_up, "--replicas", "1", "--redis-url", nowhere)
    try:
        running.wait_for(r"replica 1 not ready: Redis unreachable")
        (replica,) = running.replicas()
        assert (await visit(running.url))[0] == replica.worker
    finally:
        assert running.stop() == 0


def test_a_failure_halfway_through_start_up_stops_what_was_started(tmp_path: Path) -> None:
    broken = tmp_path / "nginx"
    broken.write_text("#!/bin/sh\necho '[emerg] this nginx is broken' >&2\nexit 1\n")
    broken.chmod(0o755)
    argv = [*COMMAND, "--replicas", "1", "--port", str(free_port()), "--nginx", str(broken)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert "this nginx is broken" in done.stderr
    logs = re.search(r"\(logs in (\S+)\)", done.stderr)
    assert logs
    assert (Path(logs[1]) / "nginx.log").exists()
    shutil.rmtree(logs[1])
    pids = [int(m[1]) for m in map(PID_LINE.match, done.stdout.splitlines()) if m]
    assert len(pids) == 2  # redis and the replica were up when nginx failed
    assert not [pid for pid in pids if alive(pid)], "processes left behind"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--replicas", "0"], "--replicas 0: must be between 1 and 32"),
        (["--nginx", "/nonexistent/nginx"], "nginx not found (/nonexistent/nginx)"),
        (["--port", "{busy}"], "cannot listen there"),
        (["--redis-url", "foo://bar"], "--redis-url foo://bar: scheme must be one of"),
    ],
)
def test_bad_input_fails_with_one_line_before_starting_anything(
    arguments: list[str], message: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        # A free --port first, so that only the option under test is wrong.
        argv = [*COMMAND, "--port", str(free_port())]
        argv += [a.replace("{busy}", port) for a in arguments]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert (done.stdout, done.stderr.count("\n")) == ("", 1)
    assert done.stderr.startswith("counter-service up: error: ")
    assert message in done.stderr
