from typing import Any

import pytest

from counter_service.asgi import CountWebsockets, Message


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
