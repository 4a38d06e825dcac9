"""`counter_service.app(main)`: a Flet app whose sessions on every process share
counters and `page.pubsub`, with health, readiness and metrics routes."""

from __future__ import annotations

import asyncio
import contextlib
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
    flet_asgi_app,
    flet_sessions,
    session_count,
    session_timeout,
)
from counter_service.flet.websockets import Limits, WebsocketGuard
from counter_service.loop_lag import LoopLag
from counter_service.metrics import CONTENT_TYPE
from counter_service.redis.diagnosis import diagnose
from counter_service.service import CounterService
from counter_service.settings import Settings

logger = logging.getLogger(__name__)


def app(
    main: Callable[[ft.Page], Any],
    redis_url: str | None = None,
    namespace: str | None = None,
    *,
    settings: Settings | None = None,
    **flet_options: Any,
) -> FastAPI:
    """An ASGI app serving `main` like `flet_web.fastapi.app(main, **flet_options)`,
    in which `page.pubsub` reaches every session of every process on the same Redis
    and namespace, and `counter_service.counters(page)` counts and shows live counters.

    `redis_url` None means `$REDIS_URL`, else an embedded in-process store (one
    process only); `namespace` None means `$COUNTER_NAMESPACE`, else
    `counter-service`. `settings` default to the environment (`Settings.from_env()`);
    a bad value raises `SettingsError` naming the variable or argument, as given.
    Run it with uvicorn on as many processes as you like; behind a load balancer, keep
    each browser on one process (a Flet session lives in one process). A session whose
    browser left is kept `settings.session_timeout_s` (unless `session_timeout_seconds`
    is given, or Flet's `FLET_SESSION_TIMEOUT` is set)."""
    settings = settings_of(settings, redis_url=redis_url, namespace=namespace)
    flet_options.setdefault("session_timeout_seconds", settings.session_timeout_s)
    kept_s = session_timeout(flet_options["session_timeout_seconds"])
    log_store(settings)
    service = CounterService(settings)
    bridge = FletBridge(service, kept_s)
    session_main = bridge.wrap(main)
    lag = LoopLag(
        service.metrics.loop_lag,
        threshold_s=settings.lag_threshold_s,
        sustained_s=settings.lag_sustained_s,
    )
    service.add_task(lag.task)
    service.metrics.count_pages(lambda: len(bridge.fanout), session_count)
    guard = WebsocketGuard(
        flet_asgi_app(session_main, **flet_options),
        service.presence,
        limits_of(settings),
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
    outer.state.loop_lag = lag
    add_health_routes(outer, service, lag)
    add_metrics_routes(outer, bridge, lag, guard)
    # Mounted last: Flet's app ends in a catch-all static mount.
    outer.mount("/", guard)
    return outer


def settings_of(settings: Settings | None, **overrides: str | None) -> Settings:
    """`settings` (default: the environment's) with the non-None `overrides`; with
    the environment, they replace its values before any is checked."""
    if settings is None:
        return Settings.from_env(overrides=overrides)
    return settings.with_overrides(**overrides)


def limits_of(settings: Settings) -> Limits:
    """What each websocket client may do, from the settings."""
    return Limits(
        max_frame_bytes=settings.max_frame_bytes,
        max_send_queue_bytes=settings.max_send_queue_bytes,
        register_timeout_s=settings.register_timeout_s,
        send_timeout_s=settings.send_timeout_s,
        events_per_s=settings.events_per_s,
        event_burst=settings.event_burst,
        max_frames_per_s=settings.max_frames_per_s,
        frame_burst=settings.frame_burst,
    )


PING_RETRY_S = 0.2
# How long readiness waits for a dropped subscription to come back before it reports
# it down: reconnecting takes tens of milliseconds, and that is not an outage.
SUBSCRIBE_GRACE_S = 0.5


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

    Neither a dropped command connection nor a dropped subscription that comes right
    back is an outage: one failed PING is retried (the first command on a pooled
    connection that Redis dropped fails once before redis-py reconnects), and a lost
    subscription has `SUBSCRIBE_GRACE_S` to return."""
    reachable, subscribed = await asyncio.gather(answers_ping(service), subscribed_soon(service))
    down = [task.name for task in service.tasks if not task.up]
    lagging = lag.lagging(asyncio.get_running_loop().time())
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
        # Retrying will not fix these, and a refused command is a broken feature (a
        # revoked +hset: "online" stops counting) even while PING and the relay work.
        body["redis_configuration"] = problems
        body["ready"] = False
    return body


async def answers_ping(service: CounterService) -> bool:
    """True if Redis answers a PING, or a second one `PING_RETRY_S` later."""
    if await service.ping():
        return True
    await asyncio.sleep(PING_RETRY_S)
    return await service.ping()


async def subscribed_soon(service: CounterService) -> bool:
    """True if the relay is subscribed, or is again within `SUBSCRIBE_GRACE_S`."""
    if service.available:
        return True
    back = asyncio.Event()
    stop = service.on_availability(lambda available: back.set() if available else None)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_GRACE_S):
                await back.wait()
    finally:
        stop()
    return service.available


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
