"""One Chromium and one `counter-service up --replicas 2` per test module (per xdist worker
that runs some of it): a browser launch and a stack start are the slow parts, and the
tests leave both as they found them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from counter_service.devtools.fleet import RedisProcess, free_port
from tests.stack import COMMAND, Up

CHROMIUM = shutil.which("chromium")
"""Debian's Chromium. Never a browser that Playwright downloads: this machine has no
internet, and CI installs the Debian package (.ci/run)."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Nothing but the page under test may leave the browser: no update checks, no sync.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None  # the test modules skip without it
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """The stack's Redis, owned by the test so that it can stop and restart it."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(redis_server: RedisProcess) -> Iterator[Up]:
    """`counter-service up --replicas 2` on `redis_server`, both replicas ready."""
    port = free_port()
    argv = [*COMMAND, "--replicas", "2", "--port", str(port), "--redis-url", redis_server.url]
    running = Up(argv, port)
    try:
        running.wait_for(r"serving ")
        running.wait_for(r"replica 1 ready")
        running.wait_for(r"replica 2 ready")
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()
