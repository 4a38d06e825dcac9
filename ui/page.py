"""The counter page: layout and wiring only, on `counter_service`'s public API.

What its status line and banner say is chosen in `ui.status`, without Flet."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import flet as ft

import counter_service
from counter_service import CounterServiceError, CounterUpdate
from ui import status
from ui.contract import BUTTON, CLICKS, ONLINE, REPLICA, STATUS, UNREACHABLE, VIEWS
from ui.status import StatusLine

TITLE = "Counter service"
LABELS = {VIEWS: "Views", CLICKS: "Clicks", ONLINE: "Online now"}
STALE_OPACITY = 0.45
"""How faded the numbers are while they may be stale."""


async def main(page: ft.Page) -> None:
    """The Flet entry point: one `CounterPage` per session."""
    await CounterPage(page).mount()


def labelled(label: str, value: ft.Text, *, size: int = 13) -> ft.Control:
    """`label` over `value`, read by a screen reader as one phrase ("Clicks: 12").

    Numbers change by a one-field patch of their `value` alone, so the spoken phrase
    cannot be a property that would need re-sending: it comes from the structure.
    MergeSemantics joins both Texts into one accessibility node, rebuilt by Flutter
    whenever the value changes; the colon exists only for the screen reader."""
    caption = ft.Text(label, size=size, color=ft.Colors.ON_SURFACE_VARIANT)
    caption.semantics_label = f"{label}:"
    column = ft.Column([caption, value], spacing=2, tight=True)
    column.horizontal_alignment = ft.CrossAxisAlignment.CENTER
    return ft.MergeSemantics(content=column)


def heading(text: str) -> ft.Control:
    """The page's one heading, announced as such (Flutter renders it as <h1>)."""
    title = ft.Text(text, theme_style=ft.TextThemeStyle.HEADLINE_MEDIUM, weight=ft.FontWeight.W_600)
    # A container of its own: otherwise the level lands on the card's node, whole card.
    return ft.Semantics(content=title, heading_level=1, container=True)


def announced(content: ft.Control, *, key: str | None = None) -> ft.Semantics:
    """`content` as a node of its own that screen readers announce when it appears or
    changes (otherwise its text would become the label of the whole card). Hidden."""
    return ft.Semantics(content=content, key=key, visible=False, container=True, live_region=True)


def outage_banner(text: ft.Text, key: str) -> ft.Semantics:
    """The notice shown while the store is unreachable (hidden until then)."""
    icon = ft.Icon(ft.Icons.CLOUD_OFF, color=ft.Colors.ON_ERROR_CONTAINER)
    box = ft.Container(
        ft.Row([icon, text], spacing=12),
        padding=12,
        border_radius=8,
        bgcolor=ft.Colors.ERROR_CONTAINER,
    )
    return announced(box, key=key)


