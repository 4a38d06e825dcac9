"""Headless client for Flet's websocket protocol (what the Flutter web client speaks).

One :class:`HeadlessSession` is one browser tab: it registers like the web client, mirrors the
page's control tree locally (patched in place, indexed by control id and ``key``), answers the
server's invoke-method calls, and can click controls and change the route. It is cheap enough to
run thousands of sessions from one asyncio process.

Wire format: binary frames ``0x00 + msgpack([action, body])``; see ``flet/messaging/protocol.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from collections.abc import Callable, Iterator, Mapping
from http.cookies import SimpleCookie
from types import TracebackType
from typing import Any, Final, NoReturn, Self
from urllib.parse import urlsplit, urlunsplit

import msgpack  # type: ignore[import-untyped, unused-ignore]
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

__all__ = ["ControlTree", "FletError", "HeadlessSession", "SessionCrashed", "ws_url"]

Control = dict[str, Any]
ChangeCallback = Callable[[str, Any, float], None]
InvokeHandler = Callable[[int, str, Any], Any]

REGISTER_CLIENT: Final = 1
PATCH_CONTROL: Final = 2
CONTROL_EVENT: Final = 3
UPDATE_CONTROL_PROPS: Final = 4
INVOKE_METHOD: Final = 5
SESSION_CRASHED: Final = 6

OP_REPLACE: Final = 0
OP_ADD: Final = 1
OP_REMOVE: Final = 2
OP_MOVE: Final = 3

PROTOCOL_FRAME: Final = 0x00
DEFAULT_USER_AGENT: Final = "counter-service-headless/0.1"
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
PAGE_ID: Final = 1

_MISSING: Final = object()
_INT_RE: Final = re.compile(r"-?\d+")
_ZERO_PADDING: Final = {"left": 0, "top": 0, "right": 0, "bottom": 0}


class FletError(Exception):
    """Base error of the headless client: connection lost, protocol failure, app crash."""


class SessionCrashed(FletError):
    """The server reported a crashed session (action 6), e.g. an unhandled handler exception."""

    def __init__(self, message: str) -> None:
        super().__init__(f"session crashed: {message}")
        self.message = message


def ws_url(url: str) -> str:
    """Return the websocket URL (``ws(s)://.../ws``) for an app's http(s) base URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


def _cookie_header(cookies: Mapping[str, str]) -> dict[str, str] | None:
    """The ``Cookie`` request header a browser would send with these cookies."""
    if not cookies:
        return None
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def _cookies_set_by(ws: ClientConnection) -> dict[str, str]:
    """The cookies the server set in its handshake response, as ``name -> value``."""
    jar: SimpleCookie = SimpleCookie()
    for header in [] if ws.response is None else ws.response.headers.get_all("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def _decode_ext(code: int, data: bytes) -> Any:
    """Decode Flet's msgpack extension types the way ``decode_ext_from_msgpack`` does."""
    if code == 1:
        return datetime.datetime.fromisoformat(data.decode())
    if code == 2:
        return datetime.time.fromisoformat(data.decode())
    if code == 3:
        return datetime.timedelta(microseconds=int(data))
    if code == 4:
        return data.decode()
    return msgpack.ExtType(code, data)


def _page_props(route: str) -> dict[str, Any]:
    """Page snapshot sent on registration, shaped like the Flutter web client's."""
    return {
        "route": route,
        "pwa": False,
        "web": True,
        "debug": False,
        "wasm": False,
        "multi_view": False,
        "platform_brightness": "light",
        "width": 1280.0,
        "height": 720.0,
        "platform": "linux",
        "window": {"_c": "Window", "_i": 2},
        "media": {
            "padding": dict(_ZERO_PADDING),
            "view_padding": dict(_ZERO_PADDING),
            "view_insets": dict(_ZERO_PADDING),
            "device_pixel_ratio": 1.0,
            "orientation": "landscape",
        },
    }


def _key_of(control: Control) -> str | None:
    """Normalize a control key: plain values, or ``ValueKey``/``ScrollKey`` dicts."""
    key = control.get("key")
    if isinstance(key, dict):
        key = key.get("value")
    return None if key is None else str(key)


def _is_control(value: Any) -> bool:
    return isinstance(value, dict) and "_c" in value and "_i" in value


def _controls_in(value: Any) -> Iterator[Control]:
    """Yield every control dict inside a decoded value (iteratively: trees can be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _is_control(item):
                yield item
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def _path_index(tree: list[Any]) -> dict[int, list[Any]]:
    """Flatten a patch's path tree ``[idx, {part: [idx, {...}]}]`` into ``idx -> path``."""
    paths: dict[int, list[Any]] = {}
    stack: list[tuple[list[Any], list[Any]]] = [(tree, [])]
    while stack:
        node, path = stack.pop()
        paths[node[0]] = path
        if len(node) > 1:
            stack.extend((child, [*path, part]) for part, child in node[1].items())
    return paths


def _resolve(root: Control, path: list[Any]) -> tuple[Any, Control]:
    """Walk ``path`` from ``root``; return the object there and the nearest control above it."""
    obj: Any = root
    owner = root
    for part in path:
        obj = obj[part]
        if _is_control(obj):
            owner = obj
    return obj, owner


def _pop(container: Any, key: Any) -> Any:
    if isinstance(container, list):
        return container.pop(key)
    return container.pop(key, None)


def _insert(container: Any, key: Any, value: Any) -> None:
    if isinstance(container, list):
        container.insert(key, value)
    else:
        container[key] = value


def _current(container: Any, key: Any) -> Any:
    if isinstance(container, list):
        return container[key]
    return container.get(key)


class ControlTree:
    """Local mirror of a session's control tree, indexed by control id and by key."""

    def __init__(self) -> None:
        self.root: Control = {"_c": "Page", "_i": PAGE_ID}
        self.by_id: dict[int, Control] = {}
        self.by_key: dict[str, int] = {}
        self.last_values: dict[str, Any] = {}

    def control(self, key: str) -> Control | None:
        """Return the control currently registered under ``key``."""
        control_id = self.by_key.get(key)
        return None if control_id is None else self.by_id.get(control_id)

    def load(self, page: Control) -> list[tuple[str, Any]]:
        """Replace the whole tree with a page snapshot; return ``(key, value)`` changes."""
        self.root = page
        self.by_id.clear()
        self.by_key.clear()
        return self._changes(self._index(page))

    def apply_patch(self, control_id: int, patch: list[Any]) -> list[tuple[str, Any]]:
        """Apply one ``PatchControlBody.patch`` to a control; return ``(key, value)`` changes."""
        root = self.by_id.get(control_id)
        if root is None or len(patch) < 2:
            return []  # the Flutter client ignores patches for unknown controls, too
        paths = _path_index(patch[0])
        touched: list[Control] = []
        for op in patch[1:]:
            touched.extend(self._apply_op(root, paths, op))
        return self._changes(touched)

    def _apply_op(self, root: Control, paths: dict[int, list[Any]], op: list[Any]) -> list[Control]:
        if op[0] == OP_MOVE:
            source, _ = _resolve(root, paths[op[1]])
            target, _ = _resolve(root, paths[op[3]])
            _insert(target, op[4], _pop(source, op[2]))
            return []
        container, owner = _resolve(root, paths[op[1]])
        if op[0] == OP_REMOVE:
            self._unindex(_pop(container, op[2]))
            return [owner]
        if op[0] == OP_REPLACE:
            self._unindex(_current(container, op[2]))
            container[op[2]] = op[3]
        elif op[0] == OP_ADD:
            _insert(container, op[2], op[3])
        else:
            raise FletError(f"unknown patch operation {op!r}")
        return [owner, *self._index(op[3])]

    def _index(self, value: Any) -> list[Control]:
        found = []
        for control in _controls_in(value):
            self.by_id[control["_i"]] = control
            key = _key_of(control)
            if key is not None:
                self.by_key[key] = control["_i"]
                found.append(control)
        return found

    def _unindex(self, value: Any) -> None:
        for control in _controls_in(value):
            control_id = control["_i"]
            if self.by_id.get(control_id) is control:
                del self.by_id[control_id]
            key = _key_of(control)
            if key is not None and self.by_key.get(key) == control_id:
                del self.by_key[key]

    def _changes(self, touched: list[Control]) -> list[tuple[str, Any]]:
        changes = []
        for control in touched:
            key = _key_of(control)
            if key is None or self.by_key.get(key) != control["_i"]:
                continue
            value = control.get("value")
            if self.last_values.get(key, _MISSING) != value:
                self.last_values[key] = value
                changes.append((key, value))
        return changes


class HeadlessSession:
    """One Flet web session driven over the websocket protocol, without a browser."""

    def __init__(self, ws: ClientConnection, route: str) -> None:
        self.session_id: str = ""
        self.route: str = route
        self.closed: bool = False
        self.cookies: dict[str, str] = {}
        """The cookies this session sent, updated with those the server set (like a browser)."""
        self.on_change: ChangeCallback | None = None
        """Called as ``(key, new_value, time.monotonic())`` when a keyed control's value changes."""
        self.on_invoke: InvokeHandler | None = None
        """Answers invoke-method calls as ``(control_id, name, args) -> result``; default None."""
        self.tree = ControlTree()
        self._ws = ws
        self._error: BaseException | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        route: str = "/",
        timeout: float = 10.0,
        user_agent: str | None = None,
        open_timeout: float | None = None,
        session_id: str | None = None,
        cookies: Mapping[str, str] | None = None,
    ) -> HeadlessSession:
        """Open a session on the app at ``url`` (its http(s) base URL) and register.

        Returns once the register response arrived and the page tree is known. Controls
        that ``main()`` adds arrive afterwards: use :meth:`wait_for` before reading them.
        Pass ``session_id`` to re-attach to a disconnected server session.

        ``cookies`` go with the websocket handshake, as a browser sends its cookies with
        every request; the session's :attr:`cookies` add those the server set in its
        handshake response (a load balancer's affinity cookie, say). Come back like a
        reconnecting browser with ``connect(url, cookies=earlier.cookies)``.
        """
        cookies = dict(cookies or {})
        ws = await cls._open(
            url, timeout if open_timeout is None else open_timeout, user_agent, cookies
        )
        session = cls(ws, route)
        session.cookies = cookies | _cookies_set_by(ws)
        session._reader = asyncio.create_task(session._read_loop())
        body = {"session_id": session_id, "page_name": urlsplit(url).path.strip("/")}
        try:
            await session._send(REGISTER_CLIENT, {**body, "page": _page_props(route)})
            await session._wait(lambda s: bool(s.session_id), timeout, "register response")
        except BaseException:
            await session.close()
            raise
        return session

    @staticmethod
    async def _open(
        url: str, open_timeout: float, user_agent: str | None, cookies: Mapping[str, str]
    ) -> ClientConnection:
        try:
            return await ws_connect(
                ws_url(url),
                open_timeout=open_timeout,
                user_agent_header=user_agent or DEFAULT_USER_AGENT,
                additional_headers=_cookie_header(cookies),
                # Per-connection deflate state costs memory and CPU; load tests open thousands.
                compression=None,
                proxy=None,
                max_size=MAX_FRAME_BYTES,
                close_timeout=5,
            )
        except (OSError, WebSocketException) as exc:
            raise FletError(f"cannot open websocket to {ws_url(url)}: {exc}") from exc

    def control(self, key: str) -> dict[str, Any] | None:
        """Return the current props of the control with ``key`` (live dict; do not mutate)."""
        return self.tree.control(key)

    def value(self, key: str) -> Any:
        """Return the ``value`` prop of the control with ``key``, or None."""
        control = self.tree.control(key)
        return None if control is None else control.get("value")

    def int_value(self, key: str) -> int | None:
        """Return the first integer found in ``str(value)`` of the control, or None."""
        value = self.value(key)
        match = None if value is None else _INT_RE.search(str(value))
        return None if match is None else int(match.group())

    def keyed_values(self) -> dict[str, Any]:
        """Return ``{key: value}`` for every keyed control currently in the tree."""
        return {key: self.value(key) for key in self.tree.by_key}

    async def click(self, key: str) -> None:
        """Send a ``click`` event for the control with ``key``; KeyError if there is none."""
        await self.trigger(key, "click")

    async def trigger(self, key: str, name: str, data: Any = None) -> None:
        """Send an arbitrary control event (``name`` without ``on_``) to the keyed control."""
        control_id = self.tree.by_key.get(key)
        if control_id is None:
            raise KeyError(f"no control with key {key!r}; keys: {sorted(self.tree.by_key)}")
        await self._send(CONTROL_EVENT, {"target": control_id, "name": name, "data": data})

    async def type_text(self, key: str, text: str, *, submit: bool = False) -> None:
        """Type into the keyed text field like the browser: set its ``value`` on the
        server, fire ``change``, and with ``submit`` also ``submit`` (Enter)."""
        control_id = self.tree.by_key.get(key)
        if control_id is None:
            raise KeyError(f"no control with key {key!r}; keys: {sorted(self.tree.by_key)}")
        control = self.tree.by_id[control_id]
        control["value"] = text
        await self._send(UPDATE_CONTROL_PROPS, {"id": control_id, "props": {"value": text}})
        await self._send(CONTROL_EVENT, {"target": control_id, "name": "change", "data": text})
        if submit:
            await self._send(CONTROL_EVENT, {"target": control_id, "name": "submit", "data": None})

    async def change_route(self, route: str) -> None:
        """Navigate like the browser: update ``page.route``, then fire ``route_change``."""
        page_id = self.tree.root.get("_i", PAGE_ID)
        self.route = route
        self.tree.root["route"] = route
        await self._send(UPDATE_CONTROL_PROPS, {"id": page_id, "props": {"route": route}})
        event = {"target": page_id, "name": "route_change", "data": {"route": route}}
        await self._send(CONTROL_EVENT, event)

    async def wait_for(
        self,
        predicate: Callable[[HeadlessSession], bool],
        timeout: float,
    ) -> None:
        """Return as soon as ``predicate(self)`` holds after applying server messages.

        Raises TimeoutError (listing the keyed values) if it does not hold within
        ``timeout`` seconds, and FletError (SessionCrashed on a crash) if the session closes.
        """
        name = getattr(predicate, "__name__", repr(predicate))
        await self._wait(predicate, timeout, f"condition {name}")

    async def close(self) -> None:
        """Close the websocket and stop the reader task; safe to call repeatedly."""
        self._fail(FletError("session closed by the client"))
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            reader.cancel()
            await asyncio.wait({reader})
        await self._ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _wait(
        self, predicate: Callable[[HeadlessSession], bool], seconds: float, what: str
    ) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not predicate(self):
                    if self.closed:
                        self._raise_closed()
                    await self._next_update()
        except TimeoutError:
            raise TimeoutError(self._timeout_message(what, seconds)) from None

    def _timeout_message(self, what: str, seconds: float) -> str:
        items = sorted(self.keyed_values().items())
        values = ", ".join(f"{k}={v!r:.60}" for k, v in items if v is not None)
        return (
            f"{what} not met within {seconds}s on session {self.session_id or '?'} "
            f"(route {self.route!r}); keyed values: {values or 'none'}"
        )

    async def _next_update(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        try:
            await future
        finally:
            self._waiters.discard(future)

    def _wake(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()

    def _fail(self, error: BaseException) -> None:
        if self.closed:
            return  # keep the first cause: it explains why the session ended
        self.closed = True
        self._error = error
        self._wake()

    def _raise_closed(self) -> NoReturn:
        cause = self._error
        if isinstance(cause, SessionCrashed):
            raise SessionCrashed(cause.message) from cause
        reason = cause if isinstance(cause, FletError) else repr(cause)
        raise FletError(f"session {self.session_id or '?'} is closed: {reason}") from cause

    async def _send(self, action: int, body: dict[str, Any]) -> None:
        if self.closed:
            self._raise_closed()
        try:
            await self._ws.send(bytes([PROTOCOL_FRAME]) + msgpack.packb([action, body]))
        except ConnectionClosed as exc:
            self._fail(exc)
            self._raise_closed()

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                await self._on_frame(frame)
        except Exception as exc:  # anything that stops reading must reach the waiters
            self._fail(exc)
        else:
            self._fail(FletError("server closed the websocket"))
        await self._ws.close()

    async def _on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            raise FletError(f"unexpected text frame: {frame[:80]!r}")
        if not frame or frame[0] != PROTOCOL_FRAME:
            return  # data-channel frames (0x01) carry no UI state
        action, body = msgpack.unpackb(frame[1:], strict_map_key=False, ext_hook=_decode_ext)
        await self._dispatch(action, body)
        self._wake()

    async def _dispatch(self, action: int, body: dict[str, Any]) -> None:
        if action == PATCH_CONTROL:
            self._report(self.tree.apply_patch(body["id"], body["patch"]))
        elif action == INVOKE_METHOD:
            await self._answer_invoke(body)
        elif action == REGISTER_CLIENT:
            self._on_registered(body)
        elif action == SESSION_CRASHED:
            raise SessionCrashed(str(body.get("message")))

    def _on_registered(self, body: dict[str, Any]) -> None:
        if body.get("error"):
            raise FletError(f"registration failed: {body['error']}")
        self._report(self.tree.load(body["page_patch"]))
        self.session_id = str(body["session_id"])

    def _report(self, changes: list[tuple[str, Any]]) -> None:
        if self.on_change is None or not changes:
            return
        now = time.monotonic()
        for key, value in changes:
            self.on_change(key, value, now)

    async def _answer_invoke(self, body: dict[str, Any]) -> None:
        control_id, name, args = body["control_id"], body["name"], body.get("args")
        result, error = self._invoke(control_id, name, args)
        answer = {"control_id": control_id, "call_id": body["call_id"]}
        await self._send(INVOKE_METHOD, {**answer, "result": result, "error": error})
        # The browser navigates on push_route, and navigating fires route_change.
        if name == "push_route" and error is None and isinstance(args, dict):
            await self.change_route(str(args.get("route", "/")))

    def _invoke(self, control_id: int, name: str, args: Any) -> tuple[Any, str | None]:
        if self.on_invoke is None:
            return None, None
        try:
            return self.on_invoke(control_id, name, args), None
        except Exception as exc:  # reported to the server like a failing Dart method
            return None, f"{type(exc).__name__}: {exc}"
