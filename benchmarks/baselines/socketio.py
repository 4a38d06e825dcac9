"""Baseline (d): python-socketio's AsyncServer with AsyncRedisManager, under uvicorn.

Events: the client emits `click`; the server INCRs `clicks` and emits `clicks`
`{"value": n}` to everybody (the manager relays it to the other processes through
Redis pub/sub). On connect the server INCRs `views` and emits `views` and `clicks` to
the new client only.

Run: `python -m benchmarks.baselines.socketio --port P --redis-url redis://...`
"""

from __future__ import annotations

from typing import Any

import socketio  # type: ignore[import-untyped, unused-ignore]
import uvicorn
from redis.asyncio import Redis

from benchmarks.baselines._serve import parser

PREFIX = "sio:"
CHANNEL = "sio:socketio"


def create_app(redis_url: str) -> Any:
    manager = socketio.AsyncRedisManager(redis_url, channel=CHANNEL)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"])
    store = Redis.from_url(redis_url)

    async def connect(sid: str, _environ: dict[str, Any]) -> None:
        views = await store.incr(PREFIX + "views")
        clicks = int(await store.get(PREFIX + "clicks") or 0)
        await sio.emit("views", {"value": views}, to=sid)
        await sio.emit("clicks", {"value": clicks}, to=sid)

    async def click(_sid: str, _data: Any = None) -> None:
        value = await store.incr(PREFIX + "clicks")
        await sio.emit("clicks", {"value": value})

    sio.on("connect", connect)
    sio.on("click", click)
    return socketio.ASGIApp(sio)


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--redis-url", required=True)
    ns = args.parse_args()
    uvicorn.run(create_app(ns.redis_url), host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
