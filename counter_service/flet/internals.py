"""Every place this library leans on Flet 1.0 internals, and nothing else.

Each touch is pinned by a guard test in tests/unit/test_flet_internals.py that fails
loudly if a Flet upgrade changes what it relies on:

1. `send_value`: a number Text's new value goes out as Flet's own one-field patch,
   straight to the session's connection, and the control is left as `update()`
   leaves it (value set, dirty flag cleared): several times cheaper than a hub task
   and a diff per session.
2. `cache_event_types`: Flet re-derives an event's payload type on every event
   (about a third of a worker's CPU under clicks); the answer depends only on the
   control class and the event name.
3. `CrossProcessHub` / `install_hub` / `hub_of`: Flet's `PubSubHub` of an app, made
   to publish through Redis; `page.pubsub` keeps its API.
4. `disconnect_if_abandoned`: Flet 1.0.5 can fail to mark a session disconnected when
   sending to a closing socket fails (see counter_service.flet.websockets).
5. `on_reconnect`: Flet tells a page about a reconnect only through `page.on_connect`,
   which belongs to the app; the library hears it from Flet's session manager instead.
6. `session_count`: how many sessions Flet's session manager holds, live or departed
   and not yet expired: what a worker's memory grows with.
7. `detached`: Flet re-attaches a reconnect only to a session already detached from its
   old connection; the guard lets a reconnect wait (briefly) for that.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import flet as ft
import flet_web.fastapi as flet_fastapi
from flet.controls import base_control
from flet.messaging.protocol import Message, MessageAction
from flet.messaging.session import Session
from flet.pubsub.pubsub_client import PubSubClient
from flet.pubsub.pubsub_hub import PubSubHub
from flet_web.fastapi import app_manager
from flet_web.fastapi.flet_app import DEFAULT_FLET_SESSION_TIMEOUT

Main = Callable[[ft.Page], Awaitable[None]]

# 1. The direct value patch


def value_patch(value: str) -> list[Any]:
    """Flet's patch for "the target control's `value` is now `value`"."""
    return [[0], [0, 0, "value", value]]


_PATCH_CONTROL: Any = MessageAction.PATCH_CONTROL.value


class _ValuePatch(Message):
    """A PATCH_CONTROL message that is cheap to send.

    `FletApp.send_message` formats every message into a debug f-string, logged or not,
    and msgpack calls a Python hook for an enum action; a plain int action (the same
    bytes on the wire) and a constant repr skip both on the hottest path."""

    def __init__(self, control_id: int, value: str) -> None:
        super().__init__(_PATCH_CONTROL, {"id": control_id, "patch": value_patch(value)})

    def __repr__(self) -> str:
        return "ValuePatch"


def send_value(text: ft.Text, value: str, connection: Any) -> bool:
    """Set `text.value` and send it to `connection` as `text.update()` would; False
    if the connection's socket is already gone (the value stays set and dirty, so a
    reconnect's full render carries it)."""
    text.value = value
    try:
        connection.send_message(_ValuePatch(text._i, value))
    except AttributeError:
        # FletApp's send queue is None once its send loop ended: the socket closed
        # and the session is about to be marked disconnected.
        return False
    text._dirty.pop("value", None)  # what update() does after sending
    return True


# 2. The event-type cache

# The module whose global `get_event_field_type` BaseControl._trigger_event calls.
_EVENTS: Any = base_control


def cache_event_types() -> None:
    """Remember each event's payload type per (control class, event name). Idempotent."""
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


# 3. The cross-process hub

Publish = Callable[[str | None, Any, str | None], None]
"""(topic or None, message, session to exclude or None): validate and queue, or raise."""


