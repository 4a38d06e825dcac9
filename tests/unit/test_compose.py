"""The deployment files, checked without Docker: docker-compose.yml, deploy/Dockerfile,
.dockerignore, the nginx configuration (through `nginx -t`) and Prometheus' scrape config."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from counter_service.devtools.nginx import (
    SERVER_PARAMS,
    SHARED_CONF,
    SITE_DIR,
    find_nginx,
    servers_conf,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SITE = DEPLOY / "nginx" / "compose"
APP_PORT = 8550
# The service keys this file uses; anything else is most likely a typo that compose would
# reject (or, worse, ignore).
SERVICE_KEYS = {
    "build", "image", "command", "environment", "volumes", "healthcheck", "ports", "expose",
    "depends_on", "deploy", "restart", "profiles",
}  # fmt: skip


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every `./...` volume of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts.append((ROOT / source, target))
    return mounts


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction of deploy/Dockerfile (continuations joined)."""
    text = dockerfile().replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.*)$", text, re.MULTILINE)]


def test_compose_runs_redis_the_app_nginx_and_an_optional_prometheus() -> None:
    found = services()
    assert set(found) == {"redis", "app", "nginx", "prometheus"}
    for name, service in found.items():
        assert set(service) <= SERVICE_KEYS, name
    assert found["prometheus"]["profiles"] == ["monitoring"]
    assert all("profiles" not in found[name] for name in ("redis", "app", "nginx"))


def test_only_nginx_publishes_a_port_to_the_world() -> None:
    found = services()
    assert found["nginx"]["ports"] == ["${PORT:-8080}:8080"]
    assert "ports" not in found["app"]
    assert "ports" not in found["redis"]
    assert all(p.startswith("127.0.0.1:") for p in found["prometheus"]["ports"])


def test_the_app_runs_three_replicas_by_default_on_redis() -> None:
    app = services()["app"]
    assert app["deploy"]["replicas"] == "${REPLICAS:-3}"
    assert app["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_keeps_counters_with_aof_on_a_named_volume_and_never_evicts() -> None:
    document = compose()
    redis = document["services"]["redis"]
    flags = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert redis["command"][0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert re.fullmatch(r"redis:7\.\d+-alpine|valkey/valkey:.+", redis["image"])
    volume, target = redis["volumes"][0].split(":")
    assert (volume, target) == ("redis-data", "/data")
    assert volume in document["volumes"]


def test_every_file_compose_mounts_or_builds_from_exists() -> None:
    found = services()
    build = found["app"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    mounts = [mount for service in found.values() for mount in bind_mounts(service)]
    assert len(mounts) == 4
    for source, target in mounts:
        assert source.exists(), f"{source} (mounted at {target}) is missing"


def test_nginx_in_compose_gets_the_shared_routing_file_where_its_main_file_includes_it() -> None:
    mounts = {target: source for source, target in bind_mounts(services()["nginx"])}
    shared_target = next(t for t, s in mounts.items() if s.resolve() == SHARED_CONF)
    assert f"include {shared_target};" in mounts["/etc/nginx/nginx.conf"].read_text()
    # The routing file includes its site files relative to the main file's directory.
    assert mounts[f"/etc/nginx/{SITE_DIR}"].resolve() == COMPOSE_SITE
    assert {p.name for p in COMPOSE_SITE.iterdir()} == {"servers.conf", "listen.conf"}


def test_compose_replicas_get_the_passive_health_parameters_of_the_local_stack() -> None:
    lines = [
        line for line in (COMPOSE_SITE / "servers.conf").read_text().splitlines()
        if line.startswith("server ")
    ]  # fmt: skip
    assert lines == [f"server app:{APP_PORT} resolve {SERVER_PARAMS};"]


@pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)")
def test_nginx_accepts_the_shared_routing_file_with_the_compose_listen_file(
    tmp_path: Path,
) -> None:
    # What can run here: the shared routing file and compose's listen.conf, as compose
    # mounts them, under the local stack's main file. compose's servers.conf names `app`,
    # which only Docker's DNS resolves, and uses `resolve` (nginx >= 1.27.3; Debian has
    # 1.22): a list of 127.0.0.1 servers, as `counter-service up` writes it, stands in.
    # The nginx image's own main file (user nginx, /var/run) is checked statically above.
    config = write_config(tmp_path, 8080, servers_conf([18551, 18552], [True, False]))
    (tmp_path / SITE_DIR / "listen.conf").write_text((COMPOSE_SITE / "listen.conf").read_text())
    argv = [str(find_nginx()), "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_the_image_is_slim_runs_as_a_user_and_checks_its_health() -> None:
    assert instructions("FROM")[-1] == "python:3.11-slim"
    users = instructions("USER")
    assert users
    assert users[-1] not in ("root", "0")
    healthcheck = instructions("HEALTHCHECK")
    assert len(healthcheck) == 1
    assert "urllib.request" in healthcheck[0]
    assert f":{APP_PORT}/healthz" in healthcheck[0]
    assert "--no-cache-dir" in dockerfile()


def test_the_image_serves_on_all_interfaces_with_redis_from_the_environment() -> None:
    (command,) = instructions("CMD")
    argv = yaml.safe_load(command)  # the exec form is a JSON (so YAML) list
    assert argv == ["counter-service", "serve", "--host", "0.0.0.0", "--port", str(APP_PORT)]
    assert not [env for env in instructions("ENV") if "REDIS_URL" in env]  # compose sets it


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    kept = {
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = [
        source
        for arguments in instructions("COPY")
        if not arguments.startswith("--from")
        for source in shlex.split(arguments)[:-1]
    ]
    assert copied
    for source in copied:
        assert source in kept, f"COPY {source}: excluded by .dockerignore"
        assert (ROOT / source).exists(), f"COPY {source}: missing"


def test_prometheus_scrapes_metrics_of_every_app_replica() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["type"] == "A"
    assert discovery["names"] == ["app"]  # the compose service, one A record per replica
    assert discovery["port"] == APP_PORT
    assert "app" in services()
