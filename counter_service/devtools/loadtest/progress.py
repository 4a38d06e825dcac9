"""The live progress display (rich): sessions connected, clicks sent, sessions converged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from counter_service.devtools.loadtest import accounting
from counter_service.devtools.loadtest.runner import RunRecord

REFRESH_S = 0.25


def _bars(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def update(progress: Progress, tasks: list[TaskID], record: RunRecord) -> None:
    """Copy the run's counters into the bars."""
    sessions, clicks, converged = tasks
    slots, tally = record.slots, record.tally
    connected = sum(1 for slot in slots if slot.recorder.rendered())
    failed = sum(1 for slot in slots if slot.failure is not None)
    progress.update(sessions, completed=connected, note=f"{failed} failed  [{record.phase}]")
    note = f"{sum(tally.errors.values())} not sent"
    progress.update(clicks, completed=tally.sent, total=max(1, tally.planned), note=note)
    if record.phase in ("converging", "closing"):
        expected = record.expected()
        done = sum(accounting.shows(s.recorder.values, expected) for s in record.kept())
        progress.update(converged, completed=done, total=max(1, len(record.kept())))


async def _refresh(progress: Progress, tasks: list[TaskID], record: RunRecord) -> None:
    while True:
        update(progress, tasks, record)
        await asyncio.sleep(REFRESH_S)


@contextlib.asynccontextmanager
async def shown(record: RunRecord, console: Console, enabled: bool) -> AsyncIterator[None]:
    """Show live progress of `record` while the block runs (only on a terminal)."""
    progress = _bars(console, enabled and console.is_terminal)
    total = record.options.sessions
    tasks = [
        progress.add_task("sessions", total=total, note=""),
        progress.add_task("clicks", total=1, note=""),
        progress.add_task("converged", total=total, note=""),
    ]
    with progress:
        refresher = asyncio.create_task(_refresh(progress, tasks, record))
        try:
            yield
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            update(progress, tasks, record)
