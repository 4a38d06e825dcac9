"""The ASGI app: health routes, the service's lifetime, and the Flet app mounted last."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from counter_service import CounterService, Settings
from counter_service.flet.bridge import Fanout, flet_asgi_app, flet_sessions
from counter_service.flet.websockets import CountWebsockets
from counter_service.loop_lag import LoopLag
from ui.page import build_main

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for one server process (settings default to the environment)."""
    settings = settings or Settings.from_env()
    log_store(settings)
    service = CounterService(settings)
    fanout = Fanout()
    main = build_main(service, fanout)
    service.subscribe(fanout.deliver)
    lag = LoopLag()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with flet_sessions(), service:
            await lag.start()
            try:
                yield
            finally:
                await lag.stop()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    add_health_routes(app, service)
    add_metrics_route(app, service, fanout, lag)
    # Mounted last: Flet's app ends in a catch-all static mount.
    app.mount("/", CountWebsockets(flet_asgi_app(main), service.presence))
    return app


def add_health_routes(app: FastAPI, service: CounterService) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "worker": service.worker_id}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        reachable = await service.ping()
        ready = reachable and service.ready
        body = {
            "ready": ready,
            "redis_reachable": reachable,
            "relay_subscribed": service.ready,
            "worker": service.worker_id,
        }
        return JSONResponse(body, status_code=200 if ready else 503)


def add_metrics_route(app: FastAPI, service: CounterService, fanout: Fanout, lag: LoopLag) -> None:
    @app.get("/metrics")
    async def metrics() -> dict[str, object]:
        return {
            "worker": service.worker_id,
            "ready": service.ready,
            "event_loop_lag_ms": lag.summary_ms(),
            "event_loop_lag_histogram": lag.histogram(),
            "live_connections": service.presence.live,
            "pages": len(fanout),
            "relay": asdict(service.relay_stats),
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
