"""Baseline (c): the naive Flet + Redis design.

Every session opens its own Redis client and its own subscription (redis.asyncio),
increments with INCR and then PUBLISHes the new value (two round trips, not atomic
together: publishes of two increments can arrive in either order), and a listener task
per session sets the Text and calls `page.update()` for every message.

It is given the courtesy of closing its connections when the browser disconnects.
Run: `python -m benchmarks.baselines.naive_flet --port P --redis-url redis://...`
"""

from __future__ import annotations

import asyncio
from typing import Any

import flet as ft
from redis.asyncio import Redis

from benchmarks.baselines._serve import parser, serve_flet

PREFIX = "naive:"


def key(name: str) -> str:
    """The Redis key, and the channel, of counter `name`."""
    return PREFIX + name


def build_main(redis_url: str) -> Any:
    async def main(page: ft.Page) -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        pubsub = redis.pubsub()
        await pubsub.subscribe(key("views"), key("clicks"))
        views = await redis.incr(key("views"))
        await redis.publish(key("views"), views)
        clicks = int(await redis.get(key("clicks")) or 0)
        texts = {
            key("views"): ft.Text(str(views), key="views", size=24),
            key("clicks"): ft.Text(str(clicks), key="clicks", size=24),
        }

        async def bump(name: str) -> None:
            value = await redis.incr(key(name))
            await redis.publish(key(name), value)

        async def on_click(_e: Any) -> None:
            await bump("clicks")

        async def on_route_change(_e: Any) -> None:
            await bump("views")

        async def listen() -> None:
            async for message in pubsub.listen():
                text = texts.get(message["channel"])
                if message["type"] == "message" and text is not None:
                    text.value = message["data"]
                    page.update()

        listener = asyncio.create_task(listen())

        async def on_disconnect(_e: Any) -> None:
            listener.cancel()
            await pubsub.aclose()
            await redis.aclose()

        page.on_route_change = on_route_change
        page.on_disconnect = on_disconnect
        button = ft.Button(key="increment", content="Add a click", on_click=on_click)
        page.add(ft.Column([*texts.values(), button]))

    return main


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--redis-url", required=True)
    ns = args.parse_args()
    serve_flet(build_main(ns.redis_url), ns.host, ns.port)


if __name__ == "__main__":
    main()
