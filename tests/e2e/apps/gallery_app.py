"""A Flet app whose one click sends a burst far over the send-queue bound to its client.

The button `load` adds `IMAGES` pictures of `IMAGE_KB` KB each to a row, calling
`row.update()` after each one as a gallery that shows pictures as they are ready does:
the handler never yields, so every frame is queued before the first one is sent. The
Text `shown` says how many pictures the page holds.
Run with: uvicorn tests.e2e.apps.gallery_app:app
"""

from __future__ import annotations

import os

import flet as ft

import counter_service

IMAGES = 20
IMAGE_KB = 250
PICTURE = os.urandom(IMAGE_KB * 1024)


async def main(page: ft.Page) -> None:
    row = ft.Row(wrap=True)
    shown = ft.Text(key="shown", value="0")

    async def load(_event: ft.Event[ft.Button]) -> None:
        for i in range(IMAGES):
            row.controls.append(ft.Image(src=PICTURE[i:], width=50, height=50))
            row.update()
        shown.value = str(len(row.controls))
        shown.update()

    page.add(shown, ft.Button(key="load", content="load", on_click=load), row)


app = counter_service.app(main)
