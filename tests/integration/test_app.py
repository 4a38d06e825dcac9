"""The ASGI app: health and readiness, run in-process with its lifespan."""

import time
from collections.abc import Callable

from starlette.testclient import TestClient

from counter_service import Settings
from counter_service.devtools.fleet import RedisProcess, free_port
from ui.app import create_app


def poll(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s: {what}"
        time.sleep(0.05)


def status(client: TestClient, path: str) -> int:
    return client.get(path).status_code


def test_embedded_store_is_alive_and_ready() -> None:
    with TestClient(create_app(Settings())) as client:
        assert client.get("/healthz").json()["status"] == "alive"
        poll(lambda: status(client, "/readyz") == 200, what="ready")
        assert client.get("/readyz").json() == {
            "ready": True,
            "redis_reachable": True,
            "relay_subscribed": True,
            "tasks_down": [],
            "event_loop_lagging": False,
            "worker": client.get("/healthz").json()["worker"],
        }


def test_the_page_is_served_without_a_cdn() -> None:
    with TestClient(create_app(Settings())) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "flet.noCdn=true;" in page.text
        assert 'flet.canvasKitBaseUrl="/canvaskit/"' in page.text  # not gstatic


def test_readyz_is_503_while_redis_is_unreachable() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as client:
        assert status(client, "/healthz") == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["redis_reachable"] is False
        assert response.json()["relay_subscribed"] is False


def test_readyz_follows_redis_going_down_and_coming_back(redis_server: RedisProcess) -> None:
    with TestClient(create_app(Settings(redis_url=redis_server.url))) as client:
        poll(lambda: status(client, "/readyz") == 200, what="ready at start")
        redis_server.stop()
        poll(lambda: status(client, "/readyz") == 503, what="not ready without redis")
        assert status(client, "/healthz") == 200
        redis_server.start()
        poll(lambda: status(client, "/readyz") == 200, what="ready again")


def test_the_json_view_reports_loop_lag_relay_and_pages() -> None:
    with TestClient(create_app(Settings())) as client:
        poll(lambda: client.get("/metrics.json").json()["event_loop_lag_ms"]["samples"] > 0)
        metrics = client.get("/metrics.json").json()
        assert set(metrics) == {
            "worker",
            "ready",
            "event_loop_lag_ms",
            "event_loop_lag_histogram",
            "live_connections",
            "pages",
            "flet_sessions",
            "websockets",
            "relay",
            "subscriber",
            "messages",
        }
        assert metrics["pages"] == 0
        assert metrics["subscriber"]["subscribes"] >= 1