class CounterPage:
    """A centred card: heading, three live numbers, a button, the replica serving the
    session, a line that says what went wrong, and a banner while the store is away."""

    def __init__(self, page: ft.Page) -> None:
        self.page = page
        self.counters = counter_service.counters(page)
        self.numbers = {
            name: ft.Text(key=name, size=40, weight=ft.FontWeight.BOLD) for name in LABELS
        }
        self.line = StatusLine(LABELS)
        self.status = ft.Text(
            key=STATUS, value="", color=ft.Colors.ERROR, text_align=ft.TextAlign.CENTER
        )
        self.status_line = announced(self.status)
        self.replica = ft.Text(key=REPLICA, value=counter_service.service_of(page).worker_id)
        self.button = ft.Button(
            key=BUTTON, content="Add a click", icon=ft.Icons.ADD, on_click=self.on_click
        )
        self.outage = ft.Text(status.UNKNOWN, color=ft.Colors.ON_ERROR_CONTAINER, expand=True)
        self.unreachable = outage_banner(self.outage, UNREACHABLE)
        self.stats = ft.Row(
            [labelled(LABELS[name], self.numbers[name]) for name in LABELS],
            spacing=48,
            alignment=ft.MainAxisAlignment.CENTER,
        )
        self.mounted = False
        self.slow_down_timer: asyncio.TimerHandle | None = None

    async def mount(self) -> None:
        """Render the page, show live numbers, and count this visit."""
        self.page.title = TITLE
        self.page.on_route_change = self.on_route_change
        self.counters.on_change(self.on_counter_change)  # first: a broken one shows at once
        self.counters.show(self.numbers)
        self.counters.on_availability(self.on_availability)
        counter_service.on_throttled(self.page, self.on_throttled)
        self.mark_stale(not self.counters.available)
        self.page.vertical_alignment = ft.MainAxisAlignment.CENTER
        self.page.horizontal_alignment = ft.CrossAxisAlignment.CENTER
        self.page.add(self.layout())
        self.mounted = True
        self.render()
        await self.count_itself(VIEWS)

    def layout(self) -> ft.Control:
        served_by = labelled("Served by replica", self.replica, size=12)
        column = ft.Column(
            [
                heading(TITLE),
                self.unreachable,
                self.stats,
                self.button,
                self.status_line,
                served_by,
            ],
            spacing=24,
            tight=True,
            horizontal_alignment=ft.CrossAxisAlignment.CENTER,
        )
        return ft.Card(ft.Container(column, padding=40, width=560))

    async def click(self, name: str) -> None:
        # The service logs failed increments (summarised); the page only says why.
        try:
            await self.counters.incr(name)
        except CounterServiceError as exc:
            self.line.clicked(name, exc)
        else:
            self.line.clicked(name, None)
        self.render()

    async def count_itself(self, name: str) -> None:
        try:
            await self.counters.incr(name)
        except CounterServiceError as exc:
            self.line.counted_itself(name, exc)
            self.render()

    def on_counter_change(self, update: CounterUpdate) -> None:
        # Called for every number this page shows: cheap unless a problem comes or goes.
        if self.line.counter_changed(update.name, update.problem):
            self.render()

    def on_availability(self, available: bool) -> None:
        self.mark_stale(not available)
        self.unreachable.update()
        self.stats.update()
        if available:
            self.line.store_back()
        self.render()

    def on_throttled(self) -> None:
        self.line.throttled()
        self.render()
        self.end_slow_down()

    def end_slow_down(self) -> None:
        """Take "slow down" away once it expired: one timer per page, only while refused.
        The line's clock decides, not the timer's: uvloop's clock may run a millisecond
        behind `time.monotonic`, and a timer that fired early would leave it for good."""
        if self.slow_down_timer is not None:
            self.slow_down_timer.cancel()
            self.slow_down_timer = None
        left = self.line.slow_down_left()
        if left > 0:
            self.slow_down_timer = asyncio.get_running_loop().call_later(left, self.end_slow_down)
        else:
            self.render()

    def mark_stale(self, stale: bool) -> None:
        # Fading the row, not each number, keeps the numbers' own patches one field.
        known = any(self.counters.value(name) is not None for name in LABELS)
        self.outage.value = status.banner(known)
        self.unreachable.visible = stale
        self.stats.opacity = STALE_OPACITY if stale else 1.0

    def render(self) -> None:
        """Show what the status line says now."""
        text = self.line.text
        if self.status.value == text:
            return
        self.status.value = text
        self.status_line.visible = bool(text)  # an empty line would leave a gap
        if self.mounted:
            # RuntimeError/AttributeError: the session is gone (a timer outlived it);
            # the line is set all the same for a reconnect's full render.
            with contextlib.suppress(RuntimeError, AttributeError):
                self.status_line.update()

    async def on_click(self, _event: Any) -> None:
        # Everything this handler changes is pushed by hand; Flet's auto-update would
        # only re-diff the whole page for nothing (about 8% of a worker's CPU per click).
        ft.context.disable_auto_update()  # type: ignore[no-untyped-call]  # flet leaves it unannotated
        await self.click(CLICKS)

    async def on_route_change(self, _event: Any) -> None:
        ft.context.disable_auto_update()  # type: ignore[no-untyped-call]  # flet leaves it unannotated
        await self.count_itself(VIEWS)
