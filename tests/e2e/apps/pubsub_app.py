"""A Flet app that drives `page.pubsub` and counters from a test, over two workers.

The button `cmd` runs the command in its click event's data (JSON); each session shows
what it received in the Text `log` (a JSON list), the last refusal in `error`, and how
many commands it has run in `done` (so a test knows a subscription is in place). Each
counter of `COUNTERS` shows live in a Text keyed by its name; `incr` adds to one.
`subscribe_topic_plain` subscribes a plain (not async) handler that works about a
millisecond, as Flet runs in its thread pool; `dump_plain` shows what it got in `plain`.
Run with: uvicorn tests.e2e.apps.pubsub_app:app (REDIS_URL set).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import flet as ft

import counter_service

COUNTERS = tuple(f"c{i}" for i in range(8))


async def main(page: ft.Page) -> None:
    received: list[Any] = []
    log = ft.Text(key="log", value="[]")
    plain_received: list[Any] = []
    plain = ft.Text(key="plain", value="[]")
    error = ft.Text(key="error", value="")
    done = ft.Text(key="done", value="0")
    pubsub = page.pubsub

    def record(entry: Any) -> None:
        received.append(entry)
        log.value = json.dumps(received)
        log.update()

    async def on_all(message: Any) -> None:
        record(["*", message])

    async def on_topic(topic: str, message: Any) -> None:
        record([topic, message])

    def on_topic_plain(topic: str, message: Any) -> None:
        time.sleep(random.random() * 0.002)  # some work, in Flet's thread pool
        plain_received.append([topic, message])

    def dump_plain() -> None:
        plain.value = json.dumps(plain_received)
        plain.update()

    def on_missed() -> None:
        record(["missed"])

    commands: dict[str, Any] = {
        "send_all": lambda c: pubsub.send_all(c["message"]),
        "send_all_on_topic": lambda c: pubsub.send_all_on_topic(c["topic"], c["message"]),
        "send_others": lambda c: pubsub.send_others(c["message"]),
        "send_others_on_topic": lambda c: pubsub.send_others_on_topic(c["topic"], c["message"]),
        "send_many": lambda c: [pubsub.send_all_on_topic(c["topic"], m) for m in c["messages"]],
        "send_set": lambda c: pubsub.send_all({"a set": {1, 2}}),
        "send_big": lambda c: pubsub.send_all("x" * c["size"]),
        "subscribe": lambda c: pubsub.subscribe(on_all),
        "subscribe_topic": lambda c: pubsub.subscribe_topic(c["topic"], on_topic),
        "subscribe_topic_plain": lambda c: pubsub.subscribe_topic(c["topic"], on_topic_plain),
        "dump_plain": lambda c: dump_plain(),
        "unsubscribe": lambda c: pubsub.unsubscribe(),
        "unsubscribe_topic": lambda c: pubsub.unsubscribe_topic(c["topic"]),
        "unsubscribe_all": lambda c: pubsub.unsubscribe_all(),
        "incr": lambda c: counters.incr(c["name"]),
    }

    async def run(event: ft.Event[ft.Button]) -> None:
        command = json.loads(str(event.data))
        try:
            result = commands[command["op"]](command)
            if hasattr(result, "__await__"):
                await result
        except Exception as exc:
            error.value = f"{type(exc).__name__}: {exc}"
            error.update()
        done.value = str(int(str(done.value)) + 1)
        done.update()

    pubsub.subscribe(on_all)
    counter_service.on_missed_messages(page, on_missed)
    counters = counter_service.counters(page)
    numbers = {name: ft.Text(key=name) for name in COUNTERS}
    counters.show(numbers)
    page.add(
        *numbers.values(),
        ft.Text(key="session", value=page.session.id),
        ft.Button(key="cmd", content="cmd", on_click=run),
        log,
        plain,
        error,
        done,
    )


app = counter_service.app(main)
