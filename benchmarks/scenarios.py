"""The scenarios. Each runs against one started fleet and returns result rows (dicts).

Every loop here is bounded in count and in time, and every client is closed in a
`finally`; the runner stops the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.abuse import AbuseConfig, flood_scenario, memory_scenario
from benchmarks.clients import Client
from benchmarks.redis_topologies import TopologyConfig
from benchmarks.stats import (
    Broadcast,
    Shown,
    account_lost,
    clicks_for,
    median,
    parse_redis_benchmark,
    per_unit,
    percentile,
    sessions_per_core,
    summarize_broadcasts,
)
from benchmarks.variants import PUBSUB, Variant, VariantFleet, close_all
from counter_service.devtools.fleet import HOST, RedisProcess
from counter_service.names import Names
from counter_service.redis.scripts import INCREMENT
from ui.contract import CLICKS

Row = dict[str, Any]
OPEN_CONCURRENCY = 50
CLICK_GAP_S = 0.05


@dataclass(frozen=True)
class Config:
    """Sizes, counts and time caps of one run (`quick()` for the short one)."""

    fanout_sizes: tuple[int, ...] = (100, 500, 1000)
    fanout_clicks: int = 5
    scaling_sizes: tuple[int, ...] = (100, 250, 500, 1000)
    scaling_updates: int = 4000
    """Scaling clicks until about this many updates were due (10 to 40 clicks a size)."""
    connection_sizes: tuple[int, ...] = (100, 500, 1000)
    lost_clients: int = 20
    lost_increments: int = 50
    throughput_clients: int = 20
    throughput_s: float = 10.0
    redis_benchmark_requests: int = 100_000
    open_budget_s: float = 45.0
    """Time allowed for opening sessions, per variant and scenario, all sizes together."""
    idle_s: float = 1.0
    """A broadcast ends when nothing more arrived for this long..."""
    broadcast_cap_s: float = 10.0
    """... or after this long in any case."""
    click_timeout_s: float = 2.0
    """How long a closed-loop client waits for its shown value to go up."""
    settle_cap_s: float = 20.0
    converge_cap_s: float = 30.0
    measure_cap_s: float = 20.0
    """Time allowed for the clicks of one size in fanout and scaling."""
    variant_cap_s: float = 240.0
    """Wall-clock cap of one variant in one scenario."""
    abuse: AbuseConfig = field(default_factory=AbuseConfig)
    """Sizes of the flood and memory scenarios."""
    topologies: TopologyConfig = field(default_factory=TopologyConfig)
    """Sizes of the shards and wait scenarios (Redis alone, no variants)."""

    @classmethod
    def quick(cls) -> Config:
        return cls(
            fanout_sizes=(100,),
            scaling_sizes=(100,),
            scaling_updates=2000,
            connection_sizes=(100,),
            throughput_s=3.0,
            redis_benchmark_requests=20_000,
            open_budget_s=20.0,
            variant_cap_s=60.0,
            abuse=AbuseConfig.quick(),
            topologies=TopologyConfig.quick(),
        )


class Sessions:
    """The open clients of one fleet, spread evenly over its server processes."""

    def __init__(self, fleet: VariantFleet) -> None:
        self.fleet = fleet
        self.clients: list[Client] = []
        self.failures: list[str] = []
        self.open_seconds = 0.0

    async def grow(self, target: int, budget_s: float) -> bool:
        """Open clients until there are `target` (round robin over servers); False if the
        time spent opening (in all calls) reached `budget_s` or opening kept failing."""
        started = time.monotonic()
        deadline = started + budget_s - self.open_seconds
        try:
            while len(self.clients) < target:
                if time.monotonic() >= deadline or len(self.failures) > max(10, target // 20):
                    return False
                batch = min(OPEN_CONCURRENCY, target - len(self.clients))
                await self._open_batch(batch, deadline)
            return True
        finally:
            self.open_seconds += time.monotonic() - started

    async def _open_batch(self, count: int, deadline: float) -> None:
        servers = len(self.fleet.servers)
        first = len(self.clients)
        jobs = [self.fleet.open_client((first + i) % servers) for i in range(count)]
        remaining = max(0.1, deadline - time.monotonic())
        tasks = [asyncio.ensure_future(job) for job in jobs]
        done, pending = await asyncio.wait(tasks, timeout=remaining)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is None:
                self.clients.append(task.result())
            else:
                self.failures.append(repr(task.exception())[:200])

    async def close(self) -> None:
        clients, self.clients = self.clients, []
        await close_all(clients)


async def settle(fleet: VariantFleet, cap_s: float, window_s: float = 0.5) -> float:
    """Wait until the server processes are nearly idle (under 10% of a core over
    `window_s`), at most `cap_s`; return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < cap_s:
        before = procstat.snapshot(fleet.server_pids)
        await asyncio.sleep(window_s)
        if procstat.used(before, procstat.snapshot(fleet.server_pids)) < 0.1 * window_s:
            break
    return time.monotonic() - started


