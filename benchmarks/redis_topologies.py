"""What the Redis topology costs an increment, measured on Redis itself (issue 8).

`shards`: the increment script run by `redis-benchmark` against one server and against
clusters of 1, 2 and 3 masters, each run beside the others in one command. Every
shard gets its own counter (redis-benchmark's `{tag}`), as counters spread over a real
cluster. The CPU columns say what bounds the figure on the machine it ran on.

`wait`: increments through the service's own path (`IncrementBatcher` over
`CounterStore`) against a master with one replica, acknowledged at once (the default)
and after `WAIT 1`, at one caller and at many, in one command.
"""

from __future__ import annotations

import asyncio
import functools
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.stats import parse_redis_benchmark, percentile
from counter_service.devtools.fleet import HOST, RedisProcess, free_port
from counter_service.devtools.topologies import (
    ClusterSet,
    data_node,
    probe,
    replica_in_sync,
    wait_until,
)
from counter_service.errors import NotReplicated
from counter_service.names import Names
from counter_service.redis.batching import IncrementBatcher
from counter_service.redis.connections import connections_for
from counter_service.redis.scripts import INCREMENT
from counter_service.redis.store import CounterStore
from counter_service.settings import Settings

Row = dict[str, Any]
CLIENTS = 50
SHARDS = (1, 2, 3)
WAIT_CALLERS = (1, 20)
NAMESPACE = "bench"
TOPOLOGY = "master + 1 replica"


@dataclass(frozen=True)
class TopologyConfig:
    requests: int = 200_000
    """redis-benchmark requests per topology."""
    wait_s: float = 5.0
    """How long each WAIT row keeps its callers busy."""

    @classmethod
    def quick(cls) -> TopologyConfig:
        return cls(requests=20_000, wait_s=1.0)


def shards(cfg: TopologyConfig) -> list[Row]:
    """The increment script's requests per second on one server and on 1-3 shards."""
    if shutil.which("redis-benchmark") is None or shutil.which("redis-cli") is None:
        return [{"note": "redis-benchmark or redis-cli is missing (apt-get install redis-tools)"}]
    rows = [_benchmark_server(cfg)]
    rows += [_benchmark_cluster(cfg, masters) for masters in SHARDS]
    return rows


def _benchmark_server(cfg: TopologyConfig) -> Row:
    with _log_dir("shards") as log_dir:
        server = RedisProcess(log_dir).start()
        try:
            row = _run_script(cfg, [server], Names(NAMESPACE), cluster=False)
        finally:
            server.stop()
    return {"topology": "one server", "shards": 1, **row}


def _benchmark_cluster(cfg: TopologyConfig, masters: int) -> Row:
    with _log_dir("shards") as log_dir:
        cluster = ClusterSet(log_dir, masters=masters, replicas_per_master=0).start()
        try:
            # redis-benchmark's cluster mode wants three nodes; one shard holds every slot,
            # so it is benchmarked like a server (the literal `{tag}` is its hash tag).
            names = Names(NAMESPACE, sharded=True)
            row = _run_script(cfg, cluster.nodes, names, cluster=masters > 1)
        finally:
            cluster.stop()
    return {"topology": f"cluster, {masters} master{'s' * (masters > 1)}", "shards": masters, **row}


