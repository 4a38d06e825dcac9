"""One load test run, phase by phase: baselines, sessions, clicking, convergence, teardown.

Every phase is bounded in time, and the whole run by `time_budget`; the raw observations
are left in a `RunRecord` for `result` to analyse."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from counter_service.devtools.loadtest import accounting
from counter_service.devtools.loadtest.clicker import LATE_GRACE_S, Tally, run_clickers
from counter_service.devtools.loadtest.monitors import Monitors, read_counters
from counter_service.devtools.loadtest.options import LoadTestOptions
from counter_service.devtools.loadtest.recorder import CLICKS, ONLINE, VIEWS
from counter_service.devtools.loadtest.sessions import Slot, close_all, mark_dropped, open_all, plan
from counter_service.devtools.loadtest.targets import Targets

POLL_S = 0.05
AFTER_CLOSE_S = 5.0
SLACK_S = 60.0


@dataclass
class RunRecord:
    """Everything a run observed; `phase` and the counters feed the progress display."""

    options: LoadTestOptions
    targets: Targets
    slots: list[Slot]
    monitors: Monitors
    tally: Tally = field(default_factory=Tally)
    phase: str = "starting"
    baseline: dict[str, int] = field(default_factory=dict)
    baseline_from: str = "redis"
    store_final: dict[str, int] | None = None
    last_click_at: float = 0.0
    converged_at: dict[int, float | None] = field(default_factory=dict)
    online_after_close: tuple[int, float] | None = None
    aborted: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float = 0.0

    @classmethod
    def new(cls, options: LoadTestOptions, targets: Targets) -> RunRecord:
        slots = plan(targets.targets, options.sessions)
        urls = list(options.metrics_urls) or [t.url for t in targets.targets]
        monitors = Monitors(targets.redis_url, urls)
        return cls(options, targets, slots, monitors)

    def live(self) -> list[Slot]:
        """Sessions open right now."""
        return [slot for slot in self.slots if slot.live]

    def kept(self) -> list[Slot]:
        """Sessions that rendered and were not marked failed (stable once sessions close)."""
        return [slot for slot in self.slots if slot.registered and slot.failure is None]

    def expected(self) -> dict[str, int]:
        """Expected totals: the baseline plus what this run added."""
        opened = sum(1 for slot in self.slots if slot.registered)
        return accounting.expected_totals(self.baseline, self.tally.sent, opened, len(self.kept()))


def time_budget(options: LoadTestOptions) -> float:
    """An upper bound on a run's length: every phase's own limit, plus slack."""
    ramp = options.sessions / options.ramp + 2 * options.connect_timeout
    clicking = options.duration + LATE_GRACE_S + 1.0
    return ramp + clicking + options.converge_timeout + AFTER_CLOSE_S + SLACK_S


async def execute(record: RunRecord) -> None:
    """Run every phase within the time budget; always close sessions and stop monitors."""
    record.monitors.start()
    try:
        async with asyncio.timeout(time_budget(record.options)):
            await _phases(record)
            await _close(record)
            await _online_after_close(record)
    except TimeoutError:
        record.aborted = f"the run exceeded its time bound of {time_budget(record.options):.0f}s"
    finally:
        await _close(record)
        await record.monitors.stop()
        record.finished_at = time.monotonic()


async def _close(record: RunRecord) -> None:
    if record.phase != "closing":
        record.phase = "closing"
        mark_dropped(record.slots)  # before closing: afterwards every session is closed
        await close_all(record.slots)


async def _online_after_close(record: RunRecord) -> None:
    """With Redis: wait (bounded) for online to fall back to its baseline; note the result."""
    redis_url = record.targets.redis_url
    if redis_url is None or ONLINE not in record.baseline:
        return
    started = time.monotonic()
    while True:
        online = (await read_counters(redis_url, record.options.namespace))[ONLINE]
        waited = time.monotonic() - started
        if online == record.baseline[ONLINE] or waited >= AFTER_CLOSE_S:
            record.online_after_close = (online, waited)
            return
        await asyncio.sleep(POLL_S * 4)


async def _phases(record: RunRecord) -> None:
    options, redis_url = record.options, record.targets.redis_url
    if redis_url is not None:
        record.baseline = await read_counters(redis_url, options.namespace)
    record.phase = "connecting"
    first_views = await open_all(record.slots, options.ramp, options.connect_timeout)
    await _take_baseline(record, first_views)
    record.tally.baseline = record.baseline[CLICKS]
    record.phase = "clicking"
    clickers = record.live()[: options.clickers]
    await run_clickers(clickers, options.rate, options.duration, record.tally)
    record.last_click_at = record.tally.last_sent_at or time.monotonic()
    record.phase = "converging"
    await _converge(record, record.last_click_at + options.converge_timeout)
    if redis_url is not None:
        record.store_final = await read_counters(redis_url, options.namespace)


async def _take_baseline(record: RunRecord, first_views: int | None) -> None:
    """With Redis: views and online as stored before any session opened, clicks as stored
    now. Without: clicks is the highest value any page shows now, views what the first
    page, opened alone, showed once settled, minus its own view (or, if it never settled,
    the lowest value any page showed first), and no other connection is online."""
    redis_url = record.targets.redis_url
    if redis_url is not None:
        now = await read_counters(redis_url, record.options.namespace)
        record.baseline[CLICKS] = now[CLICKS]
        return
    record.baseline_from = "sessions"
    if first_views is not None:
        views = first_views - 1
    else:
        views = min(
            (s.recorder.first[VIEWS] for s in record.slots if VIEWS in s.recorder.first), default=0
        )
    record.baseline = {CLICKS: _highest_clicks(record), VIEWS: views, ONLINE: 0}


def _highest_clicks(record: RunRecord) -> int:
    return max((slot.recorder.clicks() for slot in record.live()), default=0)


async def _converge(record: RunRecord, deadline: float) -> None:
    """Poll until every live session shows the expected totals, or the deadline passes;
    note when each session started to show them."""
    while True:
        mark_dropped(record.slots)
        expected = record.expected()
        pending = [s for s in record.live() if not accounting.shows(s.recorder.values, expected)]
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    for slot in record.live():
        recorder = slot.recorder
        after = accounting.converged_after(
            recorder.values, recorder.changed_at, expected, record.last_click_at
        )
        record.converged_at[slot.index] = after
