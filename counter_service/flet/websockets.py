"""ASGI middleware that owns each websocket's lifetime: presence counting and cleanup.

Flet 1.0.5's websocket handler has two holes this closes:
- a client that leaves before registering leaves the handler waiting forever (its send
  loop never gets its stop signal), so the connection would count as live forever:
  we count the client's disconnect when it arrives, and cancel a handler that is still
  running `grace_s` after the client left;
- when sending to a socket that just closed fails, the handler raises before it marks
  the session disconnected: pages register a close callback (`current_websocket()`)
  to finish that work themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CloseCallback = Callable[[], Awaitable[None]]

DEFAULT_GRACE_S = 10.0


class ConnectionCounter(Protocol):
    """Anything told about connections opening and closing (e.g. `Presence`)."""

    def connected(self) -> None: ...

    def disconnected(self) -> None: ...


class WebsocketLife:
    """The end of one websocket connection, for code that must clean up after it."""

    def __init__(self) -> None:
        self.closed = False
        self._callbacks: list[CloseCallback] = []

    async def on_close(self, callback: CloseCallback) -> None:
        """Run `callback` once the connection's handling is over (now, if it is)."""
        if self.closed:
            await callback()
        else:
            self._callbacks.append(callback)

    async def close(self) -> None:
        self.closed = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                logger.exception("cleanup after a websocket closed failed")


_current: ContextVar[WebsocketLife | None] = ContextVar("counter_websocket", default=None)


def current_websocket() -> WebsocketLife | None:
    """The websocket whose handling runs the calling code (tasks inherit it), if any."""
    return _current.get()


class _Presence:
    """Counts one connection live from accept until it is gone, exactly once."""

    def __init__(self, counter: ConnectionCounter) -> None:
        self.counter = counter
        self.accepted = False
        self.gone = asyncio.Event()

    def accept(self) -> None:
        if not self.accepted and not self.gone.is_set():
            self.accepted = True
            self.counter.connected()

    def leave(self) -> None:
        if not self.gone.is_set():
            self.gone.set()
            if self.accepted:
                self.counter.disconnected()

    def watch(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.leave()
            return message

        async def watched_send(message: Message) -> None:
            await send(message)
            if message["type"] == "websocket.accept":
                self.accept()

        return watched_receive, watched_send


class CountWebsockets:
    """Counts live websockets and guarantees each one's handling ends (see module doc)."""

    def __init__(
        self, app: ASGIApp, counter: ConnectionCounter, grace_s: float = DEFAULT_GRACE_S
    ) -> None:
        self.app = app
        self.counter = counter
        self.grace_s = grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        presence, life = _Presence(self.counter), WebsocketLife()
        token = _current.set(life)  # before the task starts: it copies the context
        try:
            await self._run(scope, *presence.watch(receive, send), presence)
        finally:
            _current.reset(token)
            presence.leave()
            await life.close()

    async def _run(self, scope: Scope, receive: Receive, send: Send, presence: _Presence) -> None:
        app: asyncio.Future[None] = asyncio.ensure_future(self.app(scope, receive, send))
        gone: asyncio.Future[Any] = asyncio.ensure_future(presence.gone.wait())
        try:
            await asyncio.wait({app, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done():
                await asyncio.wait({app}, timeout=self.grace_s)
            if not app.done():
                logger.warning(
                    "websocket handler still running %.0fs after the client left; cancelling it",
                    self.grace_s,
                )
                app.cancel()
            await asyncio.wait({app})
            _raise_unless_client_gone(app, presence)
        finally:
            for task in (app, gone):
                task.cancel()
            await asyncio.gather(app, gone, return_exceptions=True)


def _raise_unless_client_gone(app: asyncio.Future[None], presence: _Presence) -> None:
    if app.cancelled():
        return
    error = app.exception()
    if error is None:
        return
    if presence.gone.is_set():
        # The handler failed sending to a socket the client had closed: expected noise.
        logger.debug("websocket handler failed after the client left", exc_info=error)
        return
    raise error
