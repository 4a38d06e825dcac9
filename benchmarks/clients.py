"""One client interface for every variant: a Flet headless session or a Socket.IO client.

A client keeps the integer last shown under each key (`views`, `clicks`, `online`),
counts how often a shown value went down, and tells listeners of each change with
its `time.monotonic()` arrival time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import socketio  # type: ignore[import-untyped, unused-ignore]

from benchmarks.stats import parse_int
from counter_service.devtools.headless import HeadlessSession
from ui.contract import BUTTON, CLICKS, COUNTERS, VIEWS

Listener = Callable[["Client", str, int, float], None]
KEYS = COUNTERS


class Client:
    """What the scenarios drive: `click()`, the values shown, and change notifications."""

    def __init__(self, server: int) -> None:
        self.server = server
        """Index of the server process this client is connected to."""
        self.values: dict[str, int] = {}
        self.decreases: dict[str, int] = {}
        self.listener: Listener | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    def shown(self, key: str) -> int | None:
        return self.values.get(key)

    def observe(self, key: str, value: int, at: float) -> None:
        """Record that `key` now shows `value` (received at monotonic time `at`)."""
        previous = self.values.get(key)
        if previous is not None and value < previous:
            self.decreases[key] = self.decreases.get(key, 0) + 1
        self.values[key] = value
        if self.listener is not None:
            self.listener(self, key, value, at)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_until(self, predicate: Callable[[Client], bool], timeout: float) -> bool:
        """Wait until `predicate(self)` holds; False if it did not within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.add(waiter)
                    await waiter
        except TimeoutError:
            return False
        return True

    async def click(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class FletClient(Client):
    """A headless Flet session; the page's keyed Texts are the shown values."""

    def __init__(self, server: int, session: HeadlessSession) -> None:
        super().__init__(server)
        self.session = session
        session.on_change = self._on_change
        for key in KEYS:
            value = session.int_value(key)
            if value is not None:
                self.values[key] = value

    @classmethod
    async def open(cls, server: int, url: str, timeout: float) -> FletClient:
        session = await HeadlessSession.connect(url, timeout=timeout)
        client = cls(server, session)
        try:
            ready = await client.wait_until(lambda c: CLICKS in c.values, timeout)
            if not ready:
                raise TimeoutError(f"no clicks counter shown within {timeout}s on {url}")
        except BaseException:
            await session.close()
            raise
        return client

    def _on_change(self, key: str, value: Any, at: float) -> None:
        number = parse_int(value)
        if key in KEYS and number is not None:
            self.observe(key, number, at)

    async def click(self) -> None:
        await self.session.click(BUTTON)

    async def close(self) -> None:
        await self.session.close()


class SocketIOClient(Client):
    """A python-socketio AsyncClient on the websocket transport only."""

    def __init__(self, server: int, http: aiohttp.ClientSession) -> None:
        super().__init__(server)
        self.sio = socketio.AsyncClient(reconnection=False, http_session=http)
        for key in (VIEWS, CLICKS):
            self.sio.on(key, self._handler(key))

    def _handler(self, key: str) -> Callable[[Any], None]:
        def handle(data: Any) -> None:
            number = parse_int(data.get("value") if isinstance(data, dict) else None)
            if number is not None:
                self.observe(key, number, time.monotonic())

        return handle

    @classmethod
    async def open(
        cls, server: int, url: str, timeout: float, http: aiohttp.ClientSession
    ) -> SocketIOClient:
        client = cls(server, http)
        try:
            await client.sio.connect(url, transports=["websocket"], wait_timeout=timeout)
            if not await client.wait_until(lambda c: CLICKS in c.values, timeout):
                raise TimeoutError(f"no clicks value received within {timeout}s from {url}")
        except BaseException:
            await client.close()
            raise
        return client

    async def click(self) -> None:
        await self.sio.emit("click")

    async def close(self) -> None:
        await self.sio.disconnect()
