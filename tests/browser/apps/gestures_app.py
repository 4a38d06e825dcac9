"""A Flet app for what a browser streams while one gesture lasts: typing into a TextField
(`change` each keystroke), scrolling a long list (`scroll`), and moving the pointer over a
pad (`hover`). Each Text says what the server got: `typed` the field's value, `scrolls`
and `hovers` how many events, `peak` the most events of any kind within one second.
Run with: uvicorn tests.browser.apps.gestures_app:app
"""

from __future__ import annotations

import time
from collections import deque

import flet as ft

import counter_service


async def main(page: ft.Page) -> None:
    page.title = "Gestures"
    recent: deque[float] = deque()
    counts = {"scrolls": 0, "hovers": 0, "peak": 0}
    shown = {name: ft.Text(f"{name}: 0", key=name) for name in counts}
    typed = ft.Text("typed: ", key="typed")

    def seen(name: str | None) -> None:
        now = time.monotonic()
        recent.append(now)
        while recent[0] < now - 1.0:
            recent.popleft()
        if name is not None:
            counts[name] += 1
        counts["peak"] = max(counts["peak"], len(recent))
        for key, text in shown.items():
            text.value = f"{key}: {counts[key]}"
            text.update()

    async def on_change(event: ft.Event[ft.TextField]) -> None:
        typed.value = f"typed: {event.control.value}"
        typed.update()
        seen(None)

    async def on_scroll(_event: ft.OnScrollEvent) -> None:
        seen("scrolls")

    async def on_hover(_event: ft.Event[ft.GestureDetector]) -> None:
        seen("hovers")

    field = ft.TextField(label="Type here", on_change=on_change, key="field")
    items = ft.ListView(
        [ft.Text(f"line {i}") for i in range(400)],
        height=200,
        on_scroll=on_scroll,
        scroll_interval=0,
        key="list",
    )
    pad = ft.GestureDetector(
        content=ft.Container(width=300, height=120, bgcolor=ft.Colors.BLUE_100),
        on_hover=on_hover,
        hover_interval=0,
    )
    page.add(field, typed, *shown.values(), pad, items)


app = counter_service.app(main)
