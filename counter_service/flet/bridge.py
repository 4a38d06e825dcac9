"""The bridge between one Flet app and the service: its hub, its pages' live counters,
and what each session registered, torn down when Flet evicts the session."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import flet as ft

from counter_service.errors import CorruptCounter, CounterServiceError
from counter_service.flet import internals
from counter_service.flet.live import Fanout, LiveCounters
from counter_service.flet.websockets import current_websocket
from counter_service.pubsub.messages import AppMessage
from counter_service.service import CounterService
from counter_service.versions import CounterUpdate

logger = logging.getLogger(__name__)

MissedHandler = Callable[[], Awaitable[None] | None]


class PageCounters:
    """One page's counters: count, read, and show live values.

    Get it with `counter_service.counters(page)` inside an app built with
    `counter_service.app`."""

    def __init__(self, page: ft.Page, bridge: FletBridge) -> None:
        self._service = bridge.service
        self._fanout = bridge.fanout
        self._live = LiveCounters(page, direct=bridge.service.settings.fanout == "direct")
        self._availability_handler: Callable[[bool], None] | None = None
        self._away = False

    async def incr(self, name: str, amount: int = 1) -> int:
        """Add `amount` to counter `name` (created at 0 on first use), show the new
        value on this page at once, and return it. Every page on every worker that
        shows `name` follows within milliseconds.

        Raises what `CounterService.incr` raises: `CorruptCounter` (nothing written),
        `StoreUnavailable`, `InvalidCounterName`, ..."""
        try:
            event = await self._service.incr(name, amount)
        except CorruptCounter:
            # Every page that shows it should say so now, not at the next reconciliation.
            self._service.counters.read_back([name])
            raise
        self._live.show(CounterUpdate.change(event))
        return event.value

    async def get(self, name: str) -> int:
        """The value of counter `name` in Redis now (a round trip)."""
        return await self._service.get(name)

    def show(self, texts: Mapping[str, ft.Text]) -> None:
        """Keep each Text's `value` equal to its counter (name -> Text), on this page,
        from now until the session ends. A Text shows `—` until the value is known and
        while the counter is broken."""
        for name, text in texts.items():
            self._live.bind(name, text)
            self._fanout.add(self._live, name)
            latest = self._service.latest(name)
            if latest is not None:
                self._live.show(latest)

    def value(self, name: str) -> int | None:
        """The value this page shows for counter `name`; None if unknown or broken."""
        return self._live.value(name)

    def on_change(self, handler: Callable[[CounterUpdate], None] | None) -> None:
        """Call `handler` with each update this page shows (e.g. to say a counter is
        broken: `update.problem`)."""
        self._live.on_change = handler

    @property
    def available(self) -> bool:
        """True while this worker is connected to Redis: the values shown are current.
        While False they are the last known ones, and increments fail."""
        return self._service.available

    def on_availability(self, handler: Callable[[bool], None] | None) -> None:
        """Call `handler(available)` on this page each time `available` changes (e.g.
        to mark the numbers as stale)."""
        self._availability_handler = handler

    def close(self) -> None:
        """Stop showing live values (done for you when the session ends)."""
        self._fanout.remove(self._live)

    def _availability_changed(self, available: bool) -> None:
        if self._availability_handler is None or self._away:
            return
        try:
            self._availability_handler(available)
        except Exception:
            logger.exception("a page's availability handler failed")

    def _park(self) -> None:
        # The browser left: no deliveries until it is back (or the session expires).
        self._away = True
        self._fanout.remove(self._live)

    def _resume(self) -> None:
        # Back on a new websocket: catch up on what was not delivered while away.
        self._away = False
        for name in self._live.names:
            self._fanout.add(self._live, name)
            latest = self._service.latest(name)
            if latest is not None:
                self._live.show(replace(latest, reset=True))
        self._availability_changed(self.available)


@dataclass
class _Session:
    page: ft.Page
    counters: PageCounters | None = None
    missed: list[MissedHandler] = field(default_factory=list)
    throttled: list[Callable[[], None]] = field(default_factory=list)


class FletBridge:
    """What `counter_service.app` adds to one Flet app: the cross-process hub, live
    counters, and per-session registrations."""

    def __init__(self, service: CounterService, session_timeout_s: int) -> None:
        self.service = service
        self.session_timeout_s = session_timeout_s
        """How long Flet keeps a departed session (for sessions Flet forgets to mark)."""
        self.fanout = Fanout(service.watch, service.unwatch)
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.hub: internals.CrossProcessHub | None = None

    def wrap(self, main: Callable[[ft.Page], Any]) -> internals.Main:
        """`main`, preceded by what every session needs (see `open_session`)."""
        if inspect.isasyncgenfunction(main) or inspect.isgeneratorfunction(main):
            raise TypeError("counter_service.app needs an async or plain main(page) function")

        async def session_main(page: ft.Page) -> None:
            await self.open_session(page)
            life = current_websocket()
            if life is not None:
                life.main_started()
            try:
                result = main(page)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if life is None or not life.gone:
                    raise  # a bug in main: Flet logs it and shows the error
                logger.debug("main() failed after the client left", exc_info=True)
            finally:
                if life is not None:
                    life.main_finished()

        return session_main

    async def open_session(self, page: ft.Page) -> None:
        """When the session's websocket ends, pause its live counters and make sure it
        is marked disconnected (Flet may skip it, see counter_service.flet.websockets)."""
        life = current_websocket()
        if life is None:
            return
        connection = page.session.connection

        async def closed() -> None:
            self._park(page.session.id)
            await internals.disconnect_if_abandoned(page, connection, self.session_timeout_s)

        life.on_throttled(lambda: self._throttled(page.session.id))
        await life.on_close(closed)

    def _throttled(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        for handler in () if session is None else session.throttled:
            try:
                handler()
            except Exception:
                logger.exception("a page's throttle handler failed")

    def _park(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None and session.counters is not None:
            session.counters._park()

    def _resumed(self, flet_session: Any) -> None:
        session = self._sessions.get(flet_session.id)
        if session is not None and session.counters is not None:
            session.counters._resume()

    def counters(self, page: ft.Page) -> PageCounters:
        """The page's `PageCounters`, made on first use."""
        session = self._session(page)
        if session.counters is None:
            session.counters = PageCounters(page, self)
        return session.counters

    def on_missed_messages(self, page: ft.Page, handler: MissedHandler) -> None:
        """Call `handler()` on this page after messages may have been missed."""
        self._session(page).missed.append(handler)

    def on_throttled(self, page: ft.Page, handler: Callable[[], None]) -> None:
        """Call `handler()` on this page when its events are being refused."""
        self._session(page).throttled.append(handler)

    def _session(self, page: ft.Page) -> _Session:
        return self._sessions.setdefault(page.session.id, _Session(page))

    @asynccontextmanager
    async def running(self, main: internals.Main) -> AsyncIterator[None]:
        """Install the hub for `main` and relay messages, counters and re-subscribes
        into this process's pages, while the service runs."""
        self.hub = internals.CrossProcessHub(
            self._publish,
            asyncio.get_running_loop(),
            self._session_closed,
            owner=self,
            on_topics=self._topics_changed,
        )
        internals.install_hub(main, self.hub)
        stops = [
            internals.on_reconnect(self._resumed),
            self.service.on_message(self._deliver_message),
            self.service.subscribe(self.fanout.deliver),
            self.service.on_resubscribe(self._messages_missed),
            self.service.on_availability(self._availability_changed),
        ]
        try:
            yield
        finally:
            for stop in stops:
                stop()
            internals.uninstall_hub(main)
            for task in tuple(self._tasks):
                task.cancel()

    def _publish(self, topic: str | None, message: Any, exclude: str | None) -> None:
        self.service.publish_nowait(topic, message, exclude)

    def _topics_changed(self, topic: str, wanted: bool) -> None:
        if wanted:
            self.service.listen(topic)
        else:
            self.service.unlisten(topic)

    def _deliver_message(self, message: AppMessage) -> None:
        if self.hub is not None:
            self.hub.deliver(
                message.topic, message.message, message.excluded_on(self.service.worker_id)
            )

    def _session_closed(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is None or not internals.session_evicted(session.page):
            return  # the app unsubscribed by itself; the session lives on
        del self._sessions[session_id]
        if session.counters is not None:
            session.counters.close()

    def _availability_changed(self, available: bool) -> None:
        for session in tuple(self._sessions.values()):
            if session.counters is not None:
                session.counters._availability_changed(available)

    def _messages_missed(self) -> None:
        for session in tuple(self._sessions.values()):
            for handler in session.missed:
                self._run_handler(handler)

    def _run_handler(self, handler: MissedHandler) -> None:
        try:
            result = handler()
        except Exception:
            logger.exception("a missed-messages handler failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a missed-messages handler failed", exc_info=task.exception())


def bridge_of(page: ft.Page) -> FletBridge:
    """The bridge of the `counter_service.app` that serves `page`."""
    owner = getattr(internals.hub_of(page), "owner", None)
    if not isinstance(owner, FletBridge):
        raise CounterServiceError(
            "this page is not served by counter_service.app(main): build the app with it"
        )
    return owner


def counters(page: ft.Page) -> PageCounters:
    """The counters of the app serving `page`: `incr`, `get`, and `show` live values."""
    return bridge_of(page).counters(page)


def on_missed_messages(page: ft.Page, handler: MissedHandler) -> None:
    """Call `handler()` (plain or async) on this page whenever the worker's Redis
    subscription was lost and is back: `page.pubsub` messages sent meanwhile were
    missed, so the page should reload what it shows from its source of truth."""
    bridge_of(page).on_missed_messages(page, handler)


def service_of(page: ft.Page) -> CounterService:
    """The `CounterService` of the app serving `page` (for what `counters` lacks)."""
    return bridge_of(page).service


def on_throttled(page: ft.Page, handler: Callable[[], None]) -> None:
    """Call `handler()` (at most once a second) while this page's clicks and other
    events are refused for coming faster than `events_per_s` / `event_burst` allow,
    e.g. to tell the user to slow down. Refused events never reach their handlers."""
    bridge_of(page).on_throttled(page, handler)
