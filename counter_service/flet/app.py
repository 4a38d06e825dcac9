"""`counter_service.app(main)`: a Flet app whose sessions on every process share
counters and `page.pubsub`, with health, readiness and metrics routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import flet as ft
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from counter_service.flet.bridge import FletBridge
from counter_service.flet.internals import flet_asgi_app, flet_sessions
from counter_service.flet.websockets import CountWebsockets
from counter_service.loop_lag import LoopLag
from counter_service.metrics import CONTENT_TYPE
from counter_service.service import CounterService
from counter_service.settings import Settings

logger = logging.getLogger(__name__)


def app(
    main: Callable[[ft.Page], Any],
    *,
    redis_url: str | None = None,
    namespace: str | None = None,
    settings: Settings | None = None,
    **flet_options: Any,
) -> FastAPI:
    """An ASGI app serving `main` like `flet_web.fastapi.app(main, **flet_options)`,
    in which `page.pubsub` reaches every session of every process on the same Redis
    and namespace, and `counter_service.counters(page)` counts and shows live counters.

    `redis_url` None means `$REDIS_URL`, else an embedded in-process store (one
    process only); `settings` default to the environment (`Settings.from_env()`).
    Run it with uvicorn on as many processes as you like; behind a load balancer, keep
    each browser on one process (a Flet session lives in one process)."""
    settings = (settings or Settings.from_env()).with_overrides(
        redis_url=redis_url, namespace=namespace
    )
    log_store(settings)
    service = CounterService(settings)
    bridge = FletBridge(service)
    session_main = bridge.wrap(main)
    lag = LoopLag(service.metrics.loop_lag)
    service.metrics.count_pages(lambda: len(bridge.fanout))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with flet_sessions(), service, bridge.running(session_main):
            await lag.start()
            try:
                yield
            finally:
                await lag.stop()

    outer = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    outer.state.service = service
    outer.state.bridge = bridge
    add_health_routes(outer, service)
    add_metrics_routes(outer, bridge, lag)
    # Mounted last: Flet's app ends in a catch-all static mount.
    outer.mount("/", CountWebsockets(flet_asgi_app(session_main, **flet_options), service.presence))
    return outer


def add_health_routes(app: FastAPI, service: CounterService) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "worker": service.worker_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        reachable = await service.ping()
        down = [task.name for task in service.tasks if not task.up]
        ready = reachable and service.subscriber.subscribed and not down
        body = {
            "ready": ready,
            "redis_reachable": reachable,
            "relay_subscribed": service.subscriber.subscribed,
            "tasks_down": down,
            "worker": service.worker_id,
        }
        return JSONResponse(body, status_code=200 if ready else 503)


def add_metrics_routes(app: FastAPI, bridge: FletBridge, lag: LoopLag) -> None:
    service = bridge.service

    # Both are async on purpose: the stats they read change on the event loop only.
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/metrics.json")
    async def metrics_json() -> dict[str, object]:
        return {
            "worker": service.worker_id,
            "ready": service.ready,
            "event_loop_lag_ms": lag.summary_ms(),
            "event_loop_lag_histogram": lag.histogram(),
            "live_connections": service.presence.live,
            "pages": len(bridge.fanout),
            "relay": asdict(service.counters.stats),
            "subscriber": asdict(service.subscriber.stats),
            "messages": {
                "published": service.publisher.published,
                "invalid": service.invalid_messages,
            },
        }


def log_store(settings: Settings) -> None:
    if settings.embedded:
        logger.warning(
            "Using the embedded in-process Redis (fakeredis): counts live in this process only"
            " and are lost when it stops. Point it at a real Redis with --redis-url"
            " redis://HOST:6379/0 or REDIS_URL=redis://HOST:6379/0."
        )
    else:
        logger.info("Using Redis at %s", settings.redacted_url)
