"""The files the balancer writes for nginx, and real `nginx -t` of them as compose's
balancer and `counter-service up` write them (the routing itself, through a running
nginx: tests/e2e/test_routing.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from counter_service.balancer import config, nginx
from counter_service.balancer.config import (
    NEW_SESSIONS,
    SERVER_PARAMS,
    MainOptions,
    listen_conf,
    main_conf,
    replicas_conf,
    routing_file,
)
from counter_service.balancer.nginx import Nginx, NginxError, find_nginx
from counter_service.balancer.replicas import Replica, replica_id

NOBODY = 65534
needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")

A, B, C = (Replica("127.0.0.1", port) for port in (8551, 8552, 8553))


def block(text: str, header: str) -> list[str]:
    """The lines inside `header { ... }` of a generated file."""
    lines = text.splitlines()
    start = lines.index(header + " {")
    return [line.strip() for line in lines[start + 1 : lines.index("}", start)]]


def test_a_replica_id_is_opaque_stable_and_splits_on_no_colon() -> None:
    assert A.id == replica_id("127.0.0.1:8551") == replica_id("127.0.0.1:8551")
    assert re.fullmatch(r"[0-9a-f]{10}", A.id)
    assert len({A.id, B.id, C.id}) == 3
    assert Replica("::1", 8551).address == "[::1]:8551"


def test_new_sessions_go_to_the_replicas_in_rotation_by_fewest_connections() -> None:
    text = replicas_conf([A, B, C], rotation=[A, C])
    assert block(text, f"upstream {NEW_SESSIONS}") == [
        "least_conn;",
        f"zone {NEW_SESSIONS} 64k;",
        f"server 127.0.0.1:8551 {SERVER_PARAMS};",
        f"server 127.0.0.1:8553 {SERVER_PARAMS};",
    ]


def test_each_replica_keeps_its_browsers_with_the_others_in_rotation_as_backup() -> None:
    text = replicas_conf([A, B, C], rotation=[A, C])
    # B is out of rotation: still first for its own browsers, never anyone's backup.
    assert block(text, f"upstream cs_{B.id}") == [
        f"server 127.0.0.1:8552 {SERVER_PARAMS};",
        f"server 127.0.0.1:8551 {SERVER_PARAMS} backup;",
        f"server 127.0.0.1:8553 {SERVER_PARAMS} backup;",
    ]
    assert block(text, f"upstream cs_{A.id}") == [
        f"server 127.0.0.1:8551 {SERVER_PARAMS};",
        f"server 127.0.0.1:8553 {SERVER_PARAMS} backup;",
    ]


def test_the_cookie_names_a_group_and_the_served_address_names_an_id() -> None:
    text = replicas_conf([A, B], rotation=[A, B])
    cookie = block(text, "map $cookie_cs_replica $cs_upstream")
    assert cookie[0] == f"default {NEW_SESSIONS};"
    assert [line.split("#")[0].strip() for line in cookie[1:]] == [
        f"{A.id} cs_{A.id};",
        f"{B.id} cs_{B.id};",
    ]
    served = block(text, "map $cs_served_address $cs_served")
    assert served == ['default "";', f'"127.0.0.1:8551" {A.id};', f'"127.0.0.1:8552" {B.id};']


def test_with_no_replica_every_request_gets_a_plain_502() -> None:
    text = replicas_conf([], rotation=[])
    assert block(text, f"upstream {NEW_SESSIONS}")[-1] == config.NO_REPLICA
    assert "upstream cs_" not in text.replace(f"upstream {NEW_SESSIONS}", "")


def test_the_listen_file_writes_ipv6_in_brackets() -> None:
    assert listen_conf("127.0.0.1", 8080) == "listen 127.0.0.1:8080;\n"
    assert listen_conf("::", 8080) == "listen [::]:8080;\n"


def test_every_path_of_nginx_is_inside_its_directory(tmp_path: Path) -> None:
    text = main_conf(tmp_path, routing_file(), MainOptions(access_log=str(tmp_path / "a.log")))
    paths = [line.split('"')[1] for line in text.splitlines() if '"' in line]
    assert len(paths) == 8  # pid, access log, five temp paths, the shared routing file
    assert [p for p in paths if not p.startswith(str(tmp_path))] == [str(routing_file())]
    assert "error_log stderr" in text
    assert "access_log off;" in main_conf(tmp_path, routing_file(), MainOptions())


def test_old_workers_carry_websockets_for_at_most_30_seconds_after_a_reload() -> None:
    # A flapping replica piled up nginx workers shutting down for 10 minutes each.
    text = main_conf(Path("/tmp/x"), routing_file(), MainOptions())
    assert "\nworker_shutdown_timeout 30s;\n" in text


NGINX_LOG = """\
2026/12/02 00:48:55 [notice] 29829#29829: getrlimit(RLIMIT_NOFILE): 20000:20000
2026/12/02 00:48:55 [emerg] 29829#29829: host not found in upstream "h:1"
2026/12/02 00:48:55 [error] 29830#29830: *1 connect() failed (111: Connection refused)
2026/12/02 00:48:55 [notice] 29829#29829: start worker process 29830
"""


def test_an_nginx_error_quotes_the_lines_that_say_why_and_no_notice(tmp_path: Path) -> None:
    log = tmp_path / "nginx.log"
    log.write_text(NGINX_LOG)
    target = Nginx("nginx", tmp_path, routing_file(), ("127.0.0.1", 1), log=log)
    assert str(target.error("nginx exited (status 1)")) == (
        "nginx exited (status 1): 2026/12/02 00:48:55 [emerg] 29829#29829: host not found in"
        ' upstream "h:1"'
    )
    log.write_text(NGINX_LOG.replace("[emerg]", "[notice]"))
    assert str(target.error("nginx exited")) == (
        "nginx exited: no [emerg], [alert] or [crit] line in its log"
    )
    # Without a log file of its own, nginx wrote to our stderr: the user has read it.
    assert str(Nginx("nginx", tmp_path, routing_file(), ("127.0.0.1", 1)).error("x")) == "x"


@pytest.mark.parametrize(("euid", "has_user"), [(0, True), (1000, False)])
def test_as_root_the_workers_stay_the_current_user(
    monkeypatch: pytest.MonkeyPatch, euid: int, has_user: bool
) -> None:
    monkeypatch.setattr(config.os, "geteuid", lambda: euid)
    monkeypatch.setattr(config.pwd, "getpwuid", lambda uid: type("P", (), {"pw_name": "me"}))
    text = main_conf(Path("/tmp/x"), routing_file(), MainOptions())
    assert text.startswith("#")
    assert ("\nuser me " in text) == has_user


def test_the_shared_routing_file_includes_what_the_balancer_writes(tmp_path: Path) -> None:
    Nginx("nginx", tmp_path, routing_file(), ("127.0.0.1", 8080)).write(replicas_conf([A], [A]))
    assert sorted(p.name for p in (tmp_path / "counter-service").iterdir()) == [
        "listen.conf",
        "replicas.conf",
    ]
    shared = routing_file().read_text()
    assert "include counter-service/replicas.conf;" in shared
    assert "include counter-service/listen.conf;" in shared
    assert (tmp_path / "temp").is_dir()


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """A directory that nobody, as compose's balancer is, can write into."""
    directory = Path(tempfile.mkdtemp(prefix="balancer-test-"))
    if os.geteuid() == 0:
        os.chown(directory, NOBODY, NOBODY)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def as_nobody() -> dict[str, int]:
    """Popen arguments that drop root, so that nginx runs as it does in the image."""
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}


