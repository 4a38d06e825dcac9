"""`counter-service up`: the topology of docker-compose.yml with local processes.

A `redis-server` (unless --redis-url), N `counter-service serve` replicas on free loopback
ports, and the balancer that compose runs (`counter-service balance`: nginx with
deploy/nginx/counter-service.conf) on 127.0.0.1:PORT in front of them. It prints one line
per process (PIDs, URLs, worker ids), then each replica's readiness whenever it changes,
and where nginx sends new sessions. Ctrl-C, SIGTERM or any error stops every process it
started, by PID (nginx by its process group, workers included)."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.exceptions import RedisError

from counter_service.balancer.command import UsageError, check_free, nginx_binary
from counter_service.balancer.config import MainOptions, routing_file
from counter_service.balancer.core import Balancer
from counter_service.balancer.foreground import (
    exit_status,
    one_line,
    say,
    shielded,
    sigterm_interrupts,
)
from counter_service.balancer.health import Health, probe
from counter_service.balancer.nginx import Nginx, NginxError
from counter_service.balancer.replicas import Replica
from counter_service.devtools.fleet import HOST, FleetError, RedisProcess, ServerProcess
from counter_service.devtools.loadtest.targets import worker_id
from counter_service.redis.urls import InvalidRedisUrl, parse_redis_url

PROG = "counter-service up"
DEFAULT_PORT = 8080  # what compose publishes, and clear of `serve`'s 8550
DEFAULT_REPLICAS = 3
MAX_REPLICAS = 32
POLL_S = 0.5
REDIS_LOG_LINES = 10_000
REDIS_READY = "Ready to accept connections"
# redis-server marks warnings and errors with '#': `PID:ROLE DD Mon YYYY HH:MM:SS.mmm # ...`.
# It logs a few start-up notices that way too ("Server initialized"): hence only the lines
# since it was ready count.
REDIS_WARNING = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ # ")


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
    if args.redis_url is not None:
        _check_redis_url(args.redis_url)
    elif shutil.which("redis-server") is None:
        raise StackError("redis-server not found: install it, or give --redis-url")
    try:
        check_free("--port", HOST, args.port)
        nginx = nginx_binary(args.nginx)
    except UsageError as exc:
        raise StackError(str(exc)) from None
    if not routing_file().is_file():
        raise StackError(f"{routing_file()} is missing: run from a checkout of counter-service")
    return StackOptions(args.replicas, args.port, args.redis_url, nginx)


def _check_redis_url(url: str) -> None:
    try:
        parse_redis_url(url)
    except InvalidRedisUrl as exc:
        raise StackError(f"--redis-url {url}: {exc}") from None


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


class ReplicaProcess(ServerProcess):
    """A replica of the stack. It counts as started once it answers /healthz, ready or
    not: a Redis that is unreachable shows in the readiness lines, not as a failed start."""

    def ready(self) -> bool:
        return worker_id(self.url) is not None


def readiness(replica: ServerProcess) -> Health:
    """The replica's /readyz answer, or why there is none: it never started, or exited."""
    if replica.proc is None:
        return Health(False, "not started")
    if replica.proc.poll() is not None:
        return Health(False, f"exited ({replica.proc.returncode})")
    return probe(Replica(HOST, replica.port))


def redis_exited(process: RedisProcess) -> StackError:
    """Why the stack's redis-server is gone: how it ended, and the last warnings and errors
    it logged since it was ready (or all of them, if it never was)."""
    code = None if process.proc is None else process.proc.returncode
    how = "gone" if code is None else exit_status(code)
    lines = process.log_tail(REDIS_LOG_LINES).splitlines()
    ready = [n for n, line in enumerate(lines) if REDIS_READY in line]
    since = lines[ready[-1] + 1 :] if ready else lines
    errors = [line.strip() for line in since if REDIS_WARNING.match(line)][-3:]
    found = "; ".join(errors) if errors else "no warning or error in its log"
    return StackError(f"redis-server exited ({how}): {found}")


class Stack:
    """The processes of one `up`, started in dependency order; `stop()` stops all of them."""

    def __init__(self, options: StackOptions) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="counter-stack-"))
        self.redis = None if options.redis_url else RedisProcess(self.log_dir)
        redis_url = options.redis_url or (self.redis.url if self.redis else None)
        self.processes = [ReplicaProcess(self.log_dir, redis_url) for _ in range(options.replicas)]
        self.replicas = [Replica(HOST, p.port, str(n)) for n, p in enumerate(self.processes, 1)]
        main = MainOptions(workers="1", access_log=str(self.log_dir / "nginx" / "access.log"))
        listen = (HOST, options.port)
        nginx_dir, log = self.log_dir / "nginx", self.log_dir / "nginx.log"
        nginx = Nginx(options.nginx, nginx_dir, routing_file(), listen, main, log=log)
        self.balancer = Balancer(nginx, lambda: self.replicas, say, self._readiness)

    def _readiness(self, replica: Replica) -> Health:
        return readiness(self.processes[self.replicas.index(replica)])

    def start(self) -> None:
        """Start Redis, the replicas, then nginx; print a line for each."""
        if self.redis is not None:
            self.redis.start()
            configure_redis(self.redis.url)
            say(f"redis pid={self.redis.pid} url={self.redis.url} appendonly=yes noeviction")
        for replica, process in zip(self.replicas, self.processes, strict=True):
            process.start()
            worker = worker_id(process.url)
            say(f"replica {replica.name} pid={process.pid} url={process.url} worker={worker}")
        self.balancer.start()
        nginx = self.balancer.nginx
        say(f"nginx pid={nginx.pid} config={nginx.config}")
        say(f"serving http://{HOST}:{nginx.port} (logs in {self.log_dir}; Ctrl-C stops everything)")

    def watch(self) -> None:
        """Until interrupted: report readiness and keep nginx routing new sessions to
        ready replicas. StackError if nginx or the stack's redis-server exits."""
        while True:
            if self.redis is not None and not self.redis.running:
                raise redis_exited(self.redis)
            self.balancer.step()
            time.sleep(POLL_S)  # a polling period, not a wait for a condition

    def stop(self) -> None:
        """Stop nginx (its whole process group), the replicas and Redis, each by PID."""
        self.balancer.stop()
        for process in self.processes:
            process.stop()
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
    with sigterm_interrupts():
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
    except (FleetError, NginxError, StackError, RedisError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)} (logs in {stack.log_dir})", file=sys.stderr)
        return 1
    finally:
        with shielded():
            stack.stop()
            say("stopped")
    return 0  # unreachable: watch() only ends by raising
