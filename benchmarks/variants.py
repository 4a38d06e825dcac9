"""The four variants, and a fleet of one variant: its redis-server and two server processes."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
from redis.asyncio import Redis, RedisCluster

from benchmarks import procstat, reference
from benchmarks.apps import pubsub as pubsub_app
from benchmarks.baselines import article, naive_flet
from benchmarks.baselines import socketio as sio_baseline
from benchmarks.clients import Client, FletClient, SocketIOClient
from benchmarks.reference import REFERENCE_COMMIT
from benchmarks.stats import summarize_tracebacks
from counter_service.devtools.fleet import HOST, Fleet, RedisProcess, ServerProcess
from counter_service.devtools.topologies import ClusterSet
from counter_service.names import Names
from counter_service.settings import DEFAULT_NAMESPACE
from ui.contract import CLICKS

CONNECT_TIMEOUT_S = 15.0
HARNESS = "bench-harness"
"""The name of the benchmark's own Redis connections, which are not counted."""


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    protocol: str
    """`flet` (headless Flet sessions) or `socketio`."""
    uses_redis: bool
    has_online: bool
    servers: int = 2


VARIANTS = {
    "a": Variant("a", "counter-service", "flet", uses_redis=True, has_online=True),
    # This project before the library change, from git: the fast path's own reference.
    "r": Variant("r", f"counter-service @{REFERENCE_COMMIT}", "flet", True, has_online=True),
    # (a) with Flet's generic control.update() instead of direct patches: the reference
    # that shows what the direct fan-out path is worth, measured in the same run.
    "u": Variant("u", "counter-service, update()", "flet", uses_redis=True, has_online=True),
    # (a) on a Redis Cluster of three masters instead of one server (sharded pub/sub).
    "k": Variant("k", "counter-service, 3-master cluster", "flet", True, has_online=True),
    "b": Variant("b", "article (file)", "flet", uses_redis=False, has_online=False),
    "c": Variant("c", "naive Flet+Redis", "flet", uses_redis=True, has_online=False),
    "d": Variant("d", "socket.io+Redis", "socketio", uses_redis=True, has_online=False),
    # The pubsub scenario's pair: one page, on counter_service.app over two workers, and
    # on Flet's own app (its in-process hub) in one process.
    "p": Variant("p", "page.pubsub, counter_service.app", "flet", True, False),
    "f": Variant("f", "page.pubsub, Flet's hub", "flet", False, False, servers=1),
}
PUBSUB = ("p", "f")


OURS = ("a", "u", "k")
CLUSTER_MASTERS = 3


def parse_variants(text: str) -> list[Variant]:
    """`a,r,u,k,b,c,d,p,f` (any subset, any order) to variants; ValueError naming unknown
    ones."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown or not keys:
        raise ValueError(f"unknown variants {unknown or text!r}; choose from {','.join(VARIANTS)}")
    return [VARIANTS[k] for k in dict.fromkeys(keys)]


class BaselineProcess(ServerProcess):
    """A baseline server (`python -m benchmarks.baselines.NAME`); ready once it listens
    (uvicorn binds after its lifespan startup has finished)."""

    def __init__(self, log_dir: Path, module: str, args: list[str]) -> None:
        super().__init__(log_dir, None, args=args)
        self.module = module
        self.name = f"{module.rsplit('.', 1)[-1]}-{self.port}"

    def start(self) -> Self:
        argv = [sys.executable, "-m", self.module, "--host", HOST, "--port", str(self.port)]
        self._spawn([*argv, *self.args])
        self._wait_until(self.ready, "listening")
        return self

    def ready(self) -> bool:
        return listening(self.port)


def listening(port: int) -> bool:
    """True if something accepts connections on `port` (uvicorn binds after its lifespan
    startup has finished)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class ReferenceProcess(ServerProcess):
    """`counter-service serve` of the reference commit, run from its own checkout."""

    def __init__(
        self, log_dir: Path, redis_url: str, args: list[str], env: dict[str, str] | None
    ) -> None:
        source = reference.checkout(Path(tempfile.gettempdir()) / f"cs-{REFERENCE_COMMIT}")
        env = {**(env or {}), "PYTHONPATH": str(source)}
        super().__init__(log_dir, redis_url, extra_env=env, args=args)
        self.cwd = source  # `python -m` puts the working directory first on sys.path


class ListeningProcess(ServerProcess):
    """An ASGI app under uvicorn that has no /readyz: ready once it listens."""

    def ready(self) -> bool:
        return listening(self.port)


def counter_key(variant: Variant, name: str) -> str:
    """The Redis key holding counter `name` in a variant that keeps it in Redis."""
    if variant.key in OURS:
        return Names(DEFAULT_NAMESPACE).value(name)
    if variant.key == "r":
        return reference.COUNTER_KEY.format(name=name)
    if variant.key == "c":
        return naive_flet.key(name)
    return sio_baseline.PREFIX + name


