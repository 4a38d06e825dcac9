"""ASGI middleware that owns each websocket's life: what a client may send, how fast,
how long it may take to register or to read, and when it counts as online.

Flet 1.0.5's websocket handler trusts its client, and has holes this closes:
- a frame it cannot parse, or a client that leaves before registering, leaves the handler
  waiting for ever: every frame is decoded and checked first
  (counter_service.flet.frames), a bad one closes the connection, and a handler still
  running after the client left is cancelled (at once if the client never registered,
  after `grace_s` otherwise);
- nothing bounds a client that never registers, never reads, floods frames or sends
  huge ones: each has a limit in `Limits`. Discrete control events (clicks, submits...)
  over the session's rate are dropped (the page is told); continuous ones (what a
  device streams while a gesture lasts: scrolling, pointer moves, drags, a slider,
  typing; counter_service.flet.frames.continuous) and other frames (prop updates,
  method results, data-channel frames) are passed on, since a browser sends them far
  faster than a person clicks and dropping them would leave the browser and the server
  disagreeing about the page; a client sending frames of any kind, from its first one,
  far faster than a browser does is disconnected;
- Flet's send queue per connection is unbounded: it is bounded here in bytes
  (counter_service.flet.internals.SendQueue), and a client that lets it stay full, or
  overflow it at once, is dropped;
- a reconnect that overtakes its old connection's end would get a new session: its
  register message waits (briefly) for the old connection's handler to let go;
- a client refused for any of these has its Flet session ended at once, so it cannot
  re-attach to it and its memory is freed; a client that just left keeps its session
  for Flet's session timeout, so a reconnect finds it;
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

from flet.messaging.session import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from counter_service import settings
from counter_service.flet import internals
from counter_service.flet.frames import (
    EVENT,
    METHOD_RESULT,
    REGISTER,
    BadFrame,
    Frame,
    FrameTooLarge,
    check_frame,
    continuous,
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
# uvicorn queues every frame of what it read at once, and taking one from that queue does
# not yield to the event loop: a client that sent thousands of frames would have them all
# judged (and the dropped ones skipped) in one go, holding every other connection of the
# worker up for tens of milliseconds. Every this many frames, the others go first.
YIELD_EVERY_FRAMES = 16
# What may wait to be sent to a client at any moment, as a multiple of what may wait
# for long (`Limits.max_send_queue_bytes`): room for a burst, memory still bounded.
SEND_BURST_FACTOR = 16
# How long a disconnect waits for the session's main() to finish (WebsocketLife.settled).
_MAIN_SETTLE_S = 2.0
REGISTERED = "registered"
UNREGISTERED = "unregistered"


@dataclass(frozen=True)
class Limits:
    """What one websocket client may do; see the settings of the same names."""

    max_frame_bytes: int = settings.DEFAULT_MAX_FRAME_BYTES
    register_timeout_s: float = settings.DEFAULT_REGISTER_TIMEOUT_S
    send_timeout_s: float = settings.DEFAULT_SEND_TIMEOUT_S
    events_per_s: float = settings.DEFAULT_EVENTS_PER_S
    event_burst: int = settings.DEFAULT_EVENT_BURST
    max_send_queue_bytes: int = settings.DEFAULT_MAX_SEND_QUEUE_BYTES
    """Bytes of frames that may wait for the client to read them (a frame alone always
    may): more for over `send_timeout_s`, or `SEND_BURST_FACTOR` times as much at
    once, and it is dropped as not reading."""
    max_frames_per_s: float = settings.DEFAULT_MAX_FRAMES_PER_S
    """Frames of any kind a client may send a second, sustained, with `frame_burst` at
    once; more, and it is disconnected as flooding."""
    frame_burst: int = settings.DEFAULT_FRAME_BURST
    """Frames a client may send at once: what a browser sends in seconds, which arrive
    together when the worker's event loop was held up."""
    grace_s: float = 10.0
    """How long a registered session's handler may run on after its client left."""
    reattach_wait_s: float = 2.0
    """How long a reconnect waits for its old connection to let go of its session."""
    max_reattach_waits: int = 100
    """Reconnects that may wait so at once per worker; more go on without waiting."""


