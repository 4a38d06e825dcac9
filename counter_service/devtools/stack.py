"""`counter-service up`: the topology of docker-compose.yml with local processes.

A `redis-server` (unless --redis-url), N `counter-service serve` replicas on free loopback
ports, and nginx on 127.0.0.1:PORT with deploy/nginx/counter-service.conf, the routing file
compose uses. It prints one line per process (PIDs, URLs, worker ids), then each replica's
readiness whenever it changes, and keeps nginx sending new sessions to ready replicas only.
Ctrl-C, SIGTERM or any error stops every process it started, by PID."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis
from redis.exceptions import RedisError

from counter_service.devtools.fleet import HOST, FleetError, RedisProcess, ServerProcess
from counter_service.devtools.loadtest.targets import worker_id
from counter_service.devtools.nginx import SHARED_CONF, NginxProcess, find_nginx, in_rotation

PROG = "counter-service up"
DEFAULT_PORT = 8080  # what compose publishes, and clear of `serve`'s 8550
DEFAULT_REPLICAS = 3
MAX_REPLICAS = 32
POLL_S = 0.5
READYZ_TIMEOUT_S = 1.0
READY = "ready"
# Straight to the replica: a proxy from the environment must not see loopback traffic.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(Exception):
    """Something `up` cannot work with; the message is one line for the user."""


@dataclass(frozen=True)
class StackOptions:
    """Checked options of one `counter-service up`."""

    replicas: int
    port: int
    redis_url: str | None
    nginx: str


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `up` subcommand to the `counter-service` subcommands."""
    up = commands.add_parser("up", help="run the compose topology with local processes")
    up.description = __doc__
    add = up.add_argument
    add("--replicas", type=int, default=DEFAULT_REPLICAS, help="app replicas (%(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="nginx port on 127.0.0.1 (%(default)s)")
    add("--redis-url", help="use this Redis instead of starting a redis-server")
    add("--nginx", metavar="PATH", help="nginx binary (default: on PATH or in /usr/sbin)")
    add("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def check(args: argparse.Namespace) -> StackOptions:
    """Validate before starting anything; StackError names what is wrong."""
    if not 1 <= args.replicas <= MAX_REPLICAS:
        raise StackError(f"--replicas {args.replicas}: must be between 1 and {MAX_REPLICAS}")
    if not 1 <= args.port <= 65535:
        raise StackError(f"--port {args.port}: not a TCP port")
    _check_port_free(args.port)
    nginx = shutil.which(args.nginx) if args.nginx else find_nginx()
    if nginx is None:
        where = args.nginx or "on PATH or in /usr/sbin"
        raise StackError(f"nginx not found ({where}): install it (apt-get install nginx)")
    if not SHARED_CONF.is_file():
        raise StackError(f"{SHARED_CONF} is missing: run from a checkout of counter-service")
    if args.redis_url is None and shutil.which("redis-server") is None:
        raise StackError("redis-server not found: install it, or give --redis-url")
    return StackOptions(args.replicas, args.port, args.redis_url, nginx)


def _check_port_free(port: int) -> None:
    with socket.socket() as sock:
        # As nginx binds: a closed connection's TIME_WAIT does not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise StackError(f"--port {port}: {HOST}:{port} is in use ({exc.strerror})") from None


def one_line(exc: BaseException) -> str:
    """An error on one line: its first line and, after a log tail, the tail's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].rstrip(":")
    return first if len(lines) == 1 else f"{first}: {lines[-1]}"


def say(line: str) -> None:
    """One line of the status output (stdout, flushed: it is read as it comes)."""
    print(line, flush=True)


def configure_redis(url: str) -> None:
    """AOF every second and no eviction, as compose runs Redis. Harmless here: the data
    lives in the stack's temporary directory and goes with it."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("appendfsync", "everysec")
        client.config_set("appendonly", "yes")
    finally:
        client.close()


def readiness(replica: ServerProcess) -> str:
    """`ready`, or why not: the replica's own /readyz answer, no answer, or its exit."""
    if replica.proc is None:
        return "not started"
    if replica.proc.poll() is not None:
        return f"exited ({replica.proc.returncode})"
    try:
        with DIRECT.open(replica.url + "/readyz", timeout=READYZ_TIMEOUT_S):
            return READY
    except urllib.error.HTTPError as exc:
        return "not ready: " + _missing(exc.read(4096))
    except (OSError, urllib.error.URLError) as exc:
        return f"not ready: no answer ({getattr(exc, 'reason', exc)})"


def _missing(body: bytes) -> str:
    """What a 503 from /readyz says is missing."""
    try:
        report = json.loads(body)
    except ValueError:
        return "503"
    if not isinstance(report, dict):
        return "503"
    missing = [name for name, value in report.items() if value is False and name != "ready"]
    return ", ".join(f"{name} false" for name in missing) or "503"


class Stack:
    """The processes of one `up`, started in dependency order; `stop()` stops all of them."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.log_dir = Path(tempfile.mkdtemp(prefix="counter-stack-"))
        self.redis = None if options.redis_url else RedisProcess(self.log_dir)
        redis_url = options.redis_url or (self.redis.url if self.redis else None)
        self.replicas = [ServerProcess(self.log_dir, redis_url) for _ in range(options.replicas)]
        ports = [replica.port for replica in self.replicas]
        self.nginx = NginxProcess(self.log_dir, options.nginx, options.port, ports)
        self.states: list[str | None] = [None] * options.replicas

    def start(self) -> None:
        """Start Redis, the replicas, then nginx; print a line for each."""
        if self.redis is not None:
            self.redis.start()
            configure_redis(self.redis.url)
            say(f"redis pid={self.redis.pid} url={self.redis.url} appendonly=yes noeviction")
        for number, replica in enumerate(self.replicas, 1):
            replica.start()
            worker = worker_id(replica.url)
            say(f"replica {number} pid={replica.pid} url={replica.url} worker={worker}")
        self.nginx.start()
        say(f"nginx pid={self.nginx.pid} config={self.nginx.config}")
        say(f"serving {self.nginx.url} (logs in {self.log_dir}; Ctrl-C stops everything)")

    def watch(self) -> None:
        """Until interrupted: print readiness changes and route new sessions to ready
        replicas. StackError if nginx exits."""
        while True:
            if not self.nginx.running:
                raise StackError(f"nginx exited: {self.nginx.log_tail(3)}")
            states = [readiness(replica) for replica in self.replicas]
            self._report(states)
            if self.nginx.route([state == READY for state in states]):
                self._report_rotation(states)
            time.sleep(POLL_S)  # a polling period, not a wait for a condition

    def _report(self, states: list[str]) -> None:
        for number, (before, now) in enumerate(zip(self.states, states, strict=True), 1):
            if before != now:
                say(f"replica {number} {now}")
        self.states = list(states)

    def _report_rotation(self, states: list[str]) -> None:
        ready = [state == READY for state in states]
        routed = [str(n) for n, up in enumerate(in_rotation(ready), 1) if up]
        note = "" if any(ready) else " (none is ready: pages render and show the store is down)"
        noun = "replica" if len(routed) == 1 else "replicas"
        say(f"nginx routes new sessions to {noun} {','.join(routed)}{note}")

    def stop(self) -> None:
        """Stop nginx, the replicas and Redis, each by the PID it was started with."""
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop()
        if self.redis is not None:
            self.redis.stop()


def run(args: argparse.Namespace) -> int:
    """Run `counter-service up` from parsed arguments until stopped; return the exit status."""
    try:
        options = check(args)
    except StackError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    stack = Stack(options)
    with _signals_stop():
        status = _serve(stack)
    if status == 0:
        shutil.rmtree(stack.log_dir, ignore_errors=True)
    return status


def _serve(stack: Stack) -> int:
    """Start and watch the stack; however that ends, stop everything it started."""
    try:
        stack.start()
        stack.watch()
    except KeyboardInterrupt:
        return 0
    except (FleetError, StackError, RedisError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)} (logs in {stack.log_dir})", file=sys.stderr)
        return 1
    finally:
        with _shielded():
            stack.stop()
            say("stopped")
    return 0  # unreachable: watch() only ends by raising


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM stops the stack the way Ctrl-C does (KeyboardInterrupt)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """No second Ctrl-C or SIGTERM may cut the (bounded) teardown short."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in stops}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
