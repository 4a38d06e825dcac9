"""The ASGI app: health and readiness, run in-process with its lifespan."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import counter_service
from counter_service import Settings, SettingsError
from counter_service.devtools.fleet import RedisProcess, free_port
from ui.app import create_app
from ui.page import main


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


async def test_a_crashed_background_task_fails_readyz_naming_it_until_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(Settings())
    lag = app.state.loop_lag  # its sampler is a task of the service like the others
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://worker") as client,
    ):
        await eventually_status(client, 200)

        def broken(_lag_s: float) -> None:
            raise RuntimeError("injected bug")

        monkeypatch.setattr(lag, "record", broken)  # every run of the task now crashes
        body = await eventually_status(client, 503)
        assert body["tasks_down"] == ["loop-lag"]
        assert (body["redis_reachable"], body["relay_subscribed"]) == (True, True)
        monkeypatch.undo()
        await eventually_status(client, 200)  # restarted, and running again


async def eventually_status(client: httpx.AsyncClient, status: int) -> dict[str, Any]:
    """The body of the first /readyz answer with `status`, within 15 s."""
    deadline = time.monotonic() + 15
    while (response := await client.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, f"/readyz never {status}: {response.json()}"
        await asyncio.sleep(0.02)
    return dict(response.json())


def test_app_takes_the_redis_url_and_namespace_by_position_and_settings_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COUNTER_NAMESPACE", "not valid!")  # the argument replaces it unchecked
    app = counter_service.app(main, "redis://127.0.0.1:1/0", "shop")
    settings = app.state.service.settings
    assert (settings.redis_url, settings.namespace) == ("redis://127.0.0.1:1/0", "shop")
    with pytest.raises(TypeError):
        counter_service.app(main, None, None, Settings())  # type: ignore[misc]  # on purpose


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("COUNTER_PRESENCE_TTL", "abc", "COUNTER_PRESENCE_TTL=abc: is not a number"),
        ("FLET_SESSION_TIMEOUT", "abc", "FLET_SESSION_TIMEOUT=abc: is not a whole number"),
        ("FLET_SESSION_TIMEOUT", "-5", "FLET_SESSION_TIMEOUT=-5: must be between 1 and 86400"),
    ],
)
def test_a_bad_variable_under_the_library_names_it_as_typed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        counter_service.app(main)
    assert str(caught.value) == message
