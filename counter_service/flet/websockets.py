"""ASGI middleware that owns each websocket's life: what a client may send, how fast,
how long it may take to register or to read, and when it counts as online.

Flet 1.0.5's websocket handler trusts its client, and has holes this closes:
- a frame it cannot parse, or a client that leaves before registering, leaves the handler
  waiting for ever: every frame is checked first (counter_service.flet.frames), a bad
  one closes the connection, and a handler still running after the client left is
  cancelled (at once if the client never registered, after `grace_s` otherwise);
- nothing bounds a client that never registers, never reads, floods events or sends huge
  frames: each has a limit in `Limits`;
- when sending to a socket that just closed fails, the handler raises before it marks
  the session disconnected: pages register a close callback (`current_websocket()`)
  to finish that work themselves.
Only a client that registered counts as a live connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counter_service.flet.frames import (
    REGISTER,
    BadFrame,
    Frame,
    FrameTooLarge,
    check_frame,
    looks_like_event,
)
from counter_service.logs import SummarizedWarnings

logger = logging.getLogger(__name__)
warnings = SummarizedWarnings(logger)

CloseCallback = Callable[[], Awaitable[None]]

# WebSocket close codes (RFC 6455).
POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
MESSAGE_TOO_BIG = 1009
_CLOSE_SEND_S = 1.0
# A client whose events are refused this many times its rate within a second (and at
# least FLOOD_MIN) is a machine flooding the worker: it is disconnected.
FLOOD_FACTOR = 10
FLOOD_MIN = 100
# How long a disconnect waits for the session's main() to finish (WebsocketLife.settled).
_MAIN_SETTLE_S = 2.0


@dataclass(frozen=True)
class Limits:
    """What one websocket client may do; see the settings of the same names."""

    max_frame_bytes: int = 1024 * 1024
    register_timeout_s: float = 10.0
    send_timeout_s: float = 10.0
    events_per_s: float = 20.0
    event_burst: int = 40
    grace_s: float = 10.0
    """How long a registered session's handler may run on after its client left."""


class ConnectionCounter(Protocol):
    """Anything told about clients coming online and leaving (e.g. `Presence`)."""

    def connected(self) -> None: ...

    def disconnected(self) -> None: ...