class VariantFleet(Fleet):
    """A fresh redis-server (a cluster for (k)) and two server processes of one variant,
    stopped by PID."""

    def __init__(self, variant: Variant, env: dict[str, str] | None = None) -> None:
        self.variant = variant
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{variant.key}-"))
        self.file_base = log_dir / "counter"
        self.cluster = (
            ClusterSet(log_dir, masters=CLUSTER_MASTERS, replicas_per_master=0)
            if variant.key == "k"
            else None
        )
        super().__init__(variant.servers, log_dir=log_dir, server_env=env)
        self._redis_client: Redis | RedisCluster | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def redis_url(self) -> str:
        return self.redis.url if self.cluster is None else self.cluster.url

    def start_redis(self) -> None:
        if self.cluster is None:
            super().start_redis()
        else:
            self.cluster.start()

    def stop_redis(self) -> None:
        if self.cluster is None:
            super().stop_redis()
        else:
            self.cluster.stop()

    @property
    def redis_nodes(self) -> list[RedisProcess]:
        return [self.redis] if self.cluster is None else self.cluster.nodes

    def new_server(self) -> ServerProcess:
        key = self.variant.key
        if key in OURS:
            fanout = "update" if key == "u" else "direct"
            args = ["--log-level", "warning", "--fanout", fanout]
            return ServerProcess(self.log_dir, self.redis_url, args=args, extra_env=self.server_env)
        quiet = ["--log-level", "warning"]
        if key == "r":
            return ReferenceProcess(self.log_dir, self.redis.url, quiet, self.server_env)
        if key == "p":
            app = f"{pubsub_app.__name__}:service_app"
            return ServerProcess(self.log_dir, self.redis.url, args=["--factory", *quiet], app=app)
        if key == "f":
            app = f"{pubsub_app.__name__}:flet_app"
            return ListeningProcess(self.log_dir, None, args=["--factory", *quiet], app=app)
        if key == "b":
            return BaselineProcess(self.log_dir, article.__name__, ["--file", str(self.file_base)])
        module = naive_flet.__name__ if key == "c" else sio_baseline.__name__
        return BaselineProcess(self.log_dir, module, ["--redis-url", self.redis.url])

    @property
    def server_pids(self) -> list[int]:
        return [s.pid for s in self.servers if s.pid is not None]

    def cpu(self) -> tuple[dict[int, float], dict[int, float]]:
        """CPU snapshots of the server processes and of the redis-servers."""
        redis = [node.pid for node in self.redis_nodes if node.pid is not None]
        return procstat.snapshot(self.server_pids), procstat.snapshot(redis)

    def running(self) -> list[bool]:
        return [s.running for s in self.servers]

    def log_tails(self, lines: int = 5) -> dict[str, str]:
        return {s.name: s.log_tail(lines) for s in self.servers}

    def log_problems(self) -> dict[str, Any]:
        """Tracebacks in the server logs so far, and the most frequent exception."""
        text = "\n".join(s.log_tail(10**9) for s in self.servers)
        count, exception, first = summarize_tracebacks(text)
        return {"server_tracebacks": count, "top_exception": exception, "first_traceback": first}

    @property
    def redis_client(self) -> Redis | RedisCluster:
        if self._redis_client is None:
            if self.cluster is None:
                self._redis_client = Redis.from_url(
                    self.redis.url, decode_responses=True, client_name=HARNESS
                )
            else:
                seed = self.cluster.nodes[0].port
                self._redis_client = RedisCluster(
                    HOST, seed, decode_responses=True, client_name=HARNESS
                )
        return self._redis_client

    async def next_value(self, clients: Sequence[Client]) -> int:
        """The clicks value the next click should make every page show."""
        if self.variant.key in PUBSUB:  # the page shows the last broadcast number
            return max((c.shown(CLICKS) or 0) for c in clients) + 1
        return await self.read_counter(CLICKS) + 1

    async def read_counter(self, name: str) -> int:
        """The counter's value in the variant's store (Redis key, or the shared file)."""
        if self.variant.key == "b":
            return article.get_count(article.counter_path(self.file_base, name))
        return int(await self.redis_client.get(counter_key(self.variant, name)) or 0)

    async def redis_connections(self) -> int:
        """Clients connected to this fleet's redis-servers (every node of a cluster), not
        counting the harness's own."""
        count = 0
        for node in self.redis_nodes:
            async with Redis(host=HOST, port=node.port, client_name=HARNESS) as client:
                count += sum(c["name"] != HARNESS for c in await client.client_list())
        return count

    async def open_client(self, server: int) -> Client:
        url = self.servers[server].url
        if self.variant.protocol == "socketio":
            if self._http is None:
                self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            return await SocketIOClient.open(server, url, CONNECT_TIMEOUT_S, self._http)
        return await FletClient.open(server, url, CONNECT_TIMEOUT_S)

    async def aclose(self) -> None:
        if self._redis_client is not None:
            await self._redis_client.aclose()
            self._redis_client = None
        if self._http is not None:
            await self._http.close()
            self._http = None


@contextlib.asynccontextmanager
async def running_fleet(
    variant: Variant, keep_logs: bool = False, env: dict[str, str] | None = None
) -> AsyncIterator[VariantFleet]:
    """Start a fleet (in a thread: starting blocks) with `env` added to its servers'
    environment, yield it, always stop it; its log directory is removed unless
    `keep_logs`."""
    fleet = VariantFleet(variant, env)
    try:
        await asyncio.to_thread(fleet.start)
        yield fleet
    finally:
        try:
            await fleet.aclose()
        finally:
            await asyncio.to_thread(fleet.stop)
            if keep_logs:
                print(f"logs of ({variant.key}) kept in {fleet.log_dir}", flush=True)
            else:
                shutil.rmtree(fleet.log_dir, ignore_errors=True)


async def close_all(clients: Sequence[Client], timeout: float = 30.0) -> None:
    """Close clients concurrently, giving up after `timeout` (the servers stop anyway)."""
    if not clients:
        return
    tasks = [asyncio.ensure_future(c.close()) for c in clients]
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
