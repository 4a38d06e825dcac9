"""Presenting a result: rich summary tables on the terminal and the JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

Json = dict[str, Any]
LATENCY_COLUMNS = ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")


def write_json(result: Json, path: Path) -> None:
    """Write the result to `path` atomically (a complete file or none)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)


def print_summary(result: Json, console: Console) -> None:
    """Print the overview, latency and totals tables, then the verdict."""
    console.print(overview_table(result))
    console.print(latency_table(result))
    console.print(totals_table(result))
    for note in result["warnings"]:
        console.print(f"[yellow]warning[/]: {note}")
    if result["ok"]:
        console.print("[bold green]PASS[/]: nothing lost, every session converged")
    else:
        console.print("[bold red]FAIL[/]: " + "; ".join(result["problems"]))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def overview_table(result: Json) -> Table:
    table = Table(title="counter-service loadtest", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in _overview_rows(result):
        table.add_row(label, value)
    return table


def _overview_rows(result: Json) -> list[tuple[str, str]]:
    sessions, clicks, conv = result["sessions"], result["clicks"], result["convergence"]
    ack = clicks["ack_latency"]
    return [
        ("targets", ", ".join(t["url"] for t in result["targets"]["urls"])),
        ("sessions", _sessions_line(sessions)),
        ("replicas", _replicas_line(result["replicas"])),
        ("clicks", _clicks_line(clicks)),
        (
            "ack latency ms",
            f"p50 {_fmt(ack['p50_ms'])}  p99 {_fmt(ack['p99_ms'])}  max {_fmt(ack['max_ms'])}",
        ),
        (
            "converged",
            f"{conv['converged']}/{conv['sessions']} within {conv['timeout_s']:g}s;"
            f" all after {_seconds(conv['all_converged_after_s'])}",
        ),
        ("redis connections", _redis_line(result["redis"])),
        *((f"loop lag {s['url']}", _lag_line(s)) for s in result["servers"]),
        ("loop lag (this client)", f"max {_fmt(result['client']['event_loop_lag_max_ms'])} ms"),
    ]


def _sessions_line(sessions: Json) -> str:
    line = f"{sessions['connected']} connected, {sessions['failed']} failed"
    line += f" of {sessions['requested']}"
    for reason, count in list(sessions["failures"].items())[:3]:
        line += f"\n  {count}x {reason}"
    for message, count in list(sessions["page_errors"].items())[:3]:
        line += f"\n  {count} pages show: {message}"
    return line


def _replicas_line(replicas: Json) -> str:
    line = f"{replicas['count']} served the sessions"
    for name, count in replicas["sessions"].items():
        line += f"\n  {count} on {name}"
    if replicas["unknown"]:
        line += f"\n  {replicas['unknown']} pages named no replica"
    return line


def _clicks_line(clicks: Json) -> str:
    line = f"{clicks['sent']} sent (of {clicks['planned']} planned), "
    line += f"{clicks['acknowledged']} acknowledged, {clicks['errored']} errored"
    for reason, count in list(clicks["errors"].items())[:3]:
        line += f"\n  {count}x {reason}"
    return line


def _redis_line(redis: Json) -> str:
    if redis["url"] is None:
        return str(redis["status"])
    return f"max {redis['connections_max']} (pub/sub {redis['pubsub_connections_max']})"


def _lag_line(server: Json) -> str:
    if server["samples"]:
        p99, top = server["event_loop_lag_p99_ms_max"], server["event_loop_lag_max_ms"]
        failed = f" ({server['polls_failed']} polls failed)" if server["polls_failed"] else ""
        whole = f"whole run: p99 up to {_fmt(p99)} ms, max {_fmt(top)} ms{failed}"
        return _clicking_lag(server) + whole
    return str(server["event_loop_lag"])


def _clicking_lag(server: Json) -> str:
    lag = server.get("event_loop_lag_while_clicking")
    if lag is None:
        return ""
    covered = f" ({lag['window_s']:.0f} s)" if "window_s" in lag else ""
    return (
        f"clicking{covered}: p50 <= {_fmt(lag['p50_le_ms'])}, p99 <= {_fmt(lag['p99_le_ms'])} ms; "
    )


def latency_table(result: Json) -> Table:
    prop = result["propagation"]
    table = Table(title=f"propagation latency ({prop['split']})")
    table.add_column("sessions")
    for column in LATENCY_COLUMNS:
        table.add_column(column.replace("_ms", " ms"), justify="right")
    for group in ("same_process", "other_process", "unknown", "all"):
        if group in prop:
            table.add_row(group.replace("_", " "), *(_fmt(prop[group][c]) for c in LATENCY_COLUMNS))
    return table


def totals_table(result: Json) -> Table:
    totals = result["totals"]
    table = Table(title=f"final totals (baseline from {totals['baseline_from']})")
    for column in ("counter", "start", "expected", "observed", "lost", "extra", "sessions ok"):
        table.add_column(column, justify="right")
    for name in ("clicks", "views", "online"):
        c = totals[name]
        observed = f"{_fmt(c['observed'])} ({c['observed_from']})"
        shown = f"{c['sessions_showing_expected']}/{c['sessions']}"
        table.add_row(
            name,
            str(c["start"]),
            str(c["expected"]),
            observed,
            str(c["lost"]),
            str(c["extra"]),
            shown,
        )
    return table
