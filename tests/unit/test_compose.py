"""The deployment files, checked without Docker: docker-compose.yml, deploy/Dockerfile,
.dockerignore and Prometheus' scrape config (the Dockerfile's build stage is replayed for
real in tests/e2e/test_image_build.py). What compose's balancer runs (the same code
and routing file as `counter-service up`) is run for real in tests/unit/test_nginx.py,
tests/e2e/test_routing.py and tests/e2e/test_balance.py."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from counter_service.balancer import command
from counter_service.balancer.config import ROUTING_NAME, routing_file
from counter_service.balancer.replicas import Discovery

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
APP_PORT = 8550
BALANCER_PORT = 8080
# The service keys this file uses; anything else is most likely a typo that compose would
# reject (or, worse, ignore).
SERVICE_KEYS = {
    "build", "image", "command", "environment", "volumes", "healthcheck", "ports", "expose",
    "depends_on", "deploy", "restart", "profiles", "init",
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
    return (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")


def stages() -> dict[str, str]:
    """Each named stage of deploy/Dockerfile -> its text (continuations joined)."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile(), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def instructions(name: str, text: str | None = None) -> list[str]:
    """The arguments of every `name` instruction of `text` (default: the whole file)."""
    found = re.finditer(rf"^{name}\s+(.*)$", dockerfile() if text is None else text, re.M)
    return [match.group(1).strip() for match in found]


def exec_form(arguments: str) -> list[str]:
    argv = yaml.safe_load(arguments)  # the exec form is a JSON (so YAML) list
    assert isinstance(argv, list)
    return argv


def test_compose_runs_redis_the_app_nginx_and_an_optional_prometheus() -> None:
    found = services()
    assert set(found) == {"redis", "app", "nginx", "prometheus"}
    for name, service in found.items():
        assert set(service) <= SERVICE_KEYS, name
    assert found["prometheus"]["profiles"] == ["monitoring"]
    assert all("profiles" not in found[name] for name in ("redis", "app", "nginx"))


def test_only_nginx_publishes_a_port_to_the_world() -> None:
    found = services()
    assert found["nginx"]["ports"] == [f"${{PORT:-8080}}:{BALANCER_PORT}"]
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
    for name in ("app", "nginx"):
        build = found[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
    mounts = [mount for service in found.values() for mount in bind_mounts(service)]
    assert [target for _, target in mounts] == ["/etc/prometheus/prometheus.yml"]
    for source, target in mounts:
        assert source.exists(), f"{source} (mounted at {target}) is missing"


def test_each_built_service_names_a_stage_of_the_dockerfile() -> None:
    found = services()
    assert found["app"]["build"]["target"] == "app"
    assert found["nginx"]["build"]["target"] == "balancer"
    assert {"build", "app", "balancer"} <= set(stages())
    assert list(stages())[-1] == "app"  # a plain `docker build` gives the app image


def balance_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv[1:])


def test_nginx_in_compose_is_the_balancer_discovering_the_app_replicas() -> None:
    nginx = services()["nginx"]
    argv = nginx["command"]
    assert argv[:2] == ["counter-service", "balance"]
    args = balance_arguments(argv)
    assert (args.discover, args.listen) == (f"app:{APP_PORT}", f"0.0.0.0:{BALANCER_PORT}")
    assert args.replicas is None
    assert nginx["init"] is True  # tini as PID 1 forwards SIGTERM and reaps
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"
    # The image runs the same line by itself.
    assert exec_form(instructions("CMD", stages()["balancer"])[0]) == argv


def test_the_balance_command_of_compose_passes_its_own_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = balance_arguments(services()["nginx"]["command"])
    # 8080 may be taken on this machine; in its container the balancer has it to itself.
    monkeypatch.setattr(command, "check_free", lambda *a: None)
    args.nginx = "/bin/true"
    source = command.check(args).source
    assert isinstance(source, Discovery)
    assert (source.name, source.port) == ("app", APP_PORT)


def test_both_images_are_slim_bookworm_run_as_a_user_and_check_their_health() -> None:
    # bookworm: its nginx (1.22) is the one the suite runs the balancer with.
    assert set(instructions("FROM")) == {
        f"python:3.11-slim-bookworm AS {name}" for name in ("build", "app", "balancer")
    }
    for name, port, path in (
        ("app", APP_PORT, "/healthz"),
        ("balancer", 8080, "/balancer/healthz"),
    ):
        text = stages()[name]
        users = instructions("USER", text)
        assert users, name
        assert users[-1] not in ("root", "0"), name
        (healthcheck,) = instructions("HEALTHCHECK", text)
        assert "urllib.request" in healthcheck
        assert f"127.0.0.1:{port}{path}'" in healthcheck, name
    assert "--no-cache-dir" in dockerfile()


def test_the_balancer_image_has_debians_nginx_and_the_routing_file_where_it_looks() -> None:
    text = stages()["balancer"]
    (install,) = [run for run in instructions("RUN", text) if "apt-get install" in run]
    assert "--no-install-recommends nginx" in install
    assert "rm -rf /var/lib/apt/lists/*" in install
    assert "COPY --from=build /opt/venv /opt/venv" in text
    copies = [shlex.split(c) for c in instructions("COPY", stages()["build"])]
    routing = [c for c in copies if c[0] == "deploy/nginx/counter-service.conf"]
    assert routing == [
        [str(routing_file().relative_to(ROOT)), f"/opt/venv/share/counter-service/{ROUTING_NAME}"]
    ]


def test_the_app_image_installs_what_serve_needs_and_no_extra() -> None:
    installs = [run for run in instructions("RUN") if "pip install" in run]
    assert installs
    for run in installs:
        # No extras: plot (matplotlib), dev, bench stay out.
        assert not re.search(r"\.\[|optional-dependencies", run), run
    assert any("['project']['dependencies']" in run for run in installs)


def test_the_app_image_serves_on_all_interfaces_with_redis_from_the_environment() -> None:
    text = stages()["app"]
    (command_line,) = instructions("CMD", text)
    serve = ["counter-service", "serve", "--host", "0.0.0.0", "--port", str(APP_PORT)]
    assert exec_form(command_line) == serve
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
    assert "deploy/nginx/counter-service.conf" in copied
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