def _run_script(cfg: TopologyConfig, nodes: list[RedisProcess], names: Names, cluster: bool) -> Row:
    """redis-benchmark running the increment script with its real keys and channel."""
    sha = ""
    for node in nodes:
        sha = str(probe(node.port, "SCRIPT", "LOAD", INCREMENT))
    tag = "tag"  # `{tag}` in the keys: redis-benchmark puts a tag of each node's slots there
    argv = [
        *("redis-benchmark", "-h", HOST, "-p", str(nodes[0].port)),
        *("-n", str(cfg.requests), "-c", str(CLIENTS), "-q"),
        *(["--cluster"] if cluster else []),
        *("EVALSHA", sha, "2", names.value(tag), names.version(tag)),
        *(names.counter_channel(tag), tag, "1", names.publish_command),
    ]
    pids = [node.pid for node in nodes if node.pid is not None]
    before, children = procstat.snapshot(pids), _children_cpu()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - started
    redis_cpu = procstat.used(before, procstat.snapshot(pids))
    if done.returncode != 0:
        return {"note": f"redis-benchmark failed: {done.stderr.strip()[-200:]}"}
    parsed = parse_redis_benchmark(done.stdout)
    counted = sum(_counted(node.port, names) for node in nodes)
    return {
        "requests_per_s": next((v for k, v in parsed.items() if not k.endswith("p50 ms")), None),
        "p50_ms": next((v for k, v in parsed.items() if k.endswith("p50 ms")), None),
        "redis_cpu_pct": 100 * redis_cpu / wall,
        "busiest_shard_cpu_pct": 100 * _busiest(before, procstat.snapshot(pids)) / wall,
        "client_cpu_pct": 100 * (_children_cpu() - children) / wall,
        "counted": counted,
        "requests": cfg.requests,
    }


def _counted(port: int, names: Names) -> int:
    """The sum of the counters on one node (each shard has its own)."""
    keys = probe(port, "KEYS", f"{names.namespace}:counter:*")
    return sum(int(probe(port, "GET", key)) for key in keys)  # a cluster refuses MGET


def _busiest(before: dict[int, float], after: dict[int, float]) -> float:
    return max((after[pid] - before[pid] for pid in before if pid in after), default=0.0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait(cfg: TopologyConfig) -> list[Row]:
    """Increments per second and latency with and without `WAIT 1`, same pair of servers."""
    with _log_dir("wait") as log_dir, _replicated(log_dir) as (master, replica):
        rows = []
        for callers in WAIT_CALLERS:
            for replicas in (0, 1):
                row = asyncio.run(_increments(master.url, replicas, callers, cfg.wait_s))
                acknowledged = _acknowledged(replicas)
                rows.append({"topology": TOPOLOGY, "acknowledged": acknowledged, **row})
        names = Names(NAMESPACE)
        key = names.value("wait")
        wait_until(
            lambda: probe(replica.port, "GET", key) == probe(master.port, "GET", key),
            timeout=10.0,
            what="replica caught up",
            processes=[master, replica],
        )
        rows[-1]["replica_value"] = int(probe(replica.port, "GET", key))
        return rows


def _acknowledged(replicas: int) -> str:
    return "by the master (default)" if replicas == 0 else f"after WAIT {replicas}"


@contextmanager
def _replicated(log_dir: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    master = data_node(log_dir, free_port())
    replica = data_node(log_dir, free_port(), "--replicaof", HOST, str(master.port))
    try:
        master.start()
        replica.start()
        in_sync = functools.partial(replica_in_sync, replica.port)
        wait_until(in_sync, timeout=30.0, what="replica in sync", processes=[replica])
        yield master, replica
    finally:
        replica.stop()
        master.stop()


async def _increments(url: str, replicas: int, callers: int, seconds: float) -> Row:
    """`callers` closed-loop callers incrementing one counter for `seconds`."""
    settings = Settings(redis_url=url, namespace=NAMESPACE, wait_replicas=replicas)
    connections = connections_for(settings, "bench")
    store = CounterStore(connections.commands, Names(NAMESPACE), wait_replicas=replicas)
    batcher = IncrementBatcher(store)
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                await batcher.incr("wait")
            except NotReplicated:
                failures += 1  # counted on the master all the same
            latencies.append(time.monotonic() - began)

    try:
        began = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(callers)))
        wall = time.monotonic() - began
    finally:
        await batcher.stop()
        await connections.aclose()
    return {
        "callers": callers,
        "increments_per_s": len(latencies) / wall,
        "p50_ms": 1e3 * (percentile(latencies, 50) or 0.0),
        "p99_ms": 1e3 * (percentile(latencies, 99) or 0.0),
        "increments": len(latencies),
        "not_replicated": failures,
    }


@contextmanager
def _log_dir(kind: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


STANDALONE: dict[str, Callable[[TopologyConfig], list[Row]]] = {"shards": shards, "wait": wait}
"""Scenarios that start their own Redis and no variant's servers."""