class ConnectionCounter(Protocol):
    """Anything told about clients coming online and leaving (e.g. `Presence`)."""

    def connected(self) -> None: ...

    def disconnected(self) -> None: ...


@dataclass
class WebsocketStats:
    """What the guard refused, and what it holds open, for metrics."""

    rejected: dict[str, int] = field(default_factory=dict)
    """Connections closed, by reason: bad frame, never registered, not reading, flooding."""
    throttled_events: int = 0
    open: dict[str, int] = field(default_factory=lambda: {REGISTERED: 0, UNREGISTERED: 0})
    """Websockets being handled now, by state: registered, or not (yet)."""

    def moved(self, old: str | None, new: str | None) -> None:
        """One websocket went from state `old` to `new` (None: not open)."""
        if old is not None:
            self.open[old] -= 1
        if new is not None:
            self.open[new] += 1


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
        self.session: Session | None = None
        """Flet's session of this connection, once its register message went through."""
        self._looked_for_session = False
        self.close_code: int | None = None
        """Set when the guard refused the client: the close to send it."""
        self.close_sent = False
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.hooks = internals.ConnectionHooks(
            SEND_BURST_FACTOR * self._limits.max_send_queue_bytes,
            self._sends_overflowed,
            self._bad_props,
            on_bad_event=self._bad_event,
            lasting_send_bytes=self._limits.max_send_queue_bytes,
        )
        self._bucket = TokenBucket(self._limits.events_per_s, self._limits.event_burst)
        self._frames = TokenBucket(self._limits.max_frames_per_s, self._limits.frame_burst)
        self._register_timer: asyncio.TimerHandle | None = None
        self._receiver: asyncio.Task[Any] | None = None
        self._interrupted = False
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once everything about this websocket is over, clean-up included."""
        self._sender: asyncio.Task[Any] | None = None
        self._sending_since: float | None = None
        self._send_cancelled = False
        self._frames_read = 0

    @property
    def state(self) -> str:
        return REGISTERED if self.registered else UNREGISTERED

    async def receive(self) -> Message:
        self._find_session()
        while True:
            if self.close_code is not None:
                return await self._refused()
            message = await self._next_message()
            if message is None:
                continue  # interrupted: the client was refused meanwhile
            if message["type"] == "websocket.disconnect":
                return await self._client_left(message)
            if message["type"] != "websocket.receive":
                return message
            self._frames_read += 1
            if self._frames_read % YIELD_EVERY_FRAMES == 0:
                await asyncio.sleep(0)  # let other connections in: see YIELD_EVERY_FRAMES
            frame = self._admit(message)
            if frame is not None:
                if frame.action == REGISTER:
                    await self._register(frame)
                return message

    def _find_session(self) -> None:
        # Flet's handler asks for the frame after the register message once it handled
        # that message: its context holds the session's page by then.
        if self.registered and not self._looked_for_session:
            self._looked_for_session = True
            self.session = internals.current_session()
            if self.session is not None:
                self._guard.hold(self.session.id, self)

    async def _next_message(self) -> Message | None:
        """The client's next message; None if `_interrupt` ended the wait."""
        task = self._receiver = asyncio.current_task()
        try:
            return await self._receive()
        except asyncio.CancelledError:
            if task is None or not self._interrupted or task.uncancel() > 0:
                raise
            return None
        finally:
            self._receiver = None
            self._interrupted = False

    def _interrupt(self) -> None:
        """End the handler's wait for the client's next frame (the client was refused)."""
        if self._receiver is not None and not self._interrupted:
            self._interrupted = True
            self._receiver.cancel()

    async def _refused(self) -> Message:
        await self.life.settled(_MAIN_SETTLE_S)
        return {"type": "websocket.disconnect", "code": self.close_code}

    async def _client_left(self, message: Message) -> Message:
        if message.get("code") == MESSAGE_TOO_BIG and self.close_code is None:
            # uvicorn closed it for a frame over its own limit (four times ours). A client
            # closing with 1009 itself looks the same: counted, but its session is kept.
            self._count_refusal("bad frame", "sent a frame over the server's own limit")
        self.leave()
        await self.life.settled(_MAIN_SETTLE_S)
        return message

    def _admit(self, message: Message) -> Frame | None:
        """The frame to hand to Flet; None to drop it (refused, throttled or moot)."""
        if not self._frames.take():
            self._flooded()
            return None
        try:
            frame = check_frame(message, self.registered, self._limits.max_frame_bytes)
        except BadFrame as exc:
            code = MESSAGE_TOO_BIG if isinstance(exc, FrameTooLarge) else UNSUPPORTED_DATA
            self.refuse("bad frame", f"sent {exc}", code)
            return None
        if frame.action == EVENT and not self._streamed(frame) and not self._bucket.take():
            self._throttle()
            return None
        if frame.action == METHOD_RESULT and not self._holds_control(frame):
            return None  # Flet would raise and stop reading; the result has no taker
        return frame

    def _flooded(self) -> None:
        rate, burst = self._limits.max_frames_per_s, self._limits.frame_burst
        detail = f"sent frames faster than {rate:.0f} a second ({burst} at once)"
        self.refuse("flooding", detail, POLICY_VIOLATION)

    def _streamed(self, frame: Frame) -> bool:
        """True for a continuous event, which only the frame limit bounds."""
        body = frame.body
        assert body is not None  # an event always has one
        return continuous(body["name"], lambda: self._control(body))

    def _control(self, body: dict[str, Any]) -> object | None:
        session = self.session
        return None if session is None else internals.control_of(session, body["target"])

    def _throttle(self) -> None:
        """Refuse one event, and tell the page (at most once a second)."""
        self._guard.stats.throttled_events += 1
        self.life.throttled()

    def _holds_control(self, frame: Frame) -> bool:
        assert frame.body is not None  # a method result always has one
        session = self.session
        return session is None or internals.has_control(session, frame.body["control_id"])

    async def _register(self, frame: Frame) -> None:
        if frame.session_id is not None:
            await self._guard.let_go(frame.session_id)
        self._registered()

    async def send(self, message: Message) -> None:
        # The hot path of every update: no timer per frame. `watch_sends` notices a
        # send that has not returned for `send_timeout_s` and cancels it.
        if message["type"] == "websocket.close":
            self.close_sent = True
        task = self._sender = asyncio.current_task()
        self._sending_since = time.monotonic()
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if self._send_cancelled and task is not None and task.uncancel() == 0:
                raise ConnectionError("the client stopped reading") from None
            raise
        finally:
            self._sending_since = None
        if message["type"] == "websocket.accept":
            timeout = self._limits.register_timeout_s
            self._register_timer = asyncio.get_running_loop().call_later(timeout, self._overdue)

    def check_send(self, now: float) -> None:
        """Drop the client if a send to it has not returned for `send_timeout_s` (it
        stopped reading and its buffers are full), or if more than
        `max_send_queue_bytes` waited for it all that time (it reads too slowly);
        `now` is `time.monotonic()`."""
        timeout = self._limits.send_timeout_s
        since = self._sending_since
        if since is not None and now - since > timeout:
            self._not_reading("stopped reading")
            return
        queue = self.hooks.send_queue
        if queue is not None and queue.over_since is not None and now - queue.over_since > timeout:
            unread = _unread(queue.qsize(), queue.queued_bytes)
            self._not_reading(f"{unread} for over {timeout:g}s")

    def _sends_overflowed(self, frames: int, queued: int) -> None:
        self._not_reading(_unread(frames, queued))

    def _not_reading(self, detail: str) -> None:
        """Drop the client as not reading, and end a send that waits on it."""
        self.refuse("not reading", detail, POLICY_VIOLATION)
        self._cancel_send()

    def _cancel_send(self) -> None:
        if self._sending_since is not None and self._sender is not None:
            self._send_cancelled = True
            self._sender.cancel()

    def _bad_props(self, error: Exception) -> None:
        detail = f"sent props Flet cannot apply ({_briefly(error)})"
        self.refuse("bad frame", detail, UNSUPPORTED_DATA)

    def _bad_event(self, name: str, error: Exception) -> None:
        detail = f"sent {name!r:.40} event data Flet cannot use ({_briefly(error)})"
        self.refuse("bad frame", detail, UNSUPPORTED_DATA)

    def _registered(self) -> None:
        self.registered = True
        self._guard.stats.moved(UNREGISTERED, REGISTERED)
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
            self._count_refusal(reason, detail)
        self.leave()
        self._interrupt()

    def _count_refusal(self, reason: str, detail: str) -> None:
        stats = self._guard.stats.rejected
        stats[reason] = stats.get(reason, 0) + 1
        warnings.warn(reason, "closed a websocket whose client %s", detail)

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

    async def end_session(self) -> None:
        """End the Flet session of a refused client at once: it must not come back to it."""
        session, self.session = self.session, None
        if session is not None and self.close_code is not None:
            await internals.end_session(session)


