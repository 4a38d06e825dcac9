import asyncio
from typing import Any

import pytest

from counter_service.flet.websockets import (
    CountWebsockets,
    Message,
    WebsocketLife,
    current_websocket,
)


class Counter:
    def __init__(self) -> None:
        self.live = 0
        self.events: list[str] = []
        self.live_inside_app: list[int] = []

    def connected(self) -> None:
        self.live += 1
        self.events.append("+")

    def disconnected(self) -> None:
        self.live -= 1
        self.events.append("-")

    def app(self, *, accept: bool, fail: bool = False) -> Any:
        async def app(_scope: Any, _receive: Any, send: Any) -> None:
            if accept:
                await send({"type": "websocket.accept"})
            self.live_inside_app.append(self.live)
            if fail:
                raise RuntimeError("handler failed")

        return app


@pytest.fixture
def counter() -> Counter:
    return Counter()


async def receive() -> Message:
    return {"type": "websocket.receive"}


async def send(_message: Message) -> None:
    return None


async def call(counter: Counter, scope_type: str, **app_options: bool) -> None:
    middleware = CountWebsockets(counter.app(**app_options), counter)
    await middleware({"type": scope_type}, receive, send)


async def test_an_accepted_websocket_is_live_until_the_app_returns(counter: Counter) -> None:
    await call(counter, "websocket", accept=True)
    assert counter.live_inside_app == [1]
    assert counter.events == ["+", "-"]


async def test_a_failing_handler_still_counts_its_disconnect(counter: Counter) -> None:
    with pytest.raises(RuntimeError):
        await call(counter, "websocket", accept=True, fail=True)
    assert counter.live == 0
    assert counter.events == ["+", "-"]


async def test_refused_websockets_and_http_requests_are_not_counted(counter: Counter) -> None:
    await call(counter, "websocket", accept=False)
    await call(counter, "http", accept=False)
    assert counter.events == []


class Hanging:
    """An app that accepts, reads until the client leaves, then never returns (Flet's
    handler when a client leaves before registering)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def __call__(self, _scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def client_leaving_after(messages: int) -> Any:
    count = 0

    async def receive() -> Message:
        nonlocal count
        count += 1
        await asyncio.sleep(0)
        return {"type": "websocket.receive" if count <= messages else "websocket.disconnect"}

    return receive


async def test_a_client_that_left_is_not_counted_even_if_the_handler_hangs(
    counter: Counter,
) -> None:
    app = Hanging()
    middleware = CountWebsockets(app, counter, grace_s=0.05)
    await middleware({"type": "websocket"}, client_leaving_after(2), send)
    assert counter.events == ["+", "-"]
    assert app.cancelled


async def test_close_callbacks_run_after_the_handling_and_see_the_context(
    counter: Counter,
) -> None:
    seen: list[str] = []

    async def app(_scope: Any, receive: Any, send_: Any) -> None:
        await send_({"type": "websocket.accept"})

        async def page_main() -> None:  # Flet runs main() in a task of its own
            life = current_websocket()
            assert life is not None

            async def closed() -> None:
                seen.append(f"closed, live={counter.live}")

            await life.on_close(closed)

        await asyncio.create_task(page_main())
        await receive()

    await CountWebsockets(app, counter)({"type": "websocket"}, client_leaving_after(0), send)
    assert seen == ["closed, live=0"]
    assert current_websocket() is None


async def test_a_callback_registered_after_the_close_runs_at_once() -> None:
    life = WebsocketLife()
    await life.close()
    ran: list[bool] = []

    async def callback() -> None:
        ran.append(True)

    await life.on_close(callback)
    assert ran == [True]


async def test_handler_errors_after_the_client_left_are_not_raised(counter: Counter) -> None:
    async def app(_scope: Any, receive: Any, send_: Any) -> None:
        await send_({"type": "websocket.accept"})
        await receive()
        raise ConnectionError("sending to a closed socket")

    await CountWebsockets(app, counter)({"type": "websocket"}, client_leaving_after(0), send)
    assert counter.events == ["+", "-"]
