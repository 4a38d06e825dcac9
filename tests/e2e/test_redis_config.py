"""Configuration errors stop `serve` at once with one line; an outage does not."""

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from counter_service.devtools.fleet import RedisProcess, ServerProcess, free_port
from counter_service.devtools.topologies import (
    TlsRedis,
    ToolMissing,
    create_acl_user,
    make_certificates,
    with_credentials,
)
from tests.e2e.test_production_redis import documented_acl_rule
from tests.support import eventually

pytestmark = pytest.mark.e2e

EXIT_DEADLINE_S = 30.0


def serve(url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "counter_service", "serve", "--port", str(free_port())]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("COUNTER_", "REDIS"))}
    environment |= {"REDIS_URL": url, **(env or {})}
    return subprocess.run(
        argv, env=environment, capture_output=True, text=True, timeout=EXIT_DEADLINE_S
    )


def one_line_naming(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("counter-service serve: ")
    assert all(word in last for word in words), last
    assert "Traceback" not in done.stderr


async def test_a_wrong_password(redis_server: RedisProcess) -> None:
    url = await create_acl_user(redis_server.url, "alice", "right", documented_acl_rule())
    wrong = with_credentials(redis_server.url, "alice", "wrong")
    one_line_naming(await asyncio.to_thread(serve, wrong), "password", "REDIS_URL")
    assert url  # the right one works: see test_production_redis


async def test_a_missing_acl_permission(redis_server: RedisProcess) -> None:
    rule = [t for t in documented_acl_rule() if t != "+evalsha"]
    url = await create_acl_user(redis_server.url, "bob", "pw", rule)
    one_line_naming(await asyncio.to_thread(serve, url), "permission", "evalsha", "ACL rule")


def test_a_database_the_server_does_not_have(redis_server: RedisProcess) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/99"
    one_line_naming(serve(url), "database number", "REDIS_URL")


def test_a_certificate_that_does_not_verify(tmp_path: Path) -> None:
    try:
        certs = make_certificates(tmp_path / "certs")
    except ToolMissing as exc:
        pytest.skip(str(exc))
    server = TlsRedis(tmp_path, certs, require_client_cert=False).start()
    try:
        done = serve(server.url, {"COUNTER_TLS_CA_FILE": str(certs.other_ca_cert)})
        one_line_naming(done, "does not verify", "COUNTER_TLS_CA_FILE")
    finally:
        server.stop()


def test_a_cluster_url_for_a_single_server(redis_server: RedisProcess) -> None:
    url = redis_server.url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    one_line_naming(serve(url), "not a cluster", "redis://")


async def test_an_unreachable_redis_is_retried_quietly_until_it_is_back(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path)  # not started yet
    server = ServerProcess(tmp_path, redis.url)
    server._spawn([sys.executable, "-m", "counter_service", "serve", "--port", str(server.port)],
                  {**os.environ, "REDIS_URL": redis.url})  # fmt: skip
    try:
        await eventually(lambda: status(server, "/healthz") == 200, 30, "serving")
        assert status(server, "/readyz") == 503
        await asyncio.sleep(1.5)  # a few attempts
        redis.start()
        await eventually(lambda: status(server, "/readyz") == 200, 30, "ready once Redis is up")
        log = server.log_tail(10_000)
        assert "unreachable" in log or "retrying" in log
        assert "Traceback" not in log
        assert "is back" in log
    finally:
        server.stop()
        redis.stop()


def status(server: ServerProcess, path: str) -> int | Any:
    try:
        with urllib.request.urlopen(server.url + path, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
