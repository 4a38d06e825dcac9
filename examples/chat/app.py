"""A chat that runs on any number of worker processes: Flet's own `page.pubsub` plus a
live count of messages sent, with `counter_service.app` in place of Flet's app.

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.chat.app:app --port 8551
    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.chat.app:app --port 8552

Open both ports: a message sent on one shows on the other, in the same order.
"""

from __future__ import annotations

from typing import Any

import flet as ft

import counter_service

TOPIC = "chat"
SENT = "chat:messages"  # a counter: messages sent by everyone, ever


async def main(page: ft.Page) -> None:
    page.title = "Chat"
    counters = counter_service.counters(page)
    messages = ft.Column(key="messages", scroll=ft.ScrollMode.AUTO, expand=True)
    sent = ft.Text(key="sent")
    name = ft.TextField(key="name", label="Your name", value="guest", width=160)

    def show(line: str) -> None:
        messages.controls.append(ft.Text(line))
        messages.update()

    async def on_message(_topic: str, message: dict[str, Any]) -> None:
        show(f"{message['user']}: {message['text']}")

    def on_missed() -> None:
        show("(the connection to the chat dropped: messages may be missing above)")

    async def send(_event: Any) -> None:
        if not text.value:
            return
        page.pubsub.send_all_on_topic(TOPIC, {"user": name.value, "text": text.value})
        text.value = ""
        text.update()
        await counters.incr(SENT)

    text = ft.TextField(key="text", label="Message", expand=True, on_submit=send)
    page.pubsub.subscribe_topic(TOPIC, on_message)
    counter_service.on_missed_messages(page, on_missed)
    counters.show({SENT: sent})
    page.add(
        ft.Row([ft.Text("Messages sent:"), sent]),
        messages,
        ft.Row([name, text, ft.Button("Send", key="send", on_click=send)]),
    )


app = counter_service.app(main)
