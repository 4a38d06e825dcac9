"""The one module that knows Flet: delivery into Flet's hub and the Flet ASGI app.

Within a process, coalesced updates go to the same `PubSubHub` that sessions use
(`flet_web.fastapi.app_manager.get_pubsubhub(main)`), so pages keep the familiar
`page.pubsub.subscribe_topic(topic(name), handler)`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import flet as ft
import flet_web.fastapi as flet_fastapi
from flet_web.fastapi import app_manager

from counter_service.coalescer import Deliver
from counter_service.versions import CounterUpdate

Main = Callable[[ft.Page], Awaitable[None]]
TOPIC_PREFIX = "counter-service/"


def topic(counter: str) -> str:
    """The hub topic on which updates of `counter` are delivered to pages."""
    return TOPIC_PREFIX + counter


def hub_delivery(main: Main) -> Deliver:
    """A delivery function that broadcasts each update on its counter's topic to every
    session of `main` in this process. Call it inside the running event loop."""
    hub = app_manager.get_pubsubhub(main, loop=asyncio.get_running_loop())

    def deliver(updates: list[CounterUpdate]) -> None:
        for update in updates:
            hub.send_all_on_topic(topic(update.event.name), update)

    return deliver


def flet_asgi_app(main: Main, **options: Any) -> Any:
    """Flet's ASGI app for `main`, with its web client served from this process
    (`no_cdn`): machines without internet access still get a working page."""
    return flet_fastapi.app(main, no_cdn=True, **options)


@asynccontextmanager
async def flet_sessions() -> AsyncIterator[None]:
    """Run Flet's session manager (expiry of disconnected sessions) for the app's life.

    A mounted Flet app's own lifespan never runs, so the outer app runs this."""
    await app_manager.start()
    try:
        yield
    finally:
        await app_manager.shutdown()
