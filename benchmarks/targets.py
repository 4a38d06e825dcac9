"""The issues' targets, judged against the rows of one run (every figure from that run).

Each check reads the rows it needs and says what it measured; a scenario or variant that
did not run leaves its targets out rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks.report import fmt

Row = dict[str, Any]
CPU = "server_cpu_per_update_us"
Records = dict[str, dict[str, Any]]
"""Scenario name -> the JSON record the run appended for it."""


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, what the run measured, and whether that meets it."""

    issue: int
    target: str
    measured: str
    met: bool | None
    """None when the run cannot tell (a figure is missing)."""
    bounded: bool = True
    """False for a figure the issue asks to measure without setting a bound."""


def _rows(records: Records, scenario: str, variant: str | None = None) -> list[Row]:
    record = records.get(scenario) or {}
    rows = record.get("rows") if variant is None else record.get("variants", {}).get(variant)
    return [row for row in rows or [] if "note" not in row or len(row) > 1]


def _at(rows: list[Row], sessions: int) -> Row | None:
    return next((row for row in rows if row.get("sessions") == sessions), None)


def _pair(first: list[Row], second: list[Row]) -> tuple[int, Row, Row] | None:
    """The rows of the largest session count both lists measured (1,000 in a full run)."""
    common = {r.get("sessions") for r in first} & {r.get("sessions") for r in second}
    sizes = [size for size in common if isinstance(size, int)]
    if not sizes:
        return None
    size = max(sizes)
    a, b = _at(first, size), _at(second, size)
    return None if a is None or b is None else (size, a, b)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def _fast_path(records: Records) -> Iterator[Verdict]:
    for scenario in ("scaling",):  # fanout clicks 5 times: too few 10 ms CPU ticks
        pair = _pair(_rows(records, scenario, "a"), _rows(records, scenario, "r"))
        if pair is None:
            continue
        size, now, before = pair
        a, r = now.get(CPU), before.get(CPU)
        ratio = _ratio(a, r)
        measured = f"(a) {fmt(a)} us vs (r) {fmt(r)} us: {fmt(ratio)}x"
        target = f"{scenario}: server CPU per update at {size:,} sessions within 10% of (r)"
        yield Verdict(6, target, measured, _check(ratio, lambda x: x <= 1.10))


def _pubsub(records: Records) -> Iterator[Verdict]:
    pair = _pair(_rows(records, "pubsub", "p"), _rows(records, "pubsub", "f"))
    if pair is None:
        return
    size, ours, flets = pair
    p, f = ours.get(CPU), flets.get(CPU)
    ratio = _ratio(p, f)
    measured = f"(p) {fmt(p)} us vs (f) {fmt(f)} us: {fmt(ratio)}x"
    target = f"send_all_on_topic to {size:,} sessions: CPU per message <= 1.2x Flet's hub"
    yield Verdict(6, target, measured, _check(ratio, lambda x: x <= 1.2))
    last = ours.get("median_last_s")
    shown = "-" if last is None else f"{fmt(last * 1e3)} ms (Flet's hub: {_ms(flets)})"
    met = _check(last, lambda x: x <= 0.150)
    yield Verdict(6, f"... the last of {size:,} sessions sees it within 150 ms", shown, met)


def _ms(row: Row) -> str:
    last = row.get("median_last_s")
    return "-" if last is None else f"{fmt(last * 1e3)} ms"