class CrossProcessHub(PubSubHub):
    """Flet's hub of one app whose sends go through Redis to every process.

    Sends validate and queue the message (raising in the caller on bad input or an
    unreachable Redis); `deliver` hands a message that came back from Redis to this
    process's subscribers with Flet's own delivery. `on_session_closed` runs when
    Flet evicts a session (it unsubscribes it from the hub then)."""

    def __init__(
        self,
        publish: Publish,
        loop: asyncio.AbstractEventLoop,
        on_session_closed: Callable[[str], None],
        owner: object = None,
        on_topics: Callable[[str, bool], None] = lambda _topic, _wanted: None,
    ) -> None:
        super().__init__(loop=loop, executor=app_manager.executor)
        self.owner = owner
        """Whoever built this hub (the app's bridge), for `hub_of(page).owner`."""
        self._on_topics = on_topics
        self._topics: dict[str, set[str]] = {}
        """Sessions subscribed to each topic, so `on_topics(topic, wanted)` hears when a
        topic gets its first subscriber in this process and loses its last."""
        self._publish = publish
        self._loop = loop
        self._loop_thread = threading.get_ident()  # built on the loop's thread
        self._on_session_closed = on_session_closed

    def send_all(self, message: Any) -> None:
        self._send(None, message, None)

    def send_all_on_topic(self, topic: str, message: Any) -> None:
        self._send(topic, message, None)

    def send_others(self, except_session_id: str, message: Any) -> None:
        self._send(None, message, except_session_id)

    def send_others_on_topic(self, except_session_id: str, topic: str, message: Any) -> None:
        self._send(topic, message, except_session_id)

    def deliver(self, topic: str | None, message: Any, exclude: str | None) -> None:
        """Deliver to this process's subscribers, leaving out session `exclude`."""
        if exclude is None:
            if topic is None:
                super().send_all(message)
            else:
                super().send_all_on_topic(topic, message)
        elif topic is None:
            super().send_others(exclude, message)
        else:
            super().send_others_on_topic(exclude, topic, message)

    def subscribe_topic(self, session_id: str, topic: str, handler: Any) -> None:
        super().subscribe_topic(session_id, topic, handler)
        self._on_loop(self._listen, session_id, topic)

    def unsubscribe_topic(self, session_id: str, topic: str) -> None:
        super().unsubscribe_topic(session_id, topic)
        self._on_loop(self._unlisten, session_id, topic)

    def unsubscribe_all(self, session_id: str) -> None:
        super().unsubscribe_all(session_id)
        for topic in [t for t, sessions in self._topics.items() if session_id in sessions]:
            self._on_loop(self._unlisten, session_id, topic)
        self._on_session_closed(session_id)

    def _listen(self, session_id: str, topic: str) -> None:
        sessions = self._topics.setdefault(topic, set())
        if not sessions:
            self._on_topics(topic, True)
        sessions.add(session_id)

    def _unlisten(self, session_id: str, topic: str) -> None:
        sessions = self._topics.get(topic)
        if sessions is None or session_id not in sessions:
            return
        sessions.discard(session_id)
        if not sessions:
            del self._topics[topic]
            self._on_topics(topic, False)

    def _on_loop(self, work: Callable[[str, str], None], session_id: str, topic: str) -> None:
        # Plain-function pubsub handlers run in Flet's thread pool: bookkeeping is the
        # event loop's.
        if threading.get_ident() == self._loop_thread:
            work(session_id, topic)
        else:
            self._loop.call_soon_threadsafe(work, session_id, topic)

    def _send(self, topic: str | None, message: Any, exclude: str | None) -> None:
        if threading.get_ident() == self._loop_thread:
            self._publish(topic, message, exclude)
            return
        # Plain-function pubsub handlers run in Flet's thread pool: publish on the
        # loop, and raise here what it raises there.
        publishing = self._publish_async(topic, message, exclude)
        asyncio.run_coroutine_threadsafe(publishing, self._loop).result()

    async def _publish_async(self, topic: str | None, message: Any, exclude: str | None) -> None:
        self._publish(topic, message, exclude)


def install_hub(main: Main, hub: PubSubHub) -> None:
    """Make `hub` the hub Flet gives every session of `main` (before any session)."""
    app_manager._FletAppManager__pubsubhubs[main] = hub


