"""Scenarios of a worker's own life: a flooding session, and memory per session.

Both put every session on the first server process: that is the worker they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks import procstat
from benchmarks.clients import Client
from benchmarks.stats import percentile
from benchmarks.variants import VariantFleet, close_all
from ui.contract import CLICKS

Row = dict[str, object]
MB = 1024 * 1024
HUMAN_GAP_S = 0.5
"""Pause between two clicks of a session that clicks like a person."""
RSS_EVERY_S = 0.25


@dataclass(frozen=True)
class AbuseConfig:
    """Sizes and durations of the flood and memory scenarios."""

    clickers: int = 20
    flood_s: float = 10.0
    settle_s: float = 5.0
    memory_sizes: tuple[int, ...] = (1000, 5000)
    open_budget_s: float = 180.0
    expiry_wait_s: float = 30.0
    """How long to wait for departed sessions to expire (the servers run with a 5 s
    session timeout; Flet sweeps every 10 s)."""

    @classmethod
    def quick(cls) -> AbuseConfig:
        return cls(flood_s=3.0, settle_s=2.0, memory_sizes=(200,), open_budget_s=60.0)


async def open_on_first(fleet: VariantFleet, count: int, budget_s: float) -> list[Client]:
    """`count` clients, all on server 0, opened 50 at a time within `budget_s`."""
    clients: list[Client] = []
    deadline = time.monotonic() + budget_s
    while len(clients) < count and time.monotonic() < deadline:
        batch = min(50, count - len(clients))
        opened = await asyncio.gather(
            *(fleet.open_client(0) for _ in range(batch)), return_exceptions=True
        )
        clients += [c for c in opened if isinstance(c, Client)]
    return clients


# The flood


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)
    timeouts: int = 0

    def p99_ms(self) -> float | None:
        p99 = percentile(self.samples, 99)
        return None if p99 is None else p99 * 1000

    def clicks(self) -> int:
        """Clicks sent: each one was either seen (a sample) or timed out."""
        return len(self.samples) + self.timeouts


async def click_like_a_person(client: Client, until: float, into: Latencies) -> None:
    """Click, wait until the own page shows a newer value, pause; until `until`."""
    while time.monotonic() < until:
        before = client.shown(CLICKS) or 0
        sent = time.monotonic()
        await client.click()
        if await client.wait_until(_shows_more_than(before), 5.0):
            into.samples.append(time.monotonic() - sent)
        else:
            into.timeouts += 1
        await asyncio.sleep(HUMAN_GAP_S)


def _shows_more_than(value: int) -> Callable[[Client], bool]:
    return lambda client: (client.shown(CLICKS) or 0) > value


@dataclass
class Flood:
    """What one flooding attacker did: clicks sent, over how many connections."""

    sent: int = 0
    connections: int = 0


async def flood(fleet: VariantFleet, first: Client, until: float) -> Flood:
    """Send clicks back to back, without waiting for anything, until `until`; each time
    the server cuts the session off, open a new one and go on, as an attacker would."""
    done, client = Flood(), first
    try:
        while True:
            done.connections += 1
            done.sent += await _flood_one(client, until)
            if time.monotonic() >= until:
                return done
            await _close_unless_first(client, first)
            client = await fleet.open_client(0)
    except Exception:  # the worker refused a new session: the flood cannot go on
        return done
    finally:
        await _close_unless_first(client, first)


async def _close_unless_first(client: Client, first: Client) -> None:
    if client is not first:  # the scenario closes the first with the others
        with contextlib.suppress(Exception):
            await client.close()


async def _flood_one(client: Client, until: float) -> int:
    """Clicks sent on one connection before the server closed it (or `until`)."""
    sent = 0
    with contextlib.suppress(Exception):  # the server closes a flooding session
        while time.monotonic() < until:
            await client.click()
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0)  # let this process read what comes back
    return sent


async def sample_rss(pid: int, until: float) -> int:
    """The largest RSS of `pid` seen until `until`."""
    peak = 0
    while time.monotonic() < until:
        peak = max(peak, procstat.rss_bytes(pid))
        await asyncio.sleep(RSS_EVERY_S)
    return peak


async def phase(
    fleet: VariantFleet, clickers: Sequence[Client], seconds: float, flooder: Client | None
) -> tuple[Latencies, Flood]:
    """The clickers click for `seconds` (and `flooder` floods, reconnecting); their
    latencies, and what the flood did."""
    until = time.monotonic() + seconds
    latencies = Latencies()
    flooding = asyncio.ensure_future(_flood_or_not(fleet, flooder, until))
    await asyncio.gather(*(click_like_a_person(c, until, latencies) for c in clickers))
    return latencies, await flooding


async def _flood_or_not(fleet: VariantFleet, flooder: Client | None, until: float) -> Flood:
    return Flood() if flooder is None else await flood(fleet, flooder, until)


async def flood_scenario(fleet: VariantFleet, cfg: AbuseConfig) -> list[Row]:
    """20 sessions click like people on one worker, first alone, then while one more
    session floods it with clicks, reconnecting whenever it is cut off: their p99, the
    worker's RSS, the connections the flood opened and the clicks it got counted, and
    what the flood still costs once it stopped."""
    pid = fleet.server_pids[0]
    clients = await open_on_first(fleet, cfg.clickers + 1, 60.0)
    try:
        if len(clients) < cfg.clickers + 1:
            return [{"note": f"only {len(clients)} sessions opened"}]
        flooder, clickers = clients[0], clients[1:]
        start_rss = procstat.rss_bytes(pid)
        calm, _ = await phase(fleet, clickers, cfg.flood_s, None)
        before = await fleet.read_counter(CLICKS)
        peak = asyncio.ensure_future(sample_rss(pid, time.monotonic() + cfg.flood_s))
        flooded, attack = await phase(fleet, clickers, cfg.flood_s, flooder)
        counted = await fleet.read_counter(CLICKS) - before
        row: Row = {
            "calm_p99_ms": calm.p99_ms(),
            "flood_p99_ms": flooded.p99_ms(),
            "p99_ratio": _ratio(flooded.p99_ms(), calm.p99_ms()),
            "timeouts": flooded.timeouts,
            "flood_clicks_sent": attack.sent,
            "flood_connections": attack.connections,
            "counted_during_flood": counted,
            # Every click of the people counts once (they click far below the limit).
            "flood_clicks_counted": counted - flooded.clicks(),
            "rss_start_mb": round(start_rss / MB, 1),
            "rss_peak_mb": round(await peak / MB, 1),
        }
        row |= await aftermath(fleet, pid, cfg)
        return [row | await flood_again(fleet, pid, cfg)]
    finally:
        await close_all(clients)


async def aftermath(fleet: VariantFleet, pid: int, cfg: AbuseConfig) -> Row:
    """What the flood still costs from 1 to 3 s after it ended (CPU, clicks still being
    counted), and the RSS once things settled."""
    await asyncio.sleep(1.0)
    cpu_before = procstat.snapshot([pid])
    counted_1s = await fleet.read_counter(CLICKS)
    await asyncio.sleep(2.0)
    cpu_share = procstat.used(cpu_before, procstat.snapshot([pid])) / 2.0
    counted_3s = await fleet.read_counter(CLICKS)
    await asyncio.sleep(cfg.settle_s)
    return {
        "counted_1_to_3s_after": counted_3s - counted_1s,
        "cpu_1_to_3s_after_pct": round(cpu_share * 100, 1),
        "rss_after_mb": round(procstat.rss_bytes(pid) / MB, 1),
    }


async def flood_again(fleet: VariantFleet, pid: int, cfg: AbuseConfig) -> Row:
    """A second flood as long as the first, then the RSS once settled: what did not grow
    again is memory the allocator kept for reuse after the first, not a leak."""
    client = await fleet.open_client(0)
    try:
        await flood(fleet, client, time.monotonic() + cfg.flood_s)
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    await asyncio.sleep(cfg.settle_s)
    return {"rss_after_second_flood_mb": round(procstat.rss_bytes(pid) / MB, 1)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


# Memory per session


async def memory_scenario(fleet: VariantFleet, cfg: AbuseConfig) -> list[Row]:
    """RSS of one worker per live session, per departed session before it expired, what
    the allocator keeps once it expired, and what a second round of as many sessions
    adds on top: what departed sessions truly leave behind."""
    rows: list[Row] = []
    for size in cfg.memory_sizes:
        rows.append(await _memory_at(fleet, cfg, size))
    return rows


@dataclass
class _Round:
    opened: int
    live: int
    departed: int
    expired: int


async def _round(fleet: VariantFleet, cfg: AbuseConfig, size: int) -> _Round:
    """Open `size` sessions, let them leave and expire; RSS at each step."""
    pid = fleet.server_pids[0]
    clients = await open_on_first(fleet, size, cfg.open_budget_s)
    await asyncio.sleep(cfg.settle_s)
    live = procstat.rss_bytes(pid)
    await close_all(clients, timeout=120.0)
    await asyncio.sleep(cfg.settle_s)
    departed = procstat.rss_bytes(pid)
    await asyncio.sleep(cfg.expiry_wait_s)
    return _Round(len(clients), live, departed, procstat.rss_bytes(pid))


async def _memory_at(fleet: VariantFleet, cfg: AbuseConfig, size: int) -> Row:
    await asyncio.sleep(cfg.settle_s)
    base = procstat.rss_bytes(fleet.server_pids[0])
    first = await _round(fleet, cfg, size)
    second = await _round(fleet, cfg, size)
    return {
        "sessions": first.opened,
        "rss_base_mb": round(base / MB, 1),
        "live_kb_per_session": _per_session_kb(first.live - base, first.opened),
        "departed_kb_per_session": _per_session_kb(first.departed - base, first.opened),
        "kept_kb_per_session": _per_session_kb(first.expired - base, first.opened),
        "second_round_kb_per_session": _per_session_kb(
            second.expired - first.expired, second.opened
        ),
    }


def _per_session_kb(grown: int, sessions: int) -> float | None:
    return None if sessions == 0 else round(grown / sessions / 1024, 1)
