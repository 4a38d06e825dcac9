"""`counter-service up`'s checks and readiness lines, without starting processes (those
are in tests/e2e/test_stack.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import AuthenticationError

from counter_service.balancer.foreground import one_line
from counter_service.balancer.health import missing
from counter_service.devtools import stack
from counter_service.devtools.fleet import RedisProcess, ServerProcess, free_port
from counter_service.devtools.stack import StackError, check, readiness, redis_exited
from counter_service.flet import app


def arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stack.add_parser(parser.add_subparsers())
    defaults = ["up", "--port", str(free_port()), "--nginx", "/bin/true"]
    defaults += [] if "--redis-url" in argv else ["--redis-url", "redis://x"]
    return parser.parse_args([*defaults, *argv])


def test_defaults_are_three_replicas_on_port_8080() -> None:
    parser = argparse.ArgumentParser()
    stack.add_parser(parser.add_subparsers())
    args = parser.parse_args(["up"])
    assert (args.replicas, args.port, args.redis_url) == (3, 8080, None)


def test_good_options_pass() -> None:
    options = check(arguments("--replicas", "2"))
    assert (options.replicas, options.nginx, options.redis_url) == (2, "/bin/true", "redis://x")


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6390/0", "redis+sentinel://h:26379/mymaster", "unix:///tmp/r.sock"]
)
def test_every_url_the_library_takes_passes(url: str) -> None:
    assert check(arguments("--redis-url", url)).redis_url == url


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--replicas", "0"], "--replicas 0: must be between 1 and 32"),
        (["--replicas", "33"], "--replicas 33: must be between 1 and 32"),
        (["--port", "70000"], "--port 70000: not a TCP port"),
        (["--nginx", "/nonexistent/nginx"], "nginx not found (/nonexistent/nginx)"),
        (["--redis-url", "foo://bar"], "--redis-url foo://bar: scheme must be one of redis"),
        (["--redis-url", "redis+cluster://h:1/0"], "--redis-url redis+cluster://h:1/0: a cluster"),
    ],
)
def test_bad_options_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(StackError) as raised:
        check(arguments(*argv))
    assert str(raised.value).startswith(message)


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"--port 127.0.0.1:{port}: cannot listen there"):
            check(arguments("--port", str(port)))


def test_errors_with_a_log_tail_fit_on_one_line() -> None:
    error = RuntimeError("nginx exited while starting:\n2026 [notice] x\n2026 [emerg] bind()")
    assert one_line(error) == "nginx exited while starting: 2026 [emerg] bind()"
    assert one_line(RuntimeError("plain")) == "plain"
    assert one_line(RuntimeError("")) == "RuntimeError"


def report(
    *,
    reachable: bool = True,
    subscribed: bool = True,
    down: tuple[str, ...] = (),
    lagging: bool = False,
    errors: tuple[BaseException, ...] = (),
) -> bytes:
    """The body that a replica's own /readyz code (counter_service/flet/app.py) writes for
    a worker in this state, from stand-ins for its service and loop-lag monitor: the
    readiness lines must read what it really says."""

    async def ping() -> bool:
        return reachable

    service = SimpleNamespace(
        ping=ping,
        available=subscribed,
        on_availability=lambda handler: lambda: None,
        subscriber=SimpleNamespace(subscribed=subscribed),
        tasks=[SimpleNamespace(name=name, up=False) for name in down],
        errors=lambda: list(errors),
        worker_id="vm-1-abc",
    )
    lag = SimpleNamespace(lagging=lambda now: lagging, lagging_for=lambda now: 60.0 * lagging)
    body = asyncio.run(app.readiness(service, lag))  # type: ignore[arg-type]  # stand-ins
    return json.dumps(body).encode()


def test_a_healthy_report_names_nothing_missing() -> None:
    assert json.loads(report())["ready"] is True
    assert missing(report()) == ""


@pytest.mark.parametrize(
    ("state", "line"),
    [
        ({"reachable": False}, "Redis unreachable"),
        ({"subscribed": False}, "relay not subscribed"),
        ({"down": ("presence", "relay")}, "tasks_down: presence; relay"),
        ({"lagging": True}, "event loop lagging"),
        (
            {"errors": (AuthenticationError("invalid username-password pair"),)},
            "redis_configuration: Redis refused the user name or password",
        ),
    ],
)
def test_the_readiness_line_names_exactly_what_the_replica_misses(
    state: dict[str, Any], line: str
) -> None:
    assert missing(report(**state)).startswith(line)
    assert "false" not in missing(report(**state))  # e.g. no "event_loop_lagging false"


class Readyz(BaseHTTPRequestHandler):
    """/readyz as a replica cut off from Redis answers it."""

    def do_GET(self) -> None:
        body = report(reachable=False, subscribed=False)
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_ready_replica(tmp_path: Path) -> Iterator[ServerProcess]:
    server = HTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    replica = ServerProcess(tmp_path, None, port=server.server_address[1])
    replica.proc = subprocess.Popen(["sleep", "60"])  # a running process; the port answers
    try:
        yield replica
    finally:
        replica.kill()
        server.shutdown()
        server.server_close()
        thread.join()


def test_readiness_says_what_a_replica_misses(not_ready_replica: ServerProcess) -> None:
    health = readiness(not_ready_replica)
    assert not health.ready
    assert health.state == "not ready: Redis unreachable, relay not subscribed"


def test_readiness_of_a_replica_that_is_not_running(tmp_path: Path) -> None:
    replica = ServerProcess(tmp_path, None)
    assert readiness(replica).state == "not started"
    replica.proc = subprocess.Popen(["true"])
    replica.proc.wait()
    assert readiness(replica).state == "exited (0)"


REDIS_LOG = """\
14035:C 02 Dec 2026 01:18:18.480 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo
14035:C 02 Dec 2026 01:18:18.480 # Configuration loaded
14035:M 02 Dec 2026 01:18:18.481 # Server initialized
14035:M 02 Dec 2026 01:18:18.481 * Ready to accept connections
14035:M 02 Dec 2026 01:49:20.459 * Background AOF rewrite finished successfully
"""


def exited_redis(tmp_path: Path, log: str, argv: list[str]) -> RedisProcess:
    """A RedisProcess whose process ran `argv` and ended, with `log` as its log."""
    process = RedisProcess(tmp_path, port=free_port())
    (tmp_path / f"{process.name}.log").write_text(log)
    process.proc = subprocess.Popen(argv)
    process.proc.wait()
    return process


def test_a_redis_server_that_was_killed_says_so_and_quotes_no_start_up_notice(
    tmp_path: Path,
) -> None:
    process = exited_redis(tmp_path, REDIS_LOG, ["sh", "-c", "kill -9 $$"])
    assert str(redis_exited(process)) == (
        "redis-server exited (killed by SIGKILL): no warning or error in its log"
    )


def test_a_redis_server_that_stopped_quotes_what_it_said_since_it_was_ready(
    tmp_path: Path,
) -> None:
    said = "14035:M 02 Dec 2026 01:50:00.366 # User requested shutdown..."
    process = exited_redis(tmp_path, REDIS_LOG + said + "\n", ["sh", "-c", "exit 0"])
    assert str(redis_exited(process)) == f"redis-server exited (status 0): {said}"


def test_a_redis_server_that_never_got_ready_quotes_its_last_errors(tmp_path: Path) -> None:
    log = REDIS_LOG.split("14035:M 02 Dec 2026 01:18:18.481 *")[0]
    failed = "14035:M 02 Dec 2026 01:18:18.481 # Failed listening on port 1 (tcp), aborting."
    process = exited_redis(tmp_path, log + failed + "\n", ["sh", "-c", "exit 1"])
    message = str(redis_exited(process))
    assert message.startswith("redis-server exited (status 1): ")
    assert message.endswith(failed)