def uninstall_hub(main: Main) -> None:
    """Forget the hub of `main` (on shutdown)."""
    app_manager._FletAppManager__pubsubhubs.pop(main, None)


def hub_of(page: ft.Page) -> PubSubHub:
    """The hub behind `page.pubsub`."""
    client: PubSubClient = page.pubsub
    hub: PubSubHub = getattr(client, "_PubSubClient__pubsub")  # noqa: B009  # name-mangled
    return hub


async def detached(session_id: str, timeout_s: float) -> None:
    """Wait, at most `timeout_s`, until Flet's session `session_id` (if it has one) is
    no longer attached to a connection.

    Flet re-attaches a reconnecting browser to its session only if the session is
    detached when the register message arrives; a reconnect that overtakes the old
    connection's disconnect (it goes through a proxy, or the browser retries at once)
    would otherwise get a brand-new session."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    # Flet signals no detach: polled, for at most timeout_s.
    while _attached(session_id) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _attached(session_id: str) -> bool:
    sessions = app_manager._FletAppManager__sessions.values()
    return any(s.id == session_id and s.connection is not None for s in sessions)


def session_count() -> int:
    """Sessions Flet holds in this process (live, and departed until they expire)."""
    return len(app_manager._FletAppManager__sessions)


def session_evicted(page: ft.Page) -> bool:
    """True once Flet has let the session of `page` expire (it is being deleted)."""
    expires_at = page.session.expires_at
    return expires_at is not None and expires_at <= datetime.now(UTC)


# 4. Session cleanup


async def disconnect_if_abandoned(page: ft.Page, connection: object, timeout_s: int) -> None:
    """Mark the session disconnected if Flet's handler failed to (so it expires)."""
    session = page.session
    # Still attached to the closed connection and never given an expiry: Flet's
    # handler raised before disconnecting it. Without this the session never expires
    # and its send queue keeps growing with every update.
    if session.expires_at is None and session.connection is connection:
        await session.disconnect(timeout_s)


def session_timeout(configured: int = DEFAULT_FLET_SESSION_TIMEOUT) -> int:
    """Seconds a departed session is kept, as FletApp decides it: its
    `session_timeout_seconds` (`configured`), unless `FLET_SESSION_TIMEOUT` is set."""
    return int(os.getenv("FLET_SESSION_TIMEOUT") or configured)


# 5. Reconnects

_reconnect_handlers: list[Callable[[Session], None]] = []


def on_reconnect(handler: Callable[[Session], None]) -> Callable[[], None]:
    """Call `handler(session)` after Flet re-attached a session to a new websocket
    (its page was sent in full); returns a function that stops it."""
    _hook_reconnects()
    _reconnect_handlers.append(handler)
    return lambda: _reconnect_handlers.remove(handler)


def _hook_reconnects() -> None:
    original = app_manager.reconnect_session
    if getattr(original, "_counter_service_hook", False):
        return

    async def reconnect_session(session_id: str, conn: Any) -> None:
        await original(session_id, conn)
        session = await app_manager.get_session(session_id)
        if session is not None:
            for handler in tuple(_reconnect_handlers):
                handler(session)

    reconnect_session._counter_service_hook = True  # type: ignore[attr-defined]  # marks it as ours
    app_manager.reconnect_session = reconnect_session


def flet_asgi_app(main: Main, **options: Any) -> Any:
    """Flet's ASGI app for `main`; its web client is served from this process by
    default (`no_cdn`), so machines without internet access still get a page."""
    cache_event_types()
    return flet_fastapi.app(main, **{"no_cdn": True, **options})


@asynccontextmanager
async def flet_sessions() -> AsyncIterator[None]:
    """Run Flet's session manager (expiry of disconnected sessions) for the app's life.

    A mounted Flet app's own lifespan never runs, so the outer app runs this."""
    await app_manager.start()
    try:
        yield
    finally:
        await app_manager.shutdown()
