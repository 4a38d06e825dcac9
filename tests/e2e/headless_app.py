"""Tiny Flet app served by uvicorn for the headless-client tests (see test_headless.py).

Run with: ``uvicorn --app-dir tests/e2e headless_app:app``.
"""

from __future__ import annotations

import flet as ft
import flet_web.fastapi as flet_fastapi


async def main(page: ft.Page) -> None:
    """Build one session's UI; every session gets its own counter."""
    count = 0
    counter = ft.Text(f"count {count}", key="counter")
    route = ft.Text(page.route, key="route")
    pushed = ft.Text("no", key="pushed")
    items = ft.Column([ft.Text("a", key="item-a")], key="items")

    async def increment(e: ft.Event[ft.Button]) -> None:
        nonlocal count
        count += 1
        counter.value = f"count {count}"
        counter.update()

    async def route_changed(e: ft.RouteChangeEvent) -> None:
        route.value = e.route
        route.update()

    async def push(e: ft.Event[ft.Button]) -> None:
        # push_route is an invoke-method call: it only returns once the client answers.
        await page.push_route("/pushed")
        pushed.value = "yes"
        pushed.update()

    async def add_item(e: ft.Event[ft.Button]) -> None:
        name = chr(ord("a") + len(items.controls))
        items.controls.append(ft.Text(name, key=f"item-{name}"))
        items.update()

    async def rotate_items(e: ft.Event[ft.Button]) -> None:
        items.controls.insert(0, items.controls.pop())
        items.update()

    async def remove_first_item(e: ft.Event[ft.Button]) -> None:
        items.controls.pop(0)
        items.update()

    async def boom(e: ft.Event[ft.Button]) -> None:
        raise RuntimeError("boom requested")

    page.on_route_change = route_changed
    page.add(
        counter,
        ft.Button("inc", key="inc", on_click=increment),
        route,
        ft.Button("push", key="push", on_click=push),
        pushed,
        items,
        ft.Button("add", key="add", on_click=add_item),
        ft.Button("rotate", key="rotate", on_click=rotate_items),
        ft.Button("remove", key="remove", on_click=remove_first_item),
        ft.Button("boom", key="boom", on_click=boom),
    )


app = flet_fastapi.app(main, no_cdn=True)
