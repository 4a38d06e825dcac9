"""The one module that knows Flet: live number Texts, their fan-out, and the Flet ASGI app.

Fan-out is the hot path: one coalesced update must reach every session of the process.
Flet's generic route (a hub task per session, then `control.update()` diffing the
control) costs several times what the message itself does. A number Text changes in
exactly one way, so `Fanout` sends Flet's own one-field patch for it (a small message per
session: only the control id differs) straight to each session's connection, and leaves
Flet's model as `update()` would (value set, dirty flag cleared).
tests/test_flet_bridge.py pins this to Flet's differ.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import flet as ft
import flet_web.fastapi as flet_fastapi
from flet.controls import base_control
from flet.messaging.protocol import Message, MessageAction
from flet_web.fastapi import app_manager
from flet_web.fastapi.flet_app import DEFAULT_FLET_SESSION_TIMEOUT

from counter_service.flet.websockets import current_websocket
from counter_service.versions import CounterUpdate, LatestValues

logger = logging.getLogger(__name__)

Main = Callable[[ft.Page], Awaitable[None]]
# The module whose global `get_event_field_type` BaseControl._trigger_event calls.
_EVENTS: Any = base_control


def value_patch(value: str) -> list[Any]:
    """Flet's patch for "the target control's `value` is now `value`"."""
    return [[0], [0, 0, "value", value]]


class _ValuePatch(Message):
    """A PATCH_CONTROL message that is cheap to send.

    `FletApp.send_message` formats every message into a debug f-string, logged or not,
    and msgpack calls a Python hook for an enum action; a plain int action (the same
    bytes on the wire) and a constant repr skip both on the hottest path."""

    def __init__(self, control_id: int, value: str) -> None:
        super().__init__(_PATCH_CONTROL, {"id": control_id, "patch": value_patch(value)})

    def __repr__(self) -> str:
        return "ValuePatch"


_PATCH_CONTROL: Any = MessageAction.PATCH_CONTROL.value


class LiveNumbers:
    """The number Texts of one page, each showing only ever-newer versions.

    `direct=False` pushes with Flet's `control.update()` instead: same result, more
    CPU; kept so benchmarks can compare both paths in one run."""

    def __init__(self, texts: Mapping[str, ft.Text], direct: bool = True) -> None:
        self._texts = dict(texts)
        self._direct = direct
        self._shown = LatestValues()
        self._page: ft.Page | None = None

    def attach(self, page: ft.Page) -> None:
        """Start pushing changes to `page` (call once the Texts are on it)."""
        self._page = page

    def show(self, update: CounterUpdate) -> None:
        """Show `update` if it is newer than what is shown (or a reset)."""
        text = self._texts.get(update.event.name)
        if text is None or not self._shown.accept(update):
            return
        value = str(update.event.value)
        text.value = value
        connection = None if self._page is None else self._page.session.connection
        if connection is None:
            return  # not on the wire yet, or away: the next full render carries it
        if not self._direct:
            text.update()
            return
        connection.send_message(_ValuePatch(text._i, value))
        # What `update()` does after sending: the client now has this value.
        text._dirty.pop("value", None)


class Fanout:
    """Every `LiveNumbers` of this process; `deliver` is the service's delivery callback."""

    def __init__(self) -> None:
        self._boards: set[LiveNumbers] = set()

    def add(self, board: LiveNumbers) -> None:
        self._boards.add(board)

    async def join(self, board: LiveNumbers, page: ft.Page) -> None:
        """Deliver to `board` until the websocket now serving `page` closes, then make
        sure the session is marked disconnected (Flet may skip
        it, see counter_service.flet.websockets)."""
        self.add(board)
        life = current_websocket()
        if life is None:
            return
        connection = page.session.connection

        async def closed() -> None:
            self.discard(board)
            await _disconnect_if_abandoned(page, connection)

        await life.on_close(closed)

    def discard(self, board: LiveNumbers) -> None:
        self._boards.discard(board)

    def __len__(self) -> int:
        return len(self._boards)

    def deliver(self, updates: list[CounterUpdate]) -> None:
        """Show each update on every page; a page that fails does not stop the rest."""
        for update in updates:
            for board in tuple(self._boards):
                try:
                    board.show(update)
                except Exception:
                    # A session whose socket is closing may fail to send; it is
                    # about to be unregistered by its disconnect handler.
                    logger.debug("a page could not take an update", exc_info=True)


async def _disconnect_if_abandoned(page: ft.Page, connection: object) -> None:
    session = page.session
    # Still attached to the closed connection and never given an expiry: Flet's
    # handler raised before disconnecting it. Without this the session never expires
    # and its send queue keeps growing with every update.
    if session.expires_at is None and session.connection is connection:
        await session.disconnect(_session_timeout())


def _session_timeout() -> int:
    # The same setting FletApp reads, so an abandoned session expires like any other.
    return int(os.getenv("FLET_SESSION_TIMEOUT") or DEFAULT_FLET_SESSION_TIMEOUT)


def flet_asgi_app(main: Main, **options: Any) -> Any:
    """Flet's ASGI app for `main`, with its web client served from this process
    (`no_cdn`): machines without internet access still get a working page."""
    cache_event_types()
    return flet_fastapi.app(main, no_cdn=True, **options)


def cache_event_types() -> None:
    """Remember each event's payload type per (control class, event name).

    Flet 1.0.5 re-derives it on every event by walking the control's class hierarchy and
    evaluating type annotations: about a third of a worker's CPU under clicks. The answer
    depends only on the class and the event name. Idempotent."""
    original = _EVENTS.get_event_field_type
    if getattr(original, "_counter_service_cache", False):
        return
    cache: dict[tuple[type, str], Any] = {}

    def cached(control: Any, field_name: str) -> Any:
        key = (type(control), field_name)
        if key not in cache:
            cache[key] = original(control, field_name)
        return cache[key]

    cached._counter_service_cache = True  # type: ignore[attr-defined]  # marks it as ours
    _EVENTS.get_event_field_type = cached


@asynccontextmanager
async def flet_sessions() -> AsyncIterator[None]:
    """Run Flet's session manager (expiry of disconnected sessions) for the app's life.

    A mounted Flet app's own lifespan never runs, so the outer app runs this."""
    await app_manager.start()
    try:
        yield
    finally:
        await app_manager.shutdown()
