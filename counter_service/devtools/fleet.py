"""Local processes for tests and load tests: `redis-server`s and `counter-service serve`s
on free loopback ports, always stopped by the PID they were started with."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0


class FleetError(RuntimeError):
    """A process of the fleet could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: all are held while they are picked, so the
    kernel cannot hand out one of them twice, as separate `free_port()` calls may."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class _Process:
    """A child process with a log file, stopped by its PID."""

    name = "process"
    cwd: Path | None = None
    """Working directory of the child (None: the caller's)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115  # the child owns it
        with log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
            )

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_dir / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise FleetError(f"{self.name} exited while {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        raise FleetError(f"{self.name} not {what} after {START_TIMEOUT_S}s:\n{self.log_tail()}")


class RedisProcess(_Process):
    """A throw-away `redis-server` with no persistence, on its own port."""

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        binary: str = "redis-server",
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(log_dir)
        self.port = port or free_port()
        self.binary = shutil.which(binary) or binary
        self.name = f"redis-{self.port}"
        self.args = list(args)
        """More `redis-server` arguments, after the defaults (a repeated option wins)."""

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> Self:
        """Start on `self.port` (the same port again after a stop) and wait until `ready()`."""
        self._spawn([self.binary, *self.server_args()])
        self._wait_until(self.ready, "answering PING")
        return self

    def server_args(self) -> list[str]:
        """The `redis-server` command line after the binary; subclasses may listen otherwise."""
        return [
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.log_dir),
            "--protected-mode",
            "no",
            *self.args,
        ]

    def restart(self) -> None:
        """Stop and start on the same port: every key and connection is gone."""
        self.stop()
        self.start()

    def ready(self) -> bool:
        """True once the server answers PING on `self.port`."""
        return self._pong()

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class ServerProcess(_Process):
    """One `counter-service serve` process on its own port."""

    def __init__(
        self,
        log_dir: Path,
        redis_url: str | None,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        args: list[str] | None = None,
        app: str | None = None,
    ) -> None:
        super().__init__(log_dir)
        self.port = port or free_port()
        self.redis_url = redis_url
        self.extra_env = extra_env or {}
        self.args = args or []
        self.app = app
        """`module:attribute` of an ASGI app to serve with uvicorn instead of the product."""
        self.name = f"server-{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start and wait until `/readyz` answers 200."""
        command = ["counter_service", "serve"] if self.app is None else ["uvicorn", self.app]
        argv = [
            sys.executable,
            "-m",
            *command,
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self._spawn(argv, env | self.extra_env)
        self._wait_until(self.ready, "ready")
        return self

    def ready(self) -> bool:
        """True if `/readyz` answers 200 right now."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False


class Fleet:
    """One Redis and `n` servers on it, torn down together (even on errors)."""

    def __init__(
        self,
        servers: int,
        log_dir: Path | None = None,
        server_env: dict[str, str] | None = None,
        app: str | None = None,
    ) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="counter-fleet-"))
        self.redis = RedisProcess(self.log_dir)
        self.server_env = server_env
        self.app = app
        self.servers = [self.new_server() for _ in range(servers)]

    def new_server(self) -> ServerProcess:
        """One server of the fleet (not started); subclasses serve other apps."""
        return ServerProcess(self.log_dir, self.redis.url, extra_env=self.server_env, app=self.app)

    def start(self) -> Self:
        try:
            self.start_redis()
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.stop_redis()

    def start_redis(self) -> None:
        """Start the Redis the servers use; subclasses may run another topology."""
        self.redis.start()

    def stop_redis(self) -> None:
        self.redis.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
