"""The counter page: layout and wiring only; the logic lives in `counter_service`."""

from __future__ import annotations

import logging
from typing import Any

import flet as ft
from redis.exceptions import RedisError

from counter_service import CLICKS, COUNTERS, ONLINE, VIEWS, CounterService, CounterUpdate
from counter_service.flet.bridge import Fanout, LiveNumbers, Main

logger = logging.getLogger(__name__)

LABELS = {VIEWS: "Views", CLICKS: "Clicks", ONLINE: "Online now"}
STORE_DOWN = "The counter store is unreachable right now; that was not counted. Try again."


def build_main(service: CounterService, fanout: Fanout) -> Main:
    """The Flet entry point: one `CounterPage` per session."""

    async def main(page: ft.Page) -> None:
        await CounterPage(page, service, fanout).mount()

    return main


class CounterPage:
    """Three live numbers and a button."""

    def __init__(self, page: ft.Page, service: CounterService, fanout: Fanout) -> None:
        self.page = page
        self.service = service
        self.fanout = fanout
        self.numbers = {name: ft.Text(key=name, value="0", size=40) for name in COUNTERS}
        self.live = LiveNumbers(self.numbers, direct=service.settings.fanout == "direct")
        self.status = ft.Text(key="status", value="")
        self.replica = ft.Text(key="replica", value=service.worker_id)
        self.button = ft.Button(key="increment", content="Add a click", on_click=self.on_click)

    async def mount(self) -> None:
        """Render the page, start live updates, and count this visit."""
        self.page.title = "Counter service"
        self.page.on_route_change = self.on_route_change
        self.page.on_connect = self.on_connect
        self.page.on_disconnect = self.on_disconnect
        self.page.on_close = self.on_disconnect
        self.show_latest(reset=False)
        self.page.add(self.layout())
        # Rendered, attached and joined before any await: no update can slip in between.
        self.live.attach(self.page)
        await self.fanout.join(self.live, self.page)
        await self.count(VIEWS)

    def layout(self) -> ft.Control:
        cards: list[ft.Control] = [
            ft.Column([ft.Text(LABELS[name]), self.numbers[name]], key=f"{name}-card")
            for name in COUNTERS
        ]
        return ft.Column(
            [ft.Row(cards, spacing=48), self.button, self.status, self.replica], spacing=24
        )

    def show_latest(self, *, reset: bool) -> None:
        for name in COUNTERS:
            self.live.show(CounterUpdate(self.service.latest(name), reset=reset))

    async def count(self, name: str) -> None:
        try:
            event = await self.service.incr(name)
        except (RedisError, OSError):
            logger.warning("incrementing %s failed", name, exc_info=True)
            self.set_status(STORE_DOWN)
            return
        self.live.show(CounterUpdate(event))
        self.set_status("")

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

    async def on_disconnect(self, _event: Any) -> None:
        # A disconnected session lingers for FLET_SESSION_TIMEOUT; it must not keep
        # costing a delivery per broadcast meanwhile.
        self.fanout.discard(self.live)

    async def on_connect(self, _event: Any) -> None:
        # Updates were missed while away (maybe even a reset): take the process's view.
        await self.fanout.join(self.live, self.page)
        self.show_latest(reset=True)
