"""Plain-text (Markdown) tables of results, the machine's description, and JSON lines."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

Column = tuple[str, str]
"""(header, key in the row)."""

COLUMNS: dict[str, list[Column]] = {
    "fanout": [
        ("sessions", "sessions"),
        ("median last-seen ms", "median_last_ms"),
        ("clicks seen by all", "complete"),
        ("delivered", "delivered_pct"),
        ("server CPU us/update", "server_cpu_per_update_us"),
        ("open s", "open_s"),
        ("note", "note"),
    ],
    "scaling": [
        ("sessions", "sessions"),
        ("clicks", "clicks"),
        ("server CPU ms/broadcast", "server_cpu_per_broadcast_ms"),
        ("server CPU us/update", "server_cpu_per_update_us"),
        ("redis CPU us/update", "redis_cpu_per_update_us"),
        ("sessions/core @1/s", "sessions_per_core_at_1_per_s"),
        ("sessions/core @10/s", "sessions_per_core_at_10_per_s"),
        ("delivered", "delivered_pct"),
        ("note", "note"),
    ],
    "pubsub": [
        ("sessions", "sessions"),
        ("messages", "clicks"),
        ("median last-seen ms", "median_last_ms"),
        ("server CPU us/message delivered", "server_cpu_per_update_us"),
        ("redis CPU us/message delivered", "redis_cpu_per_update_us"),
        ("delivered", "delivered_pct"),
        ("note", "note"),
    ],
    "flood": [
        ("calm p99 ms", "calm_p99_ms"),
        ("p99 ms with the flood", "flood_p99_ms"),
        ("ratio", "p99_ratio"),
        ("timeouts", "timeouts"),
        ("flood clicks sent", "flood_clicks_sent"),
        ("flood connections", "flood_connections"),
        ("flood clicks counted", "flood_clicks_counted"),
        ("counted during the flood", "counted_during_flood"),
        ("counted 1-3 s after", "counted_1_to_3s_after"),
        ("worker CPU 1-3 s after", "cpu_1_to_3s_after_pct"),
        ("RSS start MB", "rss_start_mb"),
        ("RSS peak MB", "rss_peak_mb"),
        ("RSS after MB", "rss_after_mb"),
        ("RSS after a second flood MB", "rss_after_second_flood_mb"),
        ("note", "note"),
    ],
    "memory": [
        ("sessions", "sessions"),
        ("RSS base MB", "rss_base_mb"),
        ("KB per live session", "live_kb_per_session"),
        ("KB per departed session", "departed_kb_per_session"),
        ("KB the allocator keeps per expired session", "kept_kb_per_session"),
        ("KB a second round adds per session", "second_round_kb_per_session"),
        ("note", "note"),
    ],
    "lost": [
        ("clients", "clients"),
        ("sent in s", "sent_s"),
        ("expected", "expected"),
        ("final", "final"),
        ("lost", "lost"),
        ("converged per process", "converged_text"),
        ("decreases (clients)", "decreases_text"),
        ("all pages final after s", "all_show_final_after_s"),
        ("server tracebacks", "server_tracebacks"),
        ("note", "note"),
    ],
    "throughput": [
        ("clients", "clients"),
        ("sent", "sent"),
        ("applied in window", "applied"),
        ("applied clicks/s", "applied_per_s"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("timeouts", "timeouts"),
        ("applied later", "applied_later"),
        ("never applied", "never_applied"),
        ("all pages final after s", "all_show_final_after_s"),
        ("server CPU s", "server_cpu_s"),
        ("server tracebacks", "server_tracebacks"),
        ("note", "note"),
    ],
    "connections": [
        ("sessions", "sessions"),
        ("Redis connections", "redis_connections"),
        ("per session", "per_session"),
        ("note", "note"),
    ],
    "redis": [
        ("command", "command"),
        ("requests/s", "requests_per_s"),
        ("p50 ms", "p50_ms"),
        ("note", "note"),
    ],
    "shards": [
        ("increments/s", "requests_per_s"),
        ("p50 ms", "p50_ms"),
        ("redis-server CPU %", "redis_cpu_pct"),
        ("busiest shard CPU %", "busiest_shard_cpu_pct"),
        ("redis-benchmark CPU %", "client_cpu_pct"),
        ("counted / sent", "counted_text"),
        ("note", "note"),
    ],
    "wait": [
        ("acknowledged", "acknowledged"),
        ("callers", "callers"),
        ("increments/s", "increments_per_s"),
        ("p50 ms", "p50_ms"),
        ("p99 ms", "p99_ms"),
        ("not replicated in time", "not_replicated"),
        ("note", "note"),
    ],
}


def derived(row: dict[str, Any]) -> dict[str, Any]:
    """Display-only fields computed from a result row."""
    extra: dict[str, Any] = {}
    if row.get("median_last_s") is not None:
        extra["median_last_ms"] = row["median_last_s"] * 1e3
    elif row.get("median_last_partial_s") is not None:
        extra["median_last_ms"] = f"never all ({row['median_last_partial_s'] * 1e3:.0f} to last)"
    if "complete_clicks" in row:
        extra["complete"] = f"{row['complete_clicks']}/{row['clicks']}"
    if row.get("delivered_share") is not None:
        extra["delivered_pct"] = f"{row['delivered_share'] * 100:.0f}%"
    if "converged" in row:
        pairs = zip(row["converged"], row["clients_per_server"], strict=True)
        extra["converged_text"] = " + ".join(f"{c}/{n}" for c, n in pairs)
        extra["decreases_text"] = f"{row['decreases']} ({row['clients_with_decrease']})"
    if "counted" in row:
        extra["counted_text"] = f"{row['counted']}/{row['requests']}"
    if "all_show_final_after_s" in row and row["all_show_final_after_s"] is None:
        extra["all_show_final_after_s"] = "never"
    if row.get("top_exception") and not row.get("note"):
        extra["note"] = f"most frequent: {row['top_exception'][:120]}"
    return extra


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def table(
    scenario: str, results: Sequence[tuple[str, dict[str, Any]]], first: str = "variant"
) -> str:
    """A Markdown table: one line per (label, row); `first` heads the labels' column."""
    columns = [(first, "variant"), *COLUMNS[scenario]]
    rows = [{"variant": label, **row, **derived(row)} for label, row in results]
    used = [c for c in columns if c[1] != "note" or any(r.get("note") for r in rows)]
    lines = [
        "| " + " | ".join(header for header, _ in used) + " |",
        "|" + "|".join(" --- " for _ in used) + "|",
    ]
    lines += ["| " + " | ".join(fmt(r.get(key)) for _, key in used) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "flet": _version("flet"),
        "python-socketio": _version("python-socketio"),
        "uvicorn": _version("uvicorn"),
        "redis-py": _version("redis"),
        "redis_server": _redis_server_version(),
        **_revision(),
    }


def _revision() -> dict[str, Any]:
    """The commit measured, and files of the app (a) changed on top of it."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        changed = _git("status", "--porcelain", "--", "counter_service", "ui").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": commit, "uncommitted_app_changes": [line[3:] for line in changed]}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.rstrip()  # porcelain lines start with a space


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _redis_server_version() -> str | None:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return None
    return next((part[2:] for part in out.split() if part.startswith("v=")), out.strip())


def append_json(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON object as one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(record, default=str) + "\n")
