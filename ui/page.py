"""The counter page: layout and wiring only, on `counter_service`'s public API."""

from __future__ import annotations

import logging
from typing import Any

import flet as ft

import counter_service
from counter_service import CorruptCounter, CounterUpdate, StoreError
from ui.contract import BUTTON, CLICKS, ONLINE, REPLICA, STATUS, VIEWS

logger = logging.getLogger(__name__)

LABELS = {VIEWS: "Views", CLICKS: "Clicks", ONLINE: "Online now"}
STORE_DOWN = "The counter store is unreachable right now; that was not counted. Try again."


def broken(name: str, problem: str) -> str:
    return f"The {LABELS.get(name, name)} counter is broken in the store: {problem}"


async def main(page: ft.Page) -> None:
    """The Flet entry point: one `CounterPage` per session."""
    await CounterPage(page).mount()


class CounterPage:
    """Three live numbers, a button, and a line that says what went wrong."""

    def __init__(self, page: ft.Page) -> None:
        self.page = page
        self.counters = counter_service.counters(page)
        self.numbers = {name: ft.Text(key=name, size=40) for name in LABELS}
        self.status = ft.Text(key=STATUS, value="")
        self.replica = ft.Text(key=REPLICA, value=counter_service.service_of(page).worker_id)
        self.button = ft.Button(key=BUTTON, content="Add a click", on_click=self.on_click)

    async def mount(self) -> None:
        """Render the page, show live numbers, and count this visit."""
        self.page.title = "Counter service"
        self.page.on_route_change = self.on_route_change
        self.counters.show(self.numbers)
        self.counters.on_change(self.on_counter_change)
        self.page.add(self.layout())
        await self.count(VIEWS)

    def layout(self) -> ft.Control:
        cards: list[ft.Control] = [
            ft.Column([ft.Text(label), self.numbers[name]], key=f"{name}-card")
            for name, label in LABELS.items()
        ]
        return ft.Column(
            [ft.Row(cards, spacing=48), self.button, self.status, self.replica], spacing=24
        )

    async def count(self, name: str) -> None:
        try:
            await self.counters.incr(name)
        except CorruptCounter as exc:
            logger.warning("incrementing %s refused: %s", name, exc)
            self.set_status(broken(name, exc.problem))
        except StoreError as exc:
            logger.warning("incrementing %s failed: %s", name, exc)
            self.set_status(STORE_DOWN)
        else:
            self.set_status("")

    def on_counter_change(self, update: CounterUpdate) -> None:
        if update.problem is not None:
            self.set_status(broken(update.name, update.problem))

    def set_status(self, text: str) -> None:
        if self.status.value != text:
            self.status.value = text
            self.status.update()

    async def on_click(self, _event: Any) -> None:
        # Everything this handler changes is pushed by hand; Flet's auto-update would
        # only re-diff the whole page for nothing (about 8% of a worker's CPU per click).
        ft.context.disable_auto_update()  # type: ignore[no-untyped-call]  # flet leaves it unannotated
        await self.count(CLICKS)

    async def on_route_change(self, _event: Any) -> None:
        ft.context.disable_auto_update()  # type: ignore[no-untyped-call]  # flet leaves it unannotated
        await self.count(VIEWS)
