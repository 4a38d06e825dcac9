"""The load test's JSON result, summary tables and plot, from a synthetic run. No servers."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from counter_service.devtools.headless import HeadlessSession
from counter_service.devtools.loadtest import plot, report, result
from counter_service.devtools.loadtest.clicker import Click
from counter_service.devtools.loadtest.options import add_arguments, from_args
from counter_service.devtools.loadtest.runner import RunRecord
from counter_service.devtools.loadtest.targets import Target, Targets

TOP_LEVEL = {
    "schema", "tool", "finished_at_unix", "options", "targets", "fleet", "sessions", "replicas",
    "clicks",
    "propagation", "timeline", "totals", "convergence", "redis", "servers", "client", "ok",
    "problems", "exit_status", "online_after_close", "warnings",
}  # fmt: skip
LATENCY = {"count", "p50_ms", "p90_ms", "p99_ms", "max_ms"}


def synthetic_run(tmp_path: Path, final_clicks: int = 2) -> RunRecord:
    """Three sessions on two processes; session 0 clicked twice (values 1 and 2)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--spawn", "2", "--sessions", "3", "--clickers", "1", "--rate", "2", "--duration", "1"]
    argv += ["--out", str(tmp_path / "r.json")]
    options = from_args(parser.parse_args(argv))
    urls = (Target("http://127.0.0.1:1", "pid 1"), Target("http://127.0.0.1:2", "pid 2"))
    record = RunRecord.new(options, Targets(urls, split_known=True, redis_url=None))
    record.baseline = {"clicks": 0, "views": 0, "online": 0}
    record.baseline_from = "sessions"
    record.tally.started_at, record.tally.planned = 10.0, 2
    record.tally.clicks = [Click(0, 10.0, 1), Click(0, 10.5, 2)]
    record.last_click_at, record.finished_at = 10.5, 12.0
    record.started_at = 9.0
    histories = [[(10.01, 1), (10.52, 2)], [(10.03, 1), (10.55, 2)], [(10.60, 2)]]
    for slot, clicks in zip(record.slots, histories, strict=True):
        slot.registered = True
        for key in ("views", "online"):
            slot.recorder(key, "3", 9.5)
        slot.recorder("clicks", "0", 9.5)
        for at, value in clicks:
            slot.recorder("clicks", str(min(value, final_clicks)), at)
    record.converged_at = {0: 0.02, 1: 0.05, 2: 0.1}
    return record


def test_a_clean_run_passes_with_the_documented_shape(tmp_path: Path) -> None:
    outcome = result.build(synthetic_run(tmp_path))
    assert set(outcome) == TOP_LEVEL
    assert (outcome["ok"], outcome["problems"], outcome["exit_status"]) == (True, [], 0)
    assert outcome["sessions"] == {
        "requested": 3, "opened": 3, "connected": 3, "failed": 0, "live_at_end": 3,
        "failures": {}, "page_errors": {},
    }  # fmt: skip
    clicks = outcome["clicks"]
    assert (clicks["planned"], clicks["sent"], clicks["acknowledged"], clicks["errored"]) == (
        2, 2, 2, 0,
    )  # fmt: skip
    assert clicks["ack_latency"] == {
        "count": 2, "p50_ms": 10.0, "p90_ms": 20.0, "p99_ms": 20.0, "max_ms": 20.0,
    }  # fmt: skip
    propagation = outcome["propagation"]
    assert set(LATENCY) <= set(propagation["same_process"])
    assert propagation["split"] == "by process"
    assert propagation["all"]["count"] == 4
    assert (propagation["same_process"]["max_ms"], propagation["other_process"]["max_ms"]) == (
        590.0,
        30.0,
    )
    for name, expected in (("clicks", 2), ("views", 3), ("online", 3)):
        check = outcome["totals"][name]
        assert (check["expected"], check["observed"], check["lost"], check["extra"]) == (
            expected, expected, 0, 0,
        )  # fmt: skip
        assert check["sessions_showing_expected"] == 3
    assert outcome["convergence"]["all_converged"]
    assert outcome["convergence"]["curve"][-1] == [0.1, 1.0]
    assert outcome["redis"]["url"] is None
    assert [t["process"] for t in outcome["targets"]["urls"]] == ["pid 1", "pid 2"]
    assert (outcome["replicas"]["count"], outcome["replicas"]["unknown"]) == (0, 3)
    assert all(set(bucket) == {"second"} | LATENCY for bucket in outcome["timeline"])
    assert json.loads(json.dumps(outcome)) == outcome


