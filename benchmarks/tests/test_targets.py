"""The targets table judges a run's own rows, and leaves out what the run lacks."""

from __future__ import annotations

from benchmarks.targets import Records, table, verdicts


def scaling(cpu_a: float, cpu_r: float) -> Records:
    rows = {"a": [{"sessions": 1000, "server_cpu_per_update_us": cpu_a}]}
    rows["r"] = [{"sessions": 1000, "server_cpu_per_update_us": cpu_r}]
    return {"scaling": {"variants": rows}}


def test_the_fast_path_is_met_within_ten_percent_of_the_reference() -> None:
    (within,) = verdicts(scaling(54.0, 50.0))
    (beyond,) = verdicts(scaling(56.0, 50.0))
    assert (within.met, beyond.met) == (True, False)
    assert "1,000 sessions" in within.target
    assert "1.08x" in within.measured


def test_a_failed_variant_leaves_its_target_out() -> None:
    records = scaling(54.0, 50.0)
    records["scaling"]["variants"]["r"] = [{"note": "failed after 3s: boom"}]
    assert verdicts(records) == []


def test_memory_and_flood_are_judged_and_shown_as_a_markdown_table() -> None:
    memory = [{"sessions": 1000, "live_kb_per_session": 60.0, "second_round_kb_per_session": 0.4}]
    flood = {
        "calm_p99_ms": 10.0, "flood_p99_ms": 20.0, "p99_ratio": 2.0, "rss_start_mb": 90.0,
        "rss_peak_mb": 95.0, "rss_after_mb": 91.0, "rss_after_second_flood_mb": 91.5,
        "counted_1_to_3s_after": 0, "cpu_1_to_3s_after_pct": 1.0,
    }  # fmt: skip
    records: Records = {
        "memory": {"variants": {"a": memory}},
        "flood": {"variants": {"a": [flood]}},
    }
    met = [v.met for v in verdicts(records)]
    assert met == [True, True, True, None, True, False, True]
    lines = table(verdicts(records)).splitlines()
    assert lines[0] == "| issue | target | measured | met |"
    assert len(lines) == 2 + 7
    assert "91.5 MB (after the first: 91.0 MB) | measured |" in lines[5]
    assert "**no**" in lines[-2]


def test_figures_without_a_bound_are_shown_as_measured() -> None:
    rows = [
        {"topology": "one server", "requests_per_s": 30000.0},
        {"topology": "cluster, 3 masters", "requests_per_s": 45000.0},
    ]
    (verdict,) = verdicts({"shards": {"rows": rows}})
    assert not verdict.bounded
    assert "1.50x" in verdict.measured
    assert table([verdict]).endswith("| measured |")