def _flood(records: Records) -> Iterator[Verdict]:
    rows = _rows(records, "flood", "a")
    if not rows:
        return
    row = rows[0]
    ratio = row.get("p99_ratio")
    yield Verdict(
        9,
        "a flood: the others' click p99 under 3x its calm value",
        f"{fmt(row.get('calm_p99_ms'))} -> {fmt(row.get('flood_p99_ms'))} ms: {fmt(ratio)}x",
        _check(ratio, lambda x: x < 3),
    )
    start, peak, after = row.get("rss_start_mb"), row.get("rss_peak_mb"), row.get("rss_after_mb")
    grown = None if start is None or peak is None else peak - start
    yield Verdict(
        9,
        "... RSS grows by less than 50 MB",
        f"{start} -> peak {peak} MB",
        _check(grown, lambda x: x < 50),
    )
    back = _ratio(after, start)
    yield Verdict(
        9,
        "... and returns within 10% of its start",
        f"{fmt(after)} MB after ({fmt(back)}x)",
        _check(back, lambda x: x <= 1.10),
    )
    again = row.get("rss_after_second_flood_mb")
    yield Verdict(
        9,
        "... a second flood, as long: RSS after it (what the first left is reused)",
        f"{fmt(again)} MB (after the first: {fmt(after)} MB)",
        None,
        bounded=False,
    )
    counted, cpu = row.get("counted_1_to_3s_after"), row.get("cpu_1_to_3s_after_pct")
    yield Verdict(
        9,
        "... and costs nothing from 1 s after it ended",
        f"{counted} clicks counted, {cpu}% CPU 1-3 s after",
        None if counted is None or cpu is None else counted == 0 and cpu < 5,
    )


def _memory(records: Records) -> Iterator[Verdict]:
    for row in _rows(records, "memory", "a"):
        sessions = row.get("sessions")
        live, kept = row.get("live_kb_per_session"), row.get("second_round_kb_per_session")
        yield Verdict(
            9,
            f"{sessions} sessions: at most 45 KB of RSS per live session",
            f"{live} KB",
            _check(live, lambda x: x <= 45),
        )
        yield Verdict(
            9,
            f"{sessions} sessions: nothing left per expired session (a second round adds 0)",
            f"{kept} KB per session",
            _check(kept, lambda x: x <= 2),
        )


def _cluster(records: Records) -> Iterator[Verdict]:
    rows = {row.get("topology"): row for row in _rows(records, "shards")}
    one, three = rows.get("one server"), rows.get("cluster, 3 masters")
    if one and three:
        k, a = three.get("requests_per_s"), one.get("requests_per_s")
        measured = f"{fmt(k)} vs {fmt(a)}/s ({fmt(_ratio(k, a))}x)"
        target = "increments/s: 3-master cluster vs one server"
        yield Verdict(8, target, measured, None, bounded=False)
    pair = _pair(_rows(records, "scaling", "k"), _rows(records, "scaling", "a"))
    if pair:
        size, cluster, ours = pair
        measured = f"(k) {fmt(cluster.get(CPU))} vs (a) {fmt(ours.get(CPU))} us"
        target = f"fan-out CPU per update at {size:,} sessions: cluster vs one server"
        yield Verdict(8, target, measured, None, bounded=False)


def _wait(records: Records) -> Iterator[Verdict]:
    rows = _rows(records, "wait")
    for callers in sorted({int(row["callers"]) for row in rows if row.get("callers")}):
        pair = [row for row in rows if row.get("callers") == callers]
        if len(pair) != 2:
            continue
        plain, waited = pair
        ratio = _ratio(waited.get("increments_per_s"), plain.get("increments_per_s"))
        measured = (
            f"p50 {fmt(plain.get('p50_ms'))} -> {fmt(waited.get('p50_ms'))} ms,"
            f" {fmt(ratio)}x the increments/s"
        )
        target = f"the price of WAIT 1, {callers} caller(s)"
        yield Verdict(8, target, measured, None, bounded=False)


CHECKS = (_fast_path, _pubsub, _flood, _memory, _cluster, _wait)


def verdicts(records: Records) -> list[Verdict]:
    """Every target this run has the rows for."""
    return [verdict for check in CHECKS for verdict in check(records)]


def _met(met: bool | None) -> str:
    if met is None:
        return "unknown"
    return "yes" if met else "**no**"


def table(found: list[Verdict]) -> str:
    """A Markdown table of the verdicts ("measured" only where the issue sets no bound)."""
    lines = ["| issue | target | measured | met |", "| --- | --- | --- | --- |"]
    for v in found:
        met = "measured" if not v.bounded else _met(v.met)
        lines.append(f"| {v.issue} | {v.target} | {v.measured} | {met} |")
    return "\n".join(lines)