@dataclass
class WebsocketStats:
    """What the guard refused, for metrics."""

    rejected: dict[str, int] = field(default_factory=dict)
    """Connections closed, by reason: bad frame, too big, never registered, not reading."""
    throttled_events: int = 0


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take()` spends one if it can."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class WebsocketLife:
    """The end of one websocket connection, and its refused events, for the page code
    that must clean up after it or tell its user."""

    def __init__(self) -> None:
        self.closed = False
        """True once the connection's handling is over and the close callbacks ran."""
        self.gone = False
        """True as soon as the client left or was refused (handling may still run)."""
        self._mains = 0
        self._no_main = asyncio.Event()
        self._no_main.set()
        self._callbacks: list[CloseCallback] = []
        self._throttled: list[Callable[[], None]] = []
        self._last_throttle_notice = -1e9

    async def on_close(self, callback: CloseCallback) -> None:
        """Run `callback` once the connection's handling is over (now, if it is)."""
        if self.closed:
            await callback()
        else:
            self._callbacks.append(callback)

    def main_started(self) -> None:
        """The session's main() began (see `settled`)."""
        self._mains += 1
        self._no_main.clear()

    def main_finished(self) -> None:
        self._mains -= 1
        if self._mains <= 0:
            self._no_main.set()

    async def settled(self, timeout: float) -> None:
        """Wait until no main() of this connection runs, at most `timeout` seconds.

        Flet 1.0.5 clears a connection's session once it has seen the disconnect; a
        main() still running then fails sending, and Flet's own error handling fails on
        the cleared session with a traceback. So the disconnect is held back this long."""
        if self._no_main.is_set():
            return  # no await: a reconnect must not find the old connection still attached
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._no_main.wait()

    def on_throttled(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when events of this client are refused (at most once a second)."""
        self._throttled.append(callback)

    def throttled(self) -> None:
        now = time.monotonic()
        if now - self._last_throttle_notice < 1.0:
            return
        self._last_throttle_notice = now
        for callback in self._throttled:
            try:
                callback()
            except Exception:
                logger.exception("a throttle callback failed")

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


class _Connection:
    """One websocket between the client and Flet: checks what comes in, bounds what goes
    out, counts the client online from its register message until it is gone."""

    def __init__(
        self, receive: Receive, send: Send, guard: WebsocketGuard, life: WebsocketLife
    ) -> None:
        self._receive = receive
        self._send = send
        self._guard = guard
        self._limits = guard.limits
        self.life = life
        self.registered = False
        self.close_code: int | None = None
        """Set when the guard refused the client: the close to send it."""
        self.close_sent = False
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._bucket = TokenBucket(self._limits.events_per_s, self._limits.event_burst)
        self._register_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._sender: asyncio.Task[Any] | None = None
        self._sending_since: float | None = None
        self._flood_window = -1.0
        self._flood_count = 0
        self._flood_limit = max(FLOOD_MIN, int(FLOOD_FACTOR * self._limits.events_per_s))

    async def receive(self) -> Message:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.leave()
                await self.life.settled(_MAIN_SETTLE_S)
                return message
            if message["type"] != "websocket.receive":
                return message
            frame = self._admit(message)
            if frame is not None:
                if frame.action == REGISTER:
                    await self._register(frame)
                return message
            if self.close_code is not None:
                await self.life.settled(_MAIN_SETTLE_S)
                return {"type": "websocket.disconnect", "code": self.close_code}

    def _admit(self, message: Message) -> Frame | None:
        """The frame to hand to Flet; None to drop it (refused or throttled)."""
        if self.registered and looks_like_event(message) and not self._bucket.take():
            self._throttle()  # before decoding: a flood must cost as little as possible
            return None
        try:
            return check_frame(message, self.registered, self._limits.max_frame_bytes)
        except BadFrame as exc:
            code = MESSAGE_TOO_BIG if isinstance(exc, FrameTooLarge) else UNSUPPORTED_DATA
            self.refuse("bad frame", f"sent {exc}", code)
            return None

    def _throttle(self) -> None:
        """Refuse one event; a client refused far more than a person could send is a
        flood, and is disconnected so that it stops costing anything."""
        self._guard.stats.throttled_events += 1
        self.life.throttled()
        now = self._loop.time()
        if now - self._flood_window >= 1.0:
            self._flood_window, self._flood_count = now, 0
        self._flood_count += 1
        if self._flood_count > self._flood_limit:
            self.refuse(
                "flooding", f"sent over {self._flood_limit} events a second", POLICY_VIOLATION
            )

    async def _register(self, frame: Frame) -> None:
        if frame.session_id is not None and self._guard.before_reattach is not None:
            await self._guard.before_reattach(frame.session_id)
        self._registered()

    async def send(self, message: Message) -> None:
        # The hot path of every update: no timer per frame. `watch_sends` notices a
        # send that has not returned for `send_timeout_s` and cancels it.
        if message["type"] == "websocket.close":
            self.close_sent = True
        self._sender = asyncio.current_task()
        self._sending_since = self._loop.time()
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if self.close_code == POLICY_VIOLATION:  # cancelled by watch_sends
                raise ConnectionError("the client stopped reading") from None
            raise
        finally:
            self._sending_since = None
        if message["type"] == "websocket.accept":
            timeout = self._limits.register_timeout_s
            self._register_timer = asyncio.get_running_loop().call_later(timeout, self._overdue)

    def check_send(self, now: float) -> None:
        """Drop the client if a send to it has not returned for `send_timeout_s` (it
        stopped reading and its buffers are full)."""
        since = self._sending_since
        if since is not None and now - since > self._limits.send_timeout_s:
            self.refuse("not reading", "stopped reading", POLICY_VIOLATION)
            if self._sender is not None:
                self._sender.cancel()

    def _registered(self) -> None:
        self.registered = True
        if self._register_timer is not None:
            self._register_timer.cancel()
        if not self.gone.done():
            self._guard.counter.connected()

    def _overdue(self) -> None:
        if not self.registered:
            timeout = self._limits.register_timeout_s
            self.refuse(
                "never registered", f"did not register within {timeout:.0f}s", POLICY_VIOLATION
            )

    def refuse(self, reason: str, detail: str, code: int) -> None:
        """Close the connection on the client for `reason` (one warning per kind)."""
        if self.close_code is None:
            self.close_code = code
            stats = self._guard.stats.rejected
            stats[reason] = stats.get(reason, 0) + 1
            warnings.warn(reason, "closed a websocket whose client %s", detail)
        self.leave()

    def leave(self) -> None:
        if self._register_timer is not None:
            self._register_timer.cancel()
        if not self.gone.done():
            self.gone.set_result(None)
            self.life.gone = True
            if self.registered:
                self._guard.counter.disconnected()

    async def send_close(self) -> None:
        """Tell a refused client why, unless a close went out already."""
        if self.close_code is None or self.close_sent:
            return
        self.close_sent = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_SEND_S):
                await self._send({"type": "websocket.close", "code": self.close_code})


class WebsocketGuard:
    """Checks, bounds and counts every websocket of the app it wraps (module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        counter: ConnectionCounter,
        limits: Limits | None = None,
        before_reattach: Callable[[str], Awaitable[None]] | None = None,
    ):
        self.app = app
        self.counter = counter
        self.limits = limits or Limits()
        self.before_reattach = before_reattach
        """Awaited before a register message that asks for an existing session goes on."""
        self.stats = WebsocketStats()
        self._connections: set[_Connection] = set()
        self._watchdog: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        life = WebsocketLife()
        connection = _Connection(receive, send, self, life)
        token = _current.set(life)  # before the task starts: it copies the context
        try:
            await self._run(scope, connection)
        finally:
            _current.reset(token)
            connection.leave()
            await connection.send_close()
            await life.close()

    def _watch(self, connection: _Connection) -> None:
        self._connections.add(connection)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch_sends())

    async def _watch_sends(self) -> None:
        """One watchdog for every connection (not a task each: memory per session);
        it ends with the last connection and starts again with the next."""
        loop = asyncio.get_running_loop()
        while self._connections:
            await asyncio.sleep(self.limits.send_timeout_s / 4)
            now = loop.time()
            for connection in tuple(self._connections):
                connection.check_send(now)

    async def _run(self, scope: Scope, connection: _Connection) -> None:
        app = asyncio.ensure_future(self.app(scope, connection.receive, connection.send))
        self._watch(connection)
        try:
            await asyncio.wait({app, connection.gone}, return_when=asyncio.FIRST_COMPLETED)
            # A client that never registered has no session to clean up: stop at once.
            grace = self.limits.grace_s if connection.registered else 0.0
            if not app.done() and grace:
                await asyncio.wait({app}, timeout=grace)
            if not app.done():
                if connection.registered:
                    logger.warning(
                        "websocket handler still running %.0fs after the client left;"
                        " cancelling it",
                        grace,
                    )
                app.cancel()
            await asyncio.wait({app})
            _raise_unless_client_gone(app, connection)
        finally:
            self._connections.discard(connection)
            app.cancel()
            await asyncio.gather(app, return_exceptions=True)


def _raise_unless_client_gone(app: asyncio.Future[Any], connection: _Connection) -> None:
    if app.cancelled():
        return
    error = app.exception()
    if error is None:
        return
    if connection.gone.done():
        # The handler failed sending to a socket the client had closed: expected noise.
        logger.debug("websocket handler failed after the client left", exc_info=error)
        return
    raise error
