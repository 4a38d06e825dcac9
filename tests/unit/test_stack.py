"""`counter-service up`'s checks and reports, without starting processes (those are in
tests/e2e/test_stack.py)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from counter_service.devtools import stack
from counter_service.devtools.fleet import ServerProcess, free_port
from counter_service.devtools.stack import StackError, check, one_line, readiness


def arguments(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stack.add_parser(parser.add_subparsers())
    defaults = [
        "up",
        "--port",
        str(free_port()),
        "--nginx",
        "/bin/true",
        "--redis-url",
        "redis://x",
    ]
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
    ("argv", "message"),
    [
        (["--replicas", "0"], "--replicas 0: must be between 1 and 32"),
        (["--replicas", "33"], "--replicas 33: must be between 1 and 32"),
        (["--port", "70000"], "--port 70000: not a TCP port"),
        (["--nginx", "/nonexistent/nginx"], "nginx not found (/nonexistent/nginx)"),
    ],
)
def test_bad_options_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(StackError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        check(arguments(*argv))


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StackError, match=f"127.0.0.1:{port} is in use"):
            check(arguments("--port", str(port)))


def test_errors_with_a_log_tail_fit_on_one_line() -> None:
    error = RuntimeError("nginx exited while starting:\n2026 [notice] x\n2026 [emerg] bind()")
    assert one_line(error) == "nginx exited while starting: 2026 [emerg] bind()"
    assert one_line(RuntimeError("plain")) == "plain"
    assert one_line(RuntimeError("")) == "RuntimeError"


class Readyz(BaseHTTPRequestHandler):
    """/readyz as a replica cut off from Redis answers it."""

    def do_GET(self) -> None:
        body = json.dumps({"ready": False, "redis_reachable": False, "relay_subscribed": True})
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_ready_replica(tmp_path: Path) -> Iterator[ServerProcess]:
    server = HTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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
    assert readiness(not_ready_replica) == "not ready: redis_reachable false"


def test_readiness_of_a_replica_that_is_not_running(tmp_path: Path) -> None:
    replica = ServerProcess(tmp_path, None)
    assert readiness(replica) == "not started"
    replica.proc = subprocess.Popen(["true"])
    replica.proc.wait()
    assert readiness(replica) == "exited (0)"