def nginx_t(target: Nginx, **popen: object) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of `target`'s files, with nginx's words (Nginx.test() is quiet)."""
    argv = [target.binary, "-t", "-p", str(target.directory), "-c", str(target.config)]
    run = [*argv, "-e", "stderr"]
    return subprocess.run(run, capture_output=True, text=True, timeout=30, check=False, **popen)


@needs_nginx
def test_nginx_accepts_what_compose_balancer_writes_as_an_unprivileged_user(
    unprivileged_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image runs `balance` as a user that is not root: no `user` line then.
    monkeypatch.setattr(config.os, "geteuid", lambda: 10001)
    replicas = [Replica(f"172.18.0.{n}", 8550) for n in (3, 4, 5)]
    target = Nginx(str(find_nginx()), unprivileged_dir, routing_file(), ("0.0.0.0", 8080))
    target.write(replicas_conf(replicas, replicas[:2]))
    if os.geteuid() == 0:
        for path in unprivileged_dir.rglob("*"):
            os.chown(path, NOBODY, NOBODY)
    done = nginx_t(target, **as_nobody())
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    assert "[warn]" not in done.stderr  # e.g. `user` without root, or a file it cannot open
    assert "[emerg]" not in done.stderr


@needs_nginx
@pytest.mark.parametrize("ready", [[True, True], [True, False], [False, False]])
def test_nginx_accepts_what_up_writes(tmp_path: Path, ready: list[bool]) -> None:
    replicas = [Replica("127.0.0.1", 18551, "1"), Replica("127.0.0.1", 18552, "2")]
    rotation = [r for r, ok in zip(replicas, ready, strict=True) if ok]
    main = MainOptions(workers="1", access_log=str(tmp_path / "access.log"))
    target = Nginx(str(find_nginx()), tmp_path, routing_file(), ("127.0.0.1", 18080), main)
    target.write(replicas_conf(replicas, rotation))
    target.test()  # raises NginxError with nginx's words
    assert "test is successful" in nginx_t(target).stderr


@needs_nginx
def test_a_configuration_nginx_refuses_is_an_error_that_quotes_nginx(tmp_path: Path) -> None:
    target = Nginx(str(find_nginx()), tmp_path, routing_file(), ("127.0.0.1", 18080))
    target.write("upstream broken {\n")
    with pytest.raises(NginxError, match=r"nginx refused the configuration: .*unexpected"):
        target.test()


@pytest.mark.skipif(
    not any(Path(d, "nginx").exists() for d in nginx.SBIN_DIRS), reason="no nginx in an sbin"
)
def test_nginx_is_found_outside_a_users_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_nginx()
    assert found is not None
    assert os.access(found, os.X_OK)
