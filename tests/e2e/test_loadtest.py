"""`counter-service loadtest --spawn 2` as a real subprocess: correct totals, everything
converged, and no process left behind, also when interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from counter_service.devtools.fleet import Fleet
from counter_service.names import Names

pytestmark = pytest.mark.e2e

COMMAND = [sys.executable, "-m", "counter_service", "loadtest"]
SMOKE = ["--spawn", "2", "--sessions", "20", "--clickers", "4", "--rate", "40", "--duration", "2"]
RUN_LIMIT_S = 150.0  # correctness deadline, not speed: the command bounds itself well within


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_spawn_2_loses_nothing_converges_and_leaves_no_process(tmp_path: Path) -> None:
    out, picture = tmp_path / "result.json", tmp_path / "result.png"
    argv = [*COMMAND, *SMOKE, "--out", str(out), "--plot", str(picture), "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_LIMIT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["ok"]
    assert result["problems"] == []
    assert "PASS" in done.stdout

    sessions, clicks, totals = result["sessions"], result["clicks"], result["totals"]
    assert (sessions["connected"], sessions["failed"], sessions["live_at_end"]) == (20, 0, 20)
    assert clicks["planned"] == 80
    assert 0 < clicks["sent"] <= 80
    assert clicks["acknowledged"] == clicks["sent"]
    assert clicks["errored"] == 0
    expected = {"clicks": clicks["sent"], "views": 20, "online": 20}
    for name, total in expected.items():
        check = totals[name]
        assert (check["start"], check["expected"], check["observed"]) == (0, total, total), name
        assert (check["lost"], check["extra"], check["observed_from"]) == (0, 0, "redis"), name
        assert check["sessions_showing_expected"] == 20, name
    convergence = result["convergence"]
    assert convergence["all_converged"]
    assert convergence["converged"] == 20
    assert result["propagation"]["all"]["count"] == clicks["acknowledged"] * 19
    assert result["redis"]["samples"] > 0
    assert result["redis"]["pubsub_connections_max"] == 2
    assert result["online_after_close"]["observed"] == 0
    assert result["sessions"]["page_errors"] == {}
    assert picture.read_bytes()[:4] == b"\x89PNG"

    fleet = result["fleet"]
    pids = [fleet["redis_pid"], *fleet["server_pids"]]
    assert len(pids) == 3
    assert all(isinstance(pid, int) for pid in pids)
    assert not [pid for pid in pids if alive(pid)], "spawned processes left behind"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_every_spawned_process(tmp_path: Path, signum: int) -> None:
    argv = [*COMMAND, *SMOKE[:4], "--duration", "120", "--no-progress"]
    log = (tmp_path / "loadtest.log").open("wb")
    with log:
        # A shell may start tests with SIGINT ignored; the load test must get it as Ctrl-C.
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=default_sigint
        )
    try:
        spawned = wait_for_children(proc, count=3)
        time.sleep(3.0)  # the sessions are open and clicking by now
        proc.send_signal(signum)  # to the load test only, not its process group
        assert proc.wait(timeout=60) == 130, (tmp_path / "loadtest.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [pid for pid in spawned if alive(pid)], "spawned processes left behind"
    assert "interrupted" in (tmp_path / "loadtest.log").read_text()


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_children(proc: subprocess.Popen[bytes], count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the load test exited early"
        found = children_of(proc.pid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"the load test did not start {count} processes")


def test_target_without_redis_takes_its_baseline_from_the_first_page(tmp_path: Path) -> None:
    """Against running servers and no --redis-url, the totals are judged from the pages
    alone: the first page, opened alone, must give the exact views baseline (a page may
    show its own view before or after counting it), however many views there were."""
    with Fleet(2, log_dir=tmp_path) as fleet:
        store = redis.Redis.from_url(fleet.redis.url)
        names = Names("counter-service")
        store.set(names.value("views"), 41)
        store.set(names.version("views"), 41)
        store.close()
        targets = [arg for server in fleet.servers for arg in ("--target", server.url)]
        for run in range(3):  # the first page's timing varies: it failed 2 runs in 3
            argv = [*COMMAND, *targets, "--sessions", "12", "--clickers", "2", "--rate", "10"]
            argv += ["--duration", "1", "--out", str(tmp_path / f"{run}.json"), "--no-progress"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_LIMIT_S)
            assert done.returncode == 0, done.stdout + done.stderr
            views = json.loads((tmp_path / f"{run}.json").read_text())["totals"]["views"]
            assert (views["start"], views["lost"], views["extra"]) == (41 + 12 * run, 0, 0)
