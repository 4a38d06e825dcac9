"""The files `counter-service up` writes for nginx (the process itself: tests/e2e/test_stack.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from counter_service.devtools import nginx
from counter_service.devtools.nginx import (
    SERVER_PARAMS,
    SHARED_CONF,
    find_nginx,
    in_rotation,
    listen_conf,
    main_conf,
    servers_conf,
    write_config,
)


def server_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("server ")]


def test_replicas_that_are_not_ready_are_down() -> None:
    assert server_lines(servers_conf([8551, 8552, 8553], [True, False, True])) == [
        f"server 127.0.0.1:8551 {SERVER_PARAMS};",
        f"server 127.0.0.1:8552 {SERVER_PARAMS} down;",
        f"server 127.0.0.1:8553 {SERVER_PARAMS};",
    ]


def test_when_no_replica_is_ready_all_take_sessions_so_pages_can_say_so() -> None:
    assert in_rotation([False, False]) == [True, True]
    lines = server_lines(servers_conf([1, 2], [False, False]))
    assert len(lines) == 2
    assert not [line for line in lines if "down" in line]


def test_nginx_listens_on_loopback_only() -> None:
    assert listen_conf(8080) == "listen 127.0.0.1:8080;\n"


def test_every_path_of_the_local_nginx_is_inside_its_directory(tmp_path: Path) -> None:
    text = main_conf(tmp_path)
    paths = [line.split('"')[1] for line in text.splitlines() if '"' in line]
    assert len(paths) == 8  # pid, access log, five temp paths, the shared routing file
    assert [p for p in paths if not p.startswith(str(tmp_path))] == [str(SHARED_CONF)]
    assert "error_log stderr" in text


@pytest.mark.parametrize(("euid", "has_user"), [(0, True), (1000, False)])
def test_as_root_the_workers_stay_the_current_user(
    monkeypatch: pytest.MonkeyPatch, euid: int, has_user: bool
) -> None:
    monkeypatch.setattr(nginx.os, "geteuid", lambda: euid)
    monkeypatch.setattr(nginx.pwd, "getpwuid", lambda uid: type("P", (), {"pw_name": "me"}))
    text = main_conf(Path("/tmp/x"))
    assert text.startswith("#")
    assert ("\nuser me " in text) == has_user


def test_write_config_lays_out_what_the_shared_file_includes(tmp_path: Path) -> None:
    config = write_config(tmp_path, 8080, servers_conf([8551], [True]))
    assert config == tmp_path / "nginx.conf"
    assert sorted(p.name for p in (tmp_path / "counter-service").iterdir()) == [
        "listen.conf",
        "servers.conf",
    ]
    shared = SHARED_CONF.read_text()
    assert "include counter-service/servers.conf;" in shared
    assert "include counter-service/listen.conf;" in shared
    assert (tmp_path / "temp").is_dir()


@pytest.mark.skipif(
    not any(Path(d, "nginx").exists() for d in nginx.SBIN_DIRS), reason="no nginx in an sbin"
)
def test_nginx_is_found_outside_a_users_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_nginx()
    assert found is not None
    assert os.access(found, os.X_OK)