class WebsocketGuard:
    """Checks, bounds and counts every websocket of the app it wraps (module doc)."""

    def __init__(self, app: ASGIApp, counter: ConnectionCounter, limits: Limits | None = None):
        self.app = app
        self.counter = counter
        self.limits = limits or Limits()
        self.stats = WebsocketStats()
        self._connections: set[_Connection] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._holders: dict[str, _Connection] = {}
        """The connection each Flet session (by id) was last attached to, while it runs."""
        self._reattach_waits = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        life = WebsocketLife()
        connection = _Connection(receive, send, self, life)
        self.stats.moved(None, UNREGISTERED)
        token = _current.set(life)  # before the task starts: it copies the context
        try:
            with internals.guard_connection(connection.hooks):
                await self._run(scope, connection)
        finally:
            _current.reset(token)
            session = connection.session  # end_session forgets it
            connection.leave()
            self.stats.moved(connection.state, None)
            try:
                await connection.send_close()
                await life.close()  # the bridge may detach the Flet session only here
                await connection.end_session()
            finally:
                self._release(session, connection)
                connection.ended.set_result(None)

    def hold(self, session_id: str, connection: _Connection) -> None:
        """`connection` is the one Flet session `session_id` is attached to now."""
        self._holders[session_id] = connection

    def _release(self, session: Session | None, connection: _Connection) -> None:
        if session is not None and self._holders.get(session.id) is connection:
            del self._holders[session.id]

    async def let_go(self, session_id: str) -> None:
        """Wait, at most `reattach_wait_s`, until the connection that holds Flet session
        `session_id` (if any) ended, its clean-up included: Flet re-attaches a reconnect
        only to a session its old connection let go of, and gives it a new session
        otherwise (a reconnect that overtook the old connection's end, through a proxy
        or at once). At most `max_reattach_waits` wait at a time: any client may name
        any session it knows."""
        holder = self._holders.get(session_id)
        if holder is None:
            return
        if self._reattach_waits >= self.limits.max_reattach_waits:
            return
        self._reattach_waits += 1
        try:
            await asyncio.wait({holder.ended}, timeout=self.limits.reattach_wait_s)
        finally:
            self._reattach_waits -= 1

    def _watch(self, connection: _Connection) -> None:
        self._connections.add(connection)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.ensure_future(self._watch_sends())

    async def _watch_sends(self) -> None:
        """One watchdog for every connection (not a task each: memory per session);
        it ends with the last connection and starts again with the next."""
        while self._connections:
            await asyncio.sleep(self.limits.send_timeout_s / 4)
            now = time.monotonic()
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
            # A cancelled handler leaves Flet's send loop waiting on its queue.
            connection.hooks.end_sends()


def _unread(frames: int, queued: int) -> str:
    return f"left {frames} frames ({queued} bytes) unread"


def _briefly(error: Exception) -> str:
    """What Flet raised, in one short line for the refusal's warning."""
    return f"{type(error).__name__}: {error!s:.80}"


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
