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
   to publish through Redis; `page.pubsub` keeps its API. Given no executor, Flet's hub
   calls a plain handler in place, which lets the hub run each session's plain
   handlers one after another (in Flet's pool) instead of side by side.
4. `disconnect_if_abandoned`: Flet 1.0.5 can fail to mark a session disconnected when
   sending to a closing socket fails (see counter_service.flet.websockets).
5. `on_reconnect`: Flet tells a page about a reconnect only through `page.on_connect`,
   which belongs to the app; the library hears it from Flet's session manager instead.
6. `session_count`: how many sessions Flet's session manager holds, live or departed
   and not yet expired: what a worker's memory grows with.
7. Re-attaching: Flet re-attaches a reconnect only to a session already detached from
   its old connection, which FletApp's handler does once its receive loop ended; the
   websocket guard lets a reconnect wait (briefly) for the old connection to end, its
   clean-up included: when Flet's handler raised on a closed socket, the bridge
   detaches the session only then (no touch here: the guard tracks its own
   connections).
8. `guard_connection` / `current_session` / `end_session` / `has_control` /
   `control_of`: what the websocket guard (counter_service.flet.websockets) needs of
   the Flet connection it wraps: FletApp's send queue, unbounded in Flet, is bounded
   per websocket (`SendQueue`); props a client sends that Flet cannot apply, and event
   data Flet cannot build its event object from, are reported to the guard instead of
   ending in a traceback; the session of the connection is found, and ended at once
   when the guard refused its client.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import flet as ft
import flet_web.fastapi as flet_fastapi
from flet.controls import base_control
from flet.controls.base_control import BaseControl
from flet.messaging.protocol import Message, MessageAction
from flet.messaging.session import Session
from flet.pubsub.pubsub_client import PubSubClient
from flet.pubsub.pubsub_hub import PubSubHub
from flet_web.fastapi import app_manager
from flet_web.fastapi.flet_app import DEFAULT_FLET_SESSION_TIMEOUT, FletApp

Main = Callable[[ft.Page], Awaitable[None]]

logger = logging.getLogger(__name__)

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


class _Chain:
    """One session's plain pubsub handlers, run one call after another, in the order
    they were delivered, in a thread pool.

    Flet hands every call to its pool on its own, so a session's calls overtake each
    other. Here a call is submitted only once the previous one returned: an idle
    session holds no thread and no task, and each call queues behind the other
    sessions' (FIFO pool), so a busy session cannot starve the rest."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._running = False

    def add(self, handler: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run `handler(*args)` after every call added before it."""
        with self._lock:
            self._calls.append((handler, args))
            if self._running:
                return
            self._running = True
        self._submit()

    def _submit(self) -> None:
        try:
            self._executor.submit(self._run_next)
        except RuntimeError:  # the pool was shut down: the process is stopping
            with self._lock:
                self._calls.clear()
                self._running = False

    def _run_next(self) -> None:
        with self._lock:
            handler, args = self._calls.popleft()
        try:
            handler(*args)
        except Exception:  # the app's bug: Flet would log it too, and carry on
            logger.exception("a pubsub handler failed")
        with self._lock:
            self._running = bool(self._calls)
            if not self._running:
                return
        self._submit()


@dataclass(frozen=True)
class _InOrder:
    """A plain handler of one session, called through that session's chain. Equal for
    the same handler and chain, so Flet's handler sets still ignore a re-subscribe."""

    chain: _Chain
    handler: Callable[..., Any]

    def __call__(self, *args: Any) -> None:
        self.chain.add(self.handler, args)


class CrossProcessHub(PubSubHub):
    """Flet's hub of one app whose sends go through Redis to every process.

    Sends validate and queue the message (raising in the caller on bad input or an
    unreachable Redis); `deliver` hands a message that came back from Redis to this
    process's subscribers with Flet's own routing. Async handlers run on the loop as
    Flet runs them; plain ones run in Flet's thread pool as with Flet, but one call
    after another per session, so each session sees one topic in Redis's order.
    `on_session_closed` runs when Flet evicts a session (it unsubscribes it then)."""

    def __init__(
        self,
        publish: Publish,
        loop: asyncio.AbstractEventLoop,
        on_session_closed: Callable[[str], None],
        owner: object = None,
        on_topics: Callable[[str, bool], None] = lambda _topic, _wanted: None,
    ) -> None:
        # No executor for Flet: it then calls a plain handler in place, and the handler
        # it is given (`_InOrder`) queues the call on its session's chain instead.
        super().__init__(loop=loop, executor=None)
        self._executor: Executor = app_manager.executor
        self._chains: weakref.WeakValueDictionary[str, _Chain] = weakref.WeakValueDictionary()
        """Each session's chain, alive while a handler or a pending call holds it."""
        self._chains_lock = threading.Lock()
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

    def subscribe(self, session_id: str, handler: Any) -> None:
        super().subscribe(session_id, self._in_order(session_id, handler))

    def subscribe_topic(self, session_id: str, topic: str, handler: Any) -> None:
        super().subscribe_topic(session_id, topic, self._in_order(session_id, handler))
        self._on_loop(self._listen, session_id, topic)

    def _in_order(self, session_id: str, handler: Any) -> Any:
        if inspect.iscoroutinefunction(handler):  # the test Flet's delivery makes
            return handler
        with self._chains_lock:
            chain = self._chains.get(session_id)
            if chain is None:
                chain = self._chains[session_id] = _Chain(self._executor)
        return _InOrder(chain, handler)

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


def session_count() -> int:
    """Sessions Flet holds in this process (live, and departed until they expire)."""
    return len(app_manager._FletAppManager__sessions)


def session_evicted(page: ft.Page) -> bool:
    """True once Flet has let the session of `page` expire, or `end_session` ended it
    (it is being deleted)."""
    session = page.session
    expires_at = session.expires_at
    return session in _ended or (expires_at is not None and expires_at <= datetime.now(UTC))


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
    `session_timeout_seconds` (`configured`), unless `FLET_SESSION_TIMEOUT` is set.

    Raises `SettingsError` naming the variable if that is not a whole number of
    seconds Settings would take for `session_timeout_s` (Flet would raise a bare
    ValueError for each new session, or expire sessions at once)."""
    # Imported here: this is the one use of the library's own modules in this file.
    from counter_service.settings import check_variable

    raw = os.getenv("FLET_SESSION_TIMEOUT")
    if not raw:
        return configured
    return int(check_variable("FLET_SESSION_TIMEOUT", raw, "session_timeout_s"))


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


# 8. What the websocket guard needs of a Flet connection

# What a queued frame costs beyond its payload (its bytes object and queue slot), so
# that a flood of tiny frames is bounded too.
FRAME_COST = 64


def _reraise(name: str, error: Exception) -> None:
    raise error


@dataclass(eq=False)
class ConnectionHooks:
    """What the websocket guard asks of the Flet connection behind one websocket (see
    `guard_connection`): a bound on its send queue, and whom to tell about a client
    Flet cannot serve."""

    max_send_bytes: int
    """Bytes (payload plus `FRAME_COST` each) that may wait in its send queue at once."""
    on_send_overflow: Callable[[int, int], None]
    """Called once, as `(frames, bytes)`, when a frame would take the queue past it."""
    on_bad_patch: Callable[[Exception], None]
    """Called with what Flet raised applying props the client sent (a value of the
    wrong kind for its property, a name that is not one)."""
    on_bad_event: Callable[[str, Exception], None] = _reraise
    """Called as `(event name, error)` instead of running an event whose object Flet
    could not build from the client's data (a field missing, an enum value that is
    not one); the default raises, as Flet would."""
    lasting_send_bytes: int | None = None
    """Bytes that may wait for a while: the queue notes when it went over
    (`SendQueue.over_since`) for the guard to judge. None: `max_send_bytes`."""
    send_queue: SendQueue | None = None
    """The queue, once Flet made it."""

    def end_sends(self) -> None:
        """End the connection's send loop if it still runs (Flet's handler was
        cancelled before it could; the loop would wait on its queue for ever)."""
        if self.send_queue is not None:
            self.send_queue.put_nowait(None)
            self.send_queue = None


class SendQueue(asyncio.Queue[bytes | None]):
    """FletApp's queue of frames for one websocket, bounded: a frame that would take
    what waits past `hooks.max_send_bytes` (a frame alone in the queue always fits)
    discards the queue, and every frame after it, and calls `hooks.on_send_overflow`.
    None, the end of Flet's send loop, still goes through. `over_since` is when what
    waits last went over `hooks.lasting_send_bytes` (None while it is not)."""

    def __init__(self, hooks: ConnectionHooks) -> None:
        self._hooks = hooks
        self._lasting = hooks.max_send_bytes
        if hooks.lasting_send_bytes is not None:
            self._lasting = hooks.lasting_send_bytes
        super().__init__()

    def _init(self, maxsize: int) -> None:
        self._queue: deque[bytes | None] = deque()
        self.queued_bytes = 0
        self.overflowed = False
        self.over_since: float | None = None
        """`time.monotonic()` when the queue went over `hooks.lasting_send_bytes`."""

    def _put(self, item: bytes | None) -> None:
        if item is None:
            self._queue.append(None)
            return
        cost = len(item) + FRAME_COST
        if self.overflowed:
            return
        if self._queue and self.queued_bytes + cost > self._hooks.max_send_bytes:
            self._overflow(len(self._queue) + 1, self.queued_bytes + cost)
            return
        self.queued_bytes += cost
        self._queue.append(item)
        if self.over_since is None and self.queued_bytes > self._lasting:
            self.over_since = time.monotonic()

    def _get(self) -> bytes | None:
        item = self._queue.popleft()
        if item is not None:
            self.queued_bytes -= len(item) + FRAME_COST
            if self.queued_bytes <= self._lasting:
                self.over_since = None
        return item

    def _overflow(self, frames: int, queued: int) -> None:
        self.overflowed = True
        self._queue = deque(item for item in self._queue if item is None)
        self.queued_bytes = 0
        self.over_since = None
        self._hooks.on_send_overflow(frames, queued)


_hooks: ContextVar[ConnectionHooks | None] = ContextVar("counter_service_hooks", default=None)


@contextmanager
def guard_connection(hooks: ConnectionHooks) -> Iterator[None]:
    """Apply `hooks` to the Flet connection that Flet's websocket handler makes, if its
    task is started inside this block (a task copies the context it starts in)."""
    _install_send_queues()
    _install_patch_guard()
    _install_event_guard()
    token = _hooks.set(hooks)
    try:
        yield
    finally:
        _hooks.reset(token)


class _SendQueueSlot:
    """Stands in for FletApp's private `__send_queue` attribute: the queue FletApp makes
    for a websocket under `guard_connection` becomes a `SendQueue`."""

    def __get__(self, app: object, owner: type | None = None) -> Any:
        if app is None:
            return self
        try:
            return app.__dict__[_SEND_QUEUE]
        except KeyError:
            raise AttributeError(_SEND_QUEUE) from None

    def __set__(self, app: object, queue: Any) -> None:
        hooks = _hooks.get()
        if hooks is not None and type(queue) is asyncio.Queue:
            queue = hooks.send_queue = SendQueue(hooks)
        app.__dict__[_SEND_QUEUE] = queue


_SEND_QUEUE = "_FletApp__send_queue"


def _install_send_queues() -> None:
    if not isinstance(FletApp.__dict__.get(_SEND_QUEUE), _SendQueueSlot):
        setattr(FletApp, _SEND_QUEUE, _SendQueueSlot())


def _install_patch_guard() -> None:
    original = Session.apply_patch
    if getattr(original, "_counter_service_guard", False):
        return

    def apply_patch(self: Session, control_id: int, patch: dict[str, Any]) -> None:
        try:
            original(self, control_id, patch)
        except Exception as exc:
            hooks = _hooks.get()
            if hooks is None:
                raise
            hooks.on_bad_patch(exc)

    apply_patch._counter_service_guard = True  # type: ignore[attr-defined]  # marks it as ours
    Session.apply_patch = apply_patch  # type: ignore[method-assign]  # see guard_connection


class _BadEventData(Exception):
    """Flet could not build an event's object from the data the client sent."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _install_event_guard() -> None:
    # BaseControl._trigger_event builds the event object with base_control's global
    # `from_dict`, inside the handler's try in Session.dispatch_event (which logs a
    # traceback and crashes the session): the build is wrapped to mark its failure,
    # and the trigger to hand that failure to the guard instead.
    original_build = _EVENTS.from_dict
    if getattr(original_build, "_counter_service_guard", False):
        return
    original_trigger = BaseControl._trigger_event

    @functools.wraps(original_build)
    def from_dict(cls: Any, data: Any) -> Any:
        if _hooks.get() is None:
            return original_build(cls, data)
        if not isinstance(data.get("control"), BaseControl):
            raise _BadEventData(TypeError("event data that replaces its control"))
        try:
            return original_build(cls, data)
        except Exception as exc:
            raise _BadEventData(exc) from exc

    @functools.wraps(original_trigger)
    async def trigger_event(self: BaseControl, event_name: str, *args: Any, **kw: Any) -> None:
        try:
            await original_trigger(self, event_name, *args, **kw)
        except _BadEventData as bad:
            hooks = _hooks.get()
            if hooks is None:
                raise bad.error from None
            hooks.on_bad_event(event_name, bad.error)

    from_dict._counter_service_guard = True  # type: ignore[attr-defined]  # marks it as ours
    _EVENTS.from_dict = from_dict
    BaseControl._trigger_event = trigger_event  # type: ignore[method-assign]  # see guard_connection


def current_session() -> Session | None:
    """The session whose websocket handler runs the caller, once its register message
    went through (Flet sets the page context in its handler then)."""
    try:
        return ft.context.page.session
    except RuntimeError:  # no page in this context, or its session is gone
        return None


def has_control(session: Session, control_id: int) -> bool:
    """True if `session` still holds a control with id `control_id` (Flet raises on a
    method result for any other; a page may remove a control while a call is out)."""
    return control_id in session.index


def control_of(session: Session, control_id: int) -> object | None:
    """The control of `session` with id `control_id`, if it has one."""
    control: object | None = session.index.get(control_id)
    return control


_ended: weakref.WeakSet[Session] = weakref.WeakSet()


async def end_session(session: Session) -> None:
    """End `session` now rather than after its timeout: no reconnect can re-attach
    it, Flet closes it (its page hears `on_close`) and frees it."""
    if session.expires_at is None:
        await session.disconnect(0)
    _ended.add(session)
    sessions = app_manager._FletAppManager__sessions
    key = next((key for key, held in sessions.items() if held is session), None)
    if key is not None:
        await app_manager.delete_session(key)