def page_naming(worker: str) -> HeadlessSession:
    """A session (never connected) whose page names `worker` as its replica."""
    session = HeadlessSession(None, "/")  # type: ignore[arg-type]  # never sends or reads
    replica = {"_c": "Text", "_i": 2, "key": "replica", "value": worker}
    session.tree.load({"_c": "Page", "_i": 1, "controls": [replica]})
    return session


def test_behind_one_load_balancer_sessions_are_split_by_the_replica_their_page_names(
    tmp_path: Path,
) -> None:
    record = synthetic_run(tmp_path)
    balancer = Target("http://127.0.0.1:8080", "unknown")
    record.targets = Targets((balancer,), split_known=False, redis_url=None)
    for slot, worker in zip(record.slots, ["host-1-a", "host-2-b", "host-1-a"], strict=True):
        slot.target, slot.session = balancer, page_naming(worker)
    outcome = result.build(record)
    replicas = outcome["replicas"]
    assert replicas["sessions"] == {"host-1-a": 2, "host-2-b": 1}
    assert (replicas["count"], replicas["unknown"]) == (2, 0)
    propagation = outcome["propagation"]
    assert propagation["split"] == "by process"
    assert (propagation["same_process"]["max_ms"], propagation["other_process"]["max_ms"]) == (
        590.0,
        30.0,
    )
    out = io.StringIO()
    report.print_summary(outcome, Console(file=out, width=120))
    assert "2 on host-1-a" in out.getvalue()


def test_a_lost_click_and_a_failed_session_fail_the_run(tmp_path: Path) -> None:
    record = synthetic_run(tmp_path, final_clicks=1)
    record.slots[2].failure = "TimeoutError: register response not met"
    record.converged_at = {0: None, 1: None}
    outcome = result.build(record)
    assert outcome["exit_status"] == 1
    assert not outcome["ok"]
    assert outcome["totals"]["clicks"]["lost"] == 1
    assert outcome["clicks"]["errors"] == {"never acknowledged": 1}
    assert outcome["problems"] == [
        "1 of 3 sessions failed",
        "1 clicks errored",
        "clicks: 1 lost (expected 2)",
        "online: 1 extra (expected 2)",
        "2 sessions did not converge within 10.0s",
    ]


def test_leftover_online_and_a_lagging_client_are_warnings(tmp_path: Path) -> None:
    record = synthetic_run(tmp_path)
    record.online_after_close = (2, 5.0)
    record.monitors.loop.max_ms = 250.0
    record.slots[1].recorder("status", "The counter store is unreachable right now", 11.0)
    outcome = result.build(record)
    assert outcome["ok"]
    assert outcome["online_after_close"] == {"expected": 0, "observed": 2, "waited_s": 5.0}
    assert outcome["warnings"] == [
        "online still 2 (not 0) 5.0s after every session closed",
        "this client's event loop lagged up to 250 ms: latencies include it",
    ]
    errors = outcome["sessions"]["page_errors"]
    assert errors == {"page status: The counter store is unreachable right now": 1}


def test_an_aborted_run_says_why(tmp_path: Path) -> None:
    record = synthetic_run(tmp_path)
    record.aborted = "the run exceeded its time bound of 99s"
    assert result.build(record)["problems"] == ["the run exceeded its time bound of 99s"]


def test_redis_urls_are_shown_without_password() -> None:
    assert (
        result.redact("redis://user:s3cret@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    )
    assert result.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("clean", [True, False])
def test_summary_tables_render(tmp_path: Path, clean: bool) -> None:
    outcome = result.build(synthetic_run(tmp_path, final_clicks=2 if clean else 1))
    out = io.StringIO()
    report.print_summary(outcome, Console(file=out, width=120))
    text = out.getvalue()
    assert "same process" in text
    assert "other process" in text
    assert "final totals" in text
    assert ("PASS" in text) == clean
    assert ("FAIL" in text) != clean


def test_json_and_plot_files_are_written(tmp_path: Path) -> None:
    outcome = result.build(synthetic_run(tmp_path))
    report.write_json(outcome, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == outcome
    plot.draw(outcome, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]