@dataclass
class BroadcastRun:
    broadcasts: list[Broadcast]
    server_cpu_s: float
    redis_cpu_s: float


async def measure_broadcasts(
    fleet: VariantFleet, clients: Sequence[Client], clicks: int, cfg: Config
) -> BroadcastRun:
    """Click `clicks` times (fewer if `measure_cap_s` ran out) from the first client, one
    click after the other; each ends when every client showed it, nothing arrived for
    `idle_s`, or after `broadcast_cap_s`.
    CPU is counted from each click until shortly (under 0.25 s) after its last arrival,
    so the idle wait that ends an incomplete broadcast is not charged."""
    run = BroadcastRun([], 0.0, 0.0)
    stop_at = time.monotonic() + cfg.measure_cap_s
    for _ in range(clicks):
        if run.broadcasts and time.monotonic() > stop_at:
            break
        await _one_broadcast(fleet, clients, cfg, run)
        await asyncio.sleep(CLICK_GAP_S)
    return run


async def _one_broadcast(
    fleet: VariantFleet, clients: Sequence[Client], cfg: Config, run: BroadcastRun
) -> None:
    target = await fleet.next_value(clients)
    arrivals: dict[int, float] = {}
    everyone = asyncio.Event()

    def listen(client: Client, key: str, value: int, at: float) -> None:
        if key == CLICKS and value >= target and id(client) not in arrivals:
            arrivals[id(client)] = at
            if len(arrivals) == len(clients):
                everyone.set()

    for client in clients:
        client.listener = listen
    try:
        before = after = fleet.cpu()
        counted = 0
        sent = time.monotonic()
        await clients[0].click()
        while not everyone.is_set():
            now = time.monotonic()
            if len(arrivals) > counted:
                after, counted = fleet.cpu(), len(arrivals)
            last = max(arrivals.values(), default=sent)
            wait = min(cfg.idle_s - (now - last), cfg.broadcast_cap_s - (now - sent))
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), min(wait, 0.25))
        if everyone.is_set() or not arrivals:
            after = fleet.cpu()
    finally:
        for client in clients:
            client.listener = None
    run.server_cpu_s += procstat.used(before[0], after[0])
    run.redis_cpu_s += procstat.used(before[1], after[1])
    last_arrival = max(arrivals.values()) - sent if arrivals else None
    run.broadcasts.append(Broadcast(len(clients), len(arrivals), last_arrival))


def _cut_short(sessions: Sessions, size: int) -> Row:
    failures = sessions.failures
    errors = f"; {len(failures)} failed, first: {failures[0]}" if failures else ""
    return {
        "sessions": size,
        "opened": len(sessions.clients),
        "note": f"stopped: {len(sessions.clients)} of {size} sessions open after "
        f"{sessions.open_seconds:.0f}s of opening{errors}",
    }


def _delivery_row(size: int, run: BroadcastRun, sessions: Sessions) -> Row:
    summary = summarize_broadcasts(run.broadcasts)
    delivered = summary["delivered"]
    cpu_per_update = per_unit(run.server_cpu_s, delivered)
    return {
        "sessions": size,
        "open_s": round(sessions.open_seconds, 1),
        **summary,
        "server_cpu_s": run.server_cpu_s,
        "redis_cpu_s": run.redis_cpu_s,
        "server_cpu_per_update_us": None if cpu_per_update is None else cpu_per_update * 1e6,
        "redis_cpu_per_update_us": _micro(per_unit(run.redis_cpu_s, delivered)),
        "server_cpu_per_broadcast_ms": _milli(per_unit(run.server_cpu_s, len(run.broadcasts))),
    }


