"""The page of the pubsub scenario: one Text that shows the last broadcast number, and a
button that broadcasts the next one on a topic. Served two ways, same page:

- `flet_app()`: Flet's own app, whose in-process hub reaches the sessions of one process;
- `service_app()`: `counter_service.app`, whose hub reaches every process on one Redis.

    uvicorn --factory benchmarks.apps.pubsub:flet_app
"""

from __future__ import annotations

from typing import Any

import flet as ft

TOPIC = "bench"
SHOWN = "clicks"  # the key the benchmark clients read
BUTTON = "increment"


async def main(page: ft.Page) -> None:
    shown = ft.Text(key=SHOWN, value="0")

    async def on_message(_topic: str, message: dict[str, Any]) -> None:
        shown.value = str(message["n"])
        shown.update()

    async def send(_event: Any) -> None:
        ft.context.disable_auto_update()  # type: ignore[no-untyped-call]  # flet leaves it unannotated
        page.pubsub.send_all_on_topic(TOPIC, {"n": int(str(shown.value)) + 1})

    page.pubsub.subscribe_topic(TOPIC, on_message)
    page.add(shown, ft.Button(key=BUTTON, content="send", on_click=send))


def flet_app() -> Any:
    """Flet's app as its docs show it (`no_cdn`: no internet here)."""
    import flet_web.fastapi as flet_fastapi

    return flet_fastapi.app(main, no_cdn=True)


def service_app() -> Any:
    """The same page on `counter_service.app` ($REDIS_URL)."""
    import counter_service

    return counter_service.app(main)
