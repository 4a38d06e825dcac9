import json
from pathlib import Path
from typing import Any

from benchmarks import report


def test_table_is_markdown_with_derived_columns() -> None:
    rows: list[tuple[str, dict[str, Any]]] = [
        ("(a) x", {"sessions": 100, "median_last_s": 0.0123, "complete_clicks": 5, "clicks": 5,
                   "delivered_share": 1.0, "server_cpu_per_update_us": 61.25, "open_s": 1.0}),
        ("(b) y", {"sessions": 100, "median_last_s": None, "median_last_partial_s": 0.05,
                   "complete_clicks": 0, "clicks": 5, "delivered_share": 0.5}),
    ]  # fmt: skip
    lines = report.table("fanout", rows).splitlines()
    assert lines[0].startswith("| variant | sessions | median last-seen ms |")
    assert "note" not in lines[0]
    assert lines[2] == "| (a) x | 100 | 12.3 | 5/5 | 100% | 61.2 | 1.00 |"
    assert lines[3] == "| (b) y | 100 | never all (50 to last) | 0/5 | 50% | - | - |"


def test_table_shows_notes_and_exceptions() -> None:
    rows: list[tuple[str, dict[str, Any]]] = [
        ("(a) x", {"clients": 20, "server_tracebacks": 2, "top_exception": "KeyError: 'k'"}),
        ("(b) y", {"note": "stopped"}),
    ]
    text = report.table("throughput", rows)
    assert "most frequent: KeyError: 'k'" in text
    assert "| stopped |" in text


def test_fmt() -> None:
    assert report.fmt(None) == "-"
    assert report.fmt(1234.5) == "1,234"
    assert report.fmt(12.34) == "12.3"
    assert report.fmt(0.1234) == "0.12"
    assert report.fmt(7) == "7"


def test_append_json_appends_lines(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "results.jsonl"
    report.append_json(out, {"a": 1})
    report.append_json(out, {"b": Path("/x")})
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": 1}, {"b": "/x"}]


def test_machine_names_the_versions() -> None:
    info = report.machine()
    assert info["nproc"]
    assert info["flet"]
    assert info["python"]
