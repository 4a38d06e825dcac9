"""ASGI middleware that reports live websocket connections to presence."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionCounter(Protocol):
    """Anything told about connections opening and closing (e.g. `Presence`)."""

    def connected(self) -> None: ...

    def disconnected(self) -> None: ...


class CountWebsockets:
    """Counts a websocket as live from its accept until the app is done with it.

    Counting connections rather than Flet sessions matters: a session outlives its
    browser by `FLET_SESSION_TIMEOUT`, a connection does not."""

    def __init__(self, app: ASGIApp, counter: ConnectionCounter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = False

        async def send_and_count(message: Message) -> None:
            nonlocal accepted
            await send(message)
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                self.counter.connected()

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            if accepted:
                self.counter.disconnected()