def _micro(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def _milli(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


async def _sweep(
    fleet: VariantFleet,
    cfg: Config,
    sizes: Sequence[int],
    measure: Callable[[Sessions, int], Awaitable[Row]],
) -> list[Row]:
    """Grow the sessions through `sizes` and add `measure`'s row at each size reached (at
    least 10% more than last measured). When a size cannot be opened in time, the number
    reached is measured and a row says where it stopped."""
    sessions = Sessions(fleet)
    rows: list[Row] = []
    measured = 0
    try:
        for size in sizes:
            complete = await sessions.grow(size, cfg.open_budget_s)
            reached = len(sessions.clients)
            if reached >= 1.1 * measured and reached > 0:
                rows.append(await measure(sessions, reached))
                measured = reached
            if not complete:
                rows.append(_cut_short(sessions, size))
                break
    finally:
        await sessions.close()
    return rows


async def _delivery_sweep(
    fleet: VariantFleet,
    cfg: Config,
    sizes: Sequence[int],
    clicks: Callable[[int], int],
    extra: Callable[[Row], None] = lambda row: None,
) -> list[Row]:
    """At each size of `sizes`, settle and measure broadcasts."""

    async def measure(sessions: Sessions, reached: int) -> Row:
        settled = await settle(fleet, cfg.settle_cap_s)
        run = await measure_broadcasts(fleet, sessions.clients, clicks(reached), cfg)
        row = _delivery_row(reached, run, sessions)
        row["settle_s"] = round(settled, 1)
        extra(row)
        return row

    return await _sweep(fleet, cfg, sizes, measure)


async def fanout(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """Time from one click until the last of S sessions shows it, and server CPU per
    delivered update."""
    return await _delivery_sweep(fleet, cfg, cfg.fanout_sizes, lambda _size: cfg.fanout_clicks)


async def scaling(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """Server CPU per broadcast and per delivered update as sessions grow, and the
    sessions one core keeps up to date at 1 and 10 updates a second."""

    def capacity(row: Row) -> None:
        per_update = row["server_cpu_per_update_us"]
        seconds = None if per_update is None else per_update / 1e6
        row["sessions_per_core_at_1_per_s"] = sessions_per_core(seconds, 1.0)
        row["sessions_per_core_at_10_per_s"] = sessions_per_core(seconds, 10.0)

    def clicks(size: int) -> int:
        return clicks_for(cfg.scaling_updates, size, low=10, high=40)

    return await _delivery_sweep(fleet, cfg, cfg.scaling_sizes, clicks, capacity)


async def connections(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """Redis connections (CLIENT LIST, without the harness's own) at S sessions."""
    await settle(fleet, cfg.settle_cap_s)
    idle: Row = {"sessions": 0, "redis_connections": await fleet.redis_connections()}

    async def measure(_sessions: Sessions, reached: int) -> Row:
        await settle(fleet, cfg.settle_cap_s)
        count = await fleet.redis_connections()
        return {
            "sessions": reached,
            "redis_connections": count,
            "per_session": round(count / reached, 2),
        }

    return [idle, *await _sweep(fleet, cfg, cfg.connection_sizes, measure)]


async def lost(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """N clients x M clicks sent back to back: final counter vs expected, clients that
    converged on it per process, and how often a shown value went down."""
    sessions = Sessions(fleet)
    try:
        if not await sessions.grow(cfg.lost_clients, cfg.open_budget_s):
            return [_cut_short(sessions, cfg.lost_clients)]
        await settle(fleet, cfg.settle_cap_s)
        for client in sessions.clients:
            client.decreases.clear()
        initial = await fleet.read_counter(CLICKS)
        started = time.monotonic()
        await asyncio.gather(*(_click_burst(c, cfg.lost_increments) for c in sessions.clients))
        sent_s = time.monotonic() - started
        end = await _wait_converged(fleet, sessions.clients, cfg)
        shown = [
            Shown(c.server, c.shown(CLICKS), c.decreases.get(CLICKS, 0)) for c in sessions.clients
        ]
        increments = cfg.lost_increments * len(sessions.clients)
        row = account_lost(initial, increments, end.final, shown, len(fleet.servers))
        return [
            {
                "clients": len(sessions.clients),
                "sent_s": round(sent_s, 2),
                "all_show_final_after_s": end.all_show_final_after_s,
                **row,
                **fleet.log_problems(),
            }
        ]
    finally:
        await sessions.close()


async def _click_burst(client: Client, clicks: int) -> None:
    for _ in range(clicks):
        await client.click()


@dataclass(frozen=True)
class Converged:
    final: int
    """The store's value once everything was quiet."""
    all_show_final_after_s: float | None
    """From the start of the wait until every client showed `final`; None if some never did."""


async def _wait_converged(
    fleet: VariantFleet, clients: Sequence[Client], cfg: Config, window_s: float = 0.25
) -> Converged:
    """Wait until the servers are idle (under 10% of a core) and neither the store nor
    any client changed over `window_s` (servers and clients may still be working
    through a backlog); at most `converge_cap_s`."""
    started = time.monotonic()
    seen: tuple[int, tuple[int | None, ...]] | None = None
    all_shown: float | None = None
    while time.monotonic() - started < cfg.converge_cap_s:
        before = procstat.snapshot(fleet.server_pids)
        await asyncio.sleep(window_s)
        busy = procstat.used(before, procstat.snapshot(fleet.server_pids))
        state = (await fleet.read_counter(CLICKS), tuple(c.shown(CLICKS) for c in clients))
        if all(value == state[0] for value in state[1]):
            all_shown = time.monotonic() - started if all_shown is None else all_shown
        else:
            all_shown = None
        if state == seen and busy < 0.1 * window_s:
            break
        seen = state
    final = await fleet.read_counter(CLICKS)
    if any(c.shown(CLICKS) != final for c in clients):
        all_shown = None
    return Converged(final, all_shown)


async def throughput(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """Clients in a closed loop (read the counter, click, wait until the own page shows
    at least that value + 1, repeat): applied clicks per second and latency."""
    sessions = Sessions(fleet)
    try:
        if not await sessions.grow(cfg.throughput_clients, cfg.open_budget_s):
            return [_cut_short(sessions, cfg.throughput_clients)]
        await settle(fleet, cfg.settle_cap_s)
        initial = await fleet.read_counter(CLICKS)
        servers_before, redis_before = fleet.cpu()
        started = time.monotonic()
        stop_at = started + cfg.throughput_s
        loops = await asyncio.gather(
            *(_closed_loop(fleet, c, stop_at, cfg) for c in sessions.clients)
        )
        elapsed = time.monotonic() - started
        applied = await fleet.read_counter(CLICKS) - initial
        servers_after, redis_after = fleet.cpu()
        end = await _wait_converged(fleet, sessions.clients, cfg)
        problems = fleet.log_problems()
    finally:
        await sessions.close()
    latencies = [lat for loop in loops for lat in loop[0]]
    timeouts = sum(loop[1] for loop in loops)
    sent = len(latencies) + timeouts
    return [
        {
            "clients": cfg.throughput_clients,
            "seconds": round(elapsed, 2),
            "sent": sent,
            "applied": applied,
            "applied_per_s": applied / elapsed,
            "applied_later": end.final - initial - applied,
            "never_applied": sent - (end.final - initial),
            "all_show_final_after_s": end.all_show_final_after_s,
            "timeouts": timeouts,
            "p50_ms": _milli(median(latencies)),
            "p99_ms": _milli(percentile(latencies, 99)),
            "server_cpu_s": procstat.used(servers_before, servers_after),
            "redis_cpu_s": procstat.used(redis_before, redis_after),
            **problems,
        }
    ]


async def _closed_loop(
    fleet: VariantFleet, client: Client, stop_at: float, cfg: Config
) -> tuple[list[float], int]:
    """Click, then wait until the page shows a value above both the counter read just
    before the click and what it showed then: a state no older than the click. (Only the
    file baseline's counter can fall below a shown value: its file gets reset.)"""
    latencies: list[float] = []
    timeouts = 0
    while time.monotonic() < stop_at:
        before = max(await fleet.read_counter(CLICKS), client.shown(CLICKS) or 0)
        fresh = _shows_at_least(before + 1)
        sent = time.monotonic()
        await client.click()
        if await client.wait_until(fresh, cfg.click_timeout_s):
            latencies.append(time.monotonic() - sent)
        else:
            timeouts += 1
    return latencies, timeouts


def _shows_at_least(value: int) -> Callable[[Client], bool]:
    return lambda client: (client.shown(CLICKS) or 0) >= value


def redis_script_vs_incr(cfg: Config) -> list[Row]:
    """`redis-benchmark` (50 clients, no pipelining) on one fresh redis-server with no
    subscribers: plain INCR, then our increment script by EVALSHA with its real keys."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return [{"note": "redis-benchmark is missing (apt-get install redis-tools)"}]
    log_dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    redis = RedisProcess(log_dir)
    redis.start()
    try:
        names = Names("bench")
        sha = _redis_cli(redis.port, "SCRIPT", "LOAD", INCREMENT)
        requests = str(cfg.redis_benchmark_requests)
        common = [binary, "-h", HOST, "-p", str(redis.port), "-n", requests]
        script = ["EVALSHA", sha, "2", names.value("clicks"), names.version("clicks")]
        runs = {
            "INCR": [*common, "-q", "-t", "incr"],
            "increment script (EVALSHA)": [
                *common,
                "-q",
                *script,
                names.counter_channel(CLICKS),
                CLICKS,
                "1",
                names.publish_command,
            ],
        }
        rows = []
        for label, argv in runs.items():
            output = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
            parsed = parse_redis_benchmark(output)
            rps = next((v for k, v in parsed.items() if not k.endswith("p50 ms")), None)
            p50 = next((v for k, v in parsed.items() if k.endswith("p50 ms")), None)
            rows.append({"command": label, "requests_per_s": rps, "p50_ms": p50})
        value = int(_redis_cli(redis.port, "GET", names.value("clicks")))
        rows[-1]["counter_after"] = value
        return rows
    finally:
        redis.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def _redis_cli(port: int, *args: str) -> str:
    argv = ["redis-cli", "-h", HOST, "-p", str(port), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


async def pubsub(fleet: VariantFleet, cfg: Config) -> list[Row]:
    """One session broadcasts with `page.pubsub.send_all_on_topic` and every session's
    page shows it: time until the last one does, and server CPU per delivered message
    (counter_service.app over two workers against Flet's own hub in one process)."""

    def clicks(size: int) -> int:
        return clicks_for(cfg.scaling_updates, size, low=10, high=40)

    return await _delivery_sweep(fleet, cfg, cfg.fanout_sizes, clicks)


Scenario = Callable[[VariantFleet, Config], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    "fanout": fanout,
    "lost": lost,
    "throughput": throughput,
    "connections": connections,
    "scaling": scaling,
    "pubsub": pubsub,
    "flood": lambda fleet, cfg: flood_scenario(fleet, cfg.abuse),
    "memory": lambda fleet, cfg: memory_scenario(fleet, cfg.abuse),
}
# lost and throughput send clicks back to back from each session to measure atomicity
# and capacity; the per-session rate limit (20/s, bursts of 40) would refuse most of
# them, so those two run with it out of the way (flood measures the limit itself).
UNLIMITED = {"COUNTER_EVENTS_PER_S": "10000", "COUNTER_EVENT_BURST": "100000"}
SCENARIO_ENV = {
    "memory": {"FLET_SESSION_TIMEOUT": "5"},  # departed sessions must expire within it
    "lost": UNLIMITED,
    "throughput": UNLIMITED,
}
"""Server environment a scenario needs."""
SCENARIO_CAP_S = {"flood": 300.0, "memory": 900.0}
"""Scenarios that need longer than `Config.variant_cap_s` per variant."""
LIFE = ("flood", "memory")
"""Scenarios of a worker's own life: this project now, and before the library change."""


def inapplicable(scenario: str, variant: Variant) -> str | None:
    """Why a variant is left out of a scenario, or None if it takes part."""
    if (scenario == "pubsub") != (variant.key in PUBSUB):
        return "not applicable: the pubsub scenario has its own pair of variants"
    if scenario in LIFE and variant.key not in ("a", "r"):
        return "not applicable: measures this project now and before the library change"
    if scenario == "connections" and not variant.uses_redis:
        return "not applicable: no Redis (counters live in a shared file)"
    return None
