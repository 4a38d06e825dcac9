"""`counter_service.app(main)`: a Flet app whose sessions on every process share
counters and `page.pubsub`, with health, readiness and metrics routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import flet as ft
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from counter_service.flet.bridge import FletBridge
from counter_service.flet.internals import (
    detached,
    flet_asgi_app,
    flet_sessions,
    session_count,
    session_timeout,
)
from counter_service.flet.websockets import Limits, WebsocketGuard
from counter_service.loop_lag import LoopLag
from counter_service.metrics import CONTENT_TYPE
from counter_service.redis.probe import diagnose
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
    each browser on one process (a Flet session lives in one process). A session whose
    browser left is kept `settings.session_timeout_s` (unless `session_timeout_seconds`
    is given, or Flet's `FLET_SESSION_TIMEOUT` is set)."""
    settings = (settings or Settings.from_env()).with_overrides(
        redis_url=redis_url, namespace=namespace
    )
    log_store(settings)
    service = CounterService(settings)
    flet_options.setdefault("session_timeout_seconds", settings.session_timeout_s)
    bridge = FletBridge(service, session_timeout(flet_options["session_timeout_seconds"]))
    session_main = bridge.wrap(main)
    lag = LoopLag(service.metrics.loop_lag, threshold_s=settings.lag_threshold_s)
    service.metrics.count_pages(lambda: len(bridge.fanout), session_count)
    guard = WebsocketGuard(
        flet_asgi_app(session_main, **flet_options),
        service.presence,
        limits_of(settings),
        before_reattach=lambda session_id: detached(session_id, REATTACH_WAIT_S),
    )
    service.metrics.watch_websockets(guard.stats)

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
    outer.state.guard = guard
    add_health_routes(outer, service, lag)
    add_metrics_routes(outer, bridge, lag, guard)
    # Mounted last: Flet's app ends in a catch-all static mount.
    outer.mount("/", guard)
    return outer


def limits_of(settings: Settings) -> Limits:
    """What each websocket client may do, from the settings."""
    return Limits(
        max_frame_bytes=settings.max_frame_bytes,
        register_timeout_s=settings.register_timeout_s,
        send_timeout_s=settings.send_timeout_s,
        events_per_s=settings.events_per_s,
        event_burst=settings.event_burst,
    )


# How long a reconnecting browser waits for its old connection to let go of its session.
REATTACH_WAIT_S = 2.0
# A worker whose loop has lagged past the threshold this long cannot serve its pages.
LAGGING_FOR_S = 10.0
PING_RETRY_S = 0.2


def add_health_routes(app: FastAPI, service: CounterService, lag: LoopLag) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "worker": service.worker_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        body = await readiness(service, lag)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)


async def readiness(service: CounterService, lag: LoopLag) -> dict[str, Any]:
    """Whether the worker can serve its pages now, and if not, which part is missing.

    One failed PING is retried: the first command on a pooled connection that Redis
    dropped fails once before redis-py reconnects, and that is not an outage."""
    reachable = await service.ping()
    if not reachable:
        await asyncio.sleep(PING_RETRY_S)
        reachable = await service.ping()
    down = [task.name for task in service.tasks if not task.up]
    lagging = lag.lagging_for(asyncio.get_running_loop().time()) >= LAGGING_FOR_S
    subscribed = service.subscriber.subscribed
    body: dict[str, Any] = {
        "ready": reachable and subscribed and not down and not lagging,
        "redis_reachable": reachable,
        "relay_subscribed": subscribed,
        "tasks_down": down,
        "event_loop_lagging": lagging,
        "worker": service.worker_id,
    }
    problems = sorted({p for e in service.errors() if (p := diagnose(e)) is not None})
    if problems:
        body["redis_configuration"] = problems  # retrying will not fix these
    return body


def add_metrics_routes(
    app: FastAPI, bridge: FletBridge, lag: LoopLag, guard: WebsocketGuard
) -> None:
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
            "flet_sessions": session_count(),
            "websockets": asdict(guard.stats),
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
