"""Opening headless sessions round-robin over the targets at a ramp, and closing them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection

from counter_service.devtools.headless import FletError, HeadlessSession
from counter_service.devtools.loadtest.recorder import VIEWS, Recorder
from counter_service.devtools.loadtest.targets import Target
from ui.contract import BUTTON, REPLICA

__all__ = ["BUTTON"]

CLOSE_TIMEOUT_S = 15.0


class RecordedSession(HeadlessSession):
    """A session whose recorder is attached before the first server message is applied."""

    def __init__(self, ws: ClientConnection, route: str) -> None:
        super().__init__(ws, route)
        self.recorder = Recorder()
        self.on_change = self.recorder


@dataclass(eq=False)
class Slot:
    """One planned session: where it goes, what it saw, and why it failed (if it did)."""

    index: int
    target: Target
    recorder: Recorder = field(default_factory=Recorder)
    session: HeadlessSession | None = None
    registered: bool = False
    failure: str | None = None

    @property
    def live(self) -> bool:
        """Connected, rendered and still open."""
        return self.session is not None and not self.session.closed and self.failure is None

    @property
    def replica(self) -> str | None:
        """The replica serving this session, as its page names it (None if it does not)."""
        value = None if self.session is None else self.session.value(REPLICA)
        return None if value is None else str(value)


def describe(exc: BaseException) -> str:
    """A short, groupable description of why a session failed."""
    text = str(exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def plan(targets: tuple[Target, ...], count: int) -> list[Slot]:
    """`count` slots spread round-robin over `targets`."""
    return [Slot(i, targets[i % len(targets)]) for i in range(count)]


async def open_slot(slot: Slot, timeout: float) -> None:
    """Connect, attach the recorder, and wait until the page shows its numbers and button."""
    try:
        session = await RecordedSession.connect(slot.target.url, timeout=timeout)
    except (FletError, TimeoutError, OSError) as exc:
        slot.failure = describe(exc)
        return
    assert isinstance(session, RecordedSession)
    slot.session, slot.recorder, slot.registered = session, session.recorder, True
    try:
        await session.wait_for(lambda s: slot.recorder.rendered() and _has_button(s), timeout)
    except (FletError, TimeoutError) as exc:
        slot.failure = "not rendered: " + describe(exc)
        await session.close()


def _has_button(session: HeadlessSession) -> bool:
    return session.control(BUTTON) is not None


SETTLED_S = 0.5
"""How long the first session's views must stay unchanged to count as settled."""


async def settled_views(slot: Slot, timeout: float) -> int | None:
    """The views number the first session shows once it stopped changing (its own view
    counted, since nobody else is connected yet); None if it never settles in `timeout`."""
    deadline = time.monotonic() + timeout
    while slot.live and time.monotonic() < deadline:
        changed = slot.recorder.changed_at.get(VIEWS)
        if changed is not None and time.monotonic() - changed >= SETTLED_S:
            return slot.recorder.values[VIEWS]
        await asyncio.sleep(SETTLED_S / 5)
    return None


async def open_all(slots: list[Slot], ramp: float, timeout: float) -> int | None:
    """Open the first slot alone and wait until its views settled (the baseline of a run
    without Redis comes from it), then the rest at `ramp` per second; return those views."""
    if not slots:
        return None
    await open_slot(slots[0], timeout)
    first_views = await settled_views(slots[0], timeout)
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        for n, slot in enumerate(slots[1:]):
            await asyncio.sleep(max(0.0, started + n / ramp - time.monotonic()))
            tasks.append(asyncio.create_task(open_slot(slot, timeout)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return first_views


def mark_dropped(slots: list[Slot]) -> None:
    """Record as failed every session that was open but has been closed since."""
    for slot in slots:
        if slot.session is not None and slot.session.closed and slot.failure is None:
            slot.failure = "dropped: the connection closed during the run"


async def close_all(slots: list[Slot]) -> None:
    """Close every session, bounded in time."""
    sessions = [slot.session for slot in slots if slot.session is not None]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
