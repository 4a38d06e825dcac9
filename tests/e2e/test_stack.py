"""`counter-service up --replicas 2` as a real subprocess, driven through its real nginx with
headless sessions: new sessions spread, a reconnect keeps its replica, a dead or frozen
replica gets no new sessions, and SIGTERM stops every process `up` started."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from counter_service.devtools.fleet import free_port
from counter_service.devtools.headless import HeadlessSession
from counter_service.devtools.nginx import find_nginx
from tests.stack import COMMAND, PID_LINE, STEP, Up, alive, children_of

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]

SPREAD_SESSIONS = 20  # all on one of two replicas by chance: about 2 in a million


@pytest.fixture
def up() -> Iterator[Up]:
    """`counter-service up --replicas 2` on a free port, stopped with SIGTERM afterwards."""
    port = free_port()
    running = Up([*COMMAND, "--replicas", "2", "--port", str(port)], port)
    try:
        running.wait_for(r"serving ")
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


async def session_on(up: Up, cookies: dict[str, str] | None = None) -> HeadlessSession:
    """A session through nginx, once its page names its replica."""
    session = await HeadlessSession.connect(up.url, cookies=cookies, timeout=STEP)
    await session.wait_for(lambda s: s.value("replica") is not None, timeout=STEP)
    return session


async def visit(up: Up, cookies: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """Open a session and close it: (its replica, the cookies it ends with)."""
    async with await session_on(up, cookies) as session:
        return str(session.value("replica")), session.cookies


async def new_browsers(up: Up, count: int) -> list[tuple[str, dict[str, str]]]:
    return list(await asyncio.gather(*(visit(up) for _ in range(count))))


async def test_new_browsers_spread_and_a_reconnect_returns_to_its_replica(up: Up) -> None:
    workers = {replica.worker for replica in up.replicas()}
    assert len(workers) == 2
    first = await new_browsers(up, SPREAD_SESSIONS)
    assert {replica for replica, _ in first} == workers
    assert all("cs_affinity" in cookies for _, cookies in first)
    again = await asyncio.gather(*(visit(up, cookies) for _, cookies in first))
    assert [replica for replica, _ in again] == [replica for replica, _ in first]


async def test_a_reconnect_with_its_cookie_resumes_its_flet_session(up: Up) -> None:
    session = await session_on(up)
    replica, cookies, session_id = session.value("replica"), session.cookies, session.session_id
    await session.close()
    resumed = await HeadlessSession.connect(
        up.url, cookies=cookies, session_id=session_id, timeout=STEP
    )
    async with resumed:
        await resumed.wait_for(lambda s: s.value("replica") is not None, timeout=STEP)
        assert (resumed.session_id, resumed.value("replica")) == (session_id, replica)


async def test_after_a_replica_dies_new_sessions_land_on_the_survivor(up: Up) -> None:
    doomed, survivor = up.replicas()
    sessions = await asyncio.gather(*(session_on(up) for _ in range(SPREAD_SESSIONS)))
    keep = next(s for s in sessions if s.value("replica") == survivor.worker)
    moved = next(s.cookies for s in sessions if s.value("replica") == doomed.worker)
    await asyncio.gather(*(s.close() for s in sessions if s is not keep))
    async with keep:
        os.kill(doomed.pid, signal.SIGKILL)
        await asyncio.to_thread(up.wait_for, rf"replica {doomed.number} exited")
        assert {r for r, _ in await new_browsers(up, 10)} == {survivor.worker}
        assert (await visit(up, moved))[0] == survivor.worker
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
        assert {r for r, _ in await new_browsers(up, 10)} == {other.worker}
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await asyncio.to_thread(up.wait_for, rf"replica {frozen.number} ready", mark)
    await asyncio.to_thread(up.wait_for, r"nginx routes new sessions to replicas 1,2$", mark)


def test_sigterm_stops_every_process_up_started(up: Up) -> None:
    started = up.started_pids()
    assert len(started) >= 4  # redis, two replicas, nginx (and its worker)
    assert set(children_of(up.proc.pid)) <= set(started)
    logs = Path(up.wait_for(r"serving \S+ \(logs in (\S+);")[1])
    assert up.stop() == 0
    assert up.lines[-1] == "stopped"
    assert not [pid for pid in started if alive(pid)], "processes left behind"
    assert not logs.exists()


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
        (["--port", "{busy}"], "is in use"),
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
