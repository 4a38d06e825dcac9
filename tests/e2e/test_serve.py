"""`counter-service serve` as an operator meets it: bad flags, a taken port, SIGTERM."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from counter_service.cli import EXIT_INTERRUPTED
from counter_service.devtools.fleet import HOST, Fleet, ServerProcess, free_port
from counter_service.devtools.headless import HeadlessSession
from counter_service.names import Names
from counter_service.settings import DEFAULT_NAMESPACE

pytestmark = pytest.mark.e2e

START_DEADLINE_S = 20.0
"""A command that fails at start ends well within this."""
SHUTDOWN_DEADLINE_S = 10.0
"""SIGTERM and Ctrl-C end the process within this: websockets get 5 s to close
(GRACEFUL_SHUTDOWN_S), then presence and Redis connections are let go at once."""


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "counter_service", "serve", *args]
    inherited = ("COUNTER_", "REDIS", "FLET_")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    return subprocess.run(
        argv,
        env=environment | (env or {}),
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )


def test_a_port_in_use_stops_serve_at_once_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve("--port", str(port))
    assert done.returncode != 0
    assert done.stderr == (
        f"counter-service serve: --port {port}: address {HOST}:{port} is already in use\n"
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "99999"], {}, "--port 99999: must be between 1 and 65535"),
        (["--port", "-5"], {}, "--port -5: must be between 1 and 65535"),
        (["--port", "0"], {}, "--port 0: must be between 1 and 65535"),
        (["--port", "abc"], {}, "--port abc: is not a port number"),
        (["--port"], {}, "--port: expected one argument"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        (["--host", "999.1.1.1"], {}, "--host 999.1.1.1: not an address or a name"),
        (["--host", "192.0.2.1"], {}, "--host 192.0.2.1: not an address of this machine"),
        (["--tick-ms", "0"], {}, "--tick-ms 0: must be between 1 and 10000"),
        (["--tick-ms", "abc"], {"COUNTER_TICK_MS": "0"}, "--tick-ms abc: is not a whole number"),
        ([], {"COUNTER_TICK_MS": "0"}, "COUNTER_TICK_MS=0: must be between 1 and 10000"),
        ([], {"COUNTER_PRESENCE_TTL": "x"}, "COUNTER_PRESENCE_TTL=x: is not a number"),
        ([], {"COUNTER_PRESENCE_TTL": "1e9"}, "COUNTER_PRESENCE_TTL=1e9: must be between 1"),
        ([], {"COUNTER_EVENTS_PER_S": "0"}, "COUNTER_EVENTS_PER_S=0: must be between 0.1"),
        ([], {"REDIS_URL": "http://u:pw@h"}, "REDIS_URL='http://u:***@h': "),
        ([], {"FLET_SESSION_TIMEOUT": "abc"}, "FLET_SESSION_TIMEOUT=abc: is not a whole number"),
        ([], {"FLET_SESSION_TIMEOUT": "-5"}, "FLET_SESSION_TIMEOUT=-5: must be between 1"),
    ],
)
def test_bad_settings_stop_serve_with_one_line_naming_what_was_typed(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = serve("--port", str(free_port()), *args, env=env)
    assert done.returncode != 0
    assert done.stderr.startswith(f"counter-service serve: {message}")
    assert done.stderr.count("\n") == 1, done.stderr  # no usage text, no traceback
    assert "pw" not in done.stderr


def test_a_flag_overrides_a_bad_variable_before_it_is_checked(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, None, extra_env={"COUNTER_TICK_MS": "0"}, args=["--tick-ms", "30"]
    )
    try:
        server.start()  # ready: the variable the flag replaced was never refused
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("stop", "exit_status"),
    [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, EXIT_INTERRUPTED)],
)
async def test_a_signal_under_load_ends_the_process_and_leaves_presence_at_once(
    tmp_path: Path, stop: signal.Signals, exit_status: int
) -> None:
    env = {"COUNTER_PRESENCE_TTL": "600"}  # only the goodbye can remove it in time
    with Fleet(1, log_dir=tmp_path, server_env=env) as fleet:
        server = fleet.servers[0]
        sessions = [await HeadlessSession.connect(server.url) for _ in range(20)]
        clicking = asyncio.gather(*(_click_until_closed(s) for s in sessions))
        redis = Redis.from_url(fleet.redis.url)
        try:
            await _wait_online(redis, 20)
            assert server.proc is not None
            started = time.monotonic()
            server.proc.send_signal(stop)
            status = await asyncio.to_thread(server.proc.wait, SHUTDOWN_DEADLINE_S)
            print(f"exited {time.monotonic() - started:.2f}s after {stop.name}")
            assert status == exit_status
            assert await redis.get(Names(DEFAULT_NAMESPACE).value("online")) == b"0"
            names = [client["name"] for client in await redis.client_list()]
            assert not [name for name in names if name.startswith("cs:")]  # all closed
            assert "Traceback" not in server.log_tail(lines=200)
        finally:
            await redis.aclose()
            await asyncio.gather(*(s.close() for s in sessions))
            await clicking


async def _click_until_closed(session: HeadlessSession) -> None:
    try:
        while True:
            await session.click("increment")
            await asyncio.sleep(0.01)
    except Exception:
        return  # the server went away: expected


async def _wait_online(redis: Redis, expected: int) -> None:
    key = Names(DEFAULT_NAMESPACE).value("online")
    deadline = time.monotonic() + 30
    while await redis.get(key) != str(expected).encode():
        assert time.monotonic() < deadline, "presence never reached the session count"
        await asyncio.sleep(0.05)
