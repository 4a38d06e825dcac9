"""Drawing a result with matplotlib (Agg backend): latency percentiles per second and
the convergence curve after the last click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # the backend must be chosen first
from matplotlib.axes import Axes

Json = dict[str, Any]
SERIES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"))


def draw(result: Json, path: Path) -> None:
    """Write a two-panel PNG (or any format matplotlib infers from the suffix)."""
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    try:
        latency_panel(top, result["timeline"])
        convergence_panel(bottom, result["convergence"])
        figure.suptitle(_title(result))
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)


def _title(result: Json) -> str:
    options = result["options"]
    verdict = "PASS" if result["ok"] else "FAIL"
    return (
        f"{options['sessions']} sessions, {options['clickers']} clickers,"
        f" {options['rate']:g} clicks/s for {options['duration']:g}s: {verdict}"
    )


def latency_panel(axes: Axes, timeline: list[Json]) -> None:
    """Propagation latency percentiles, one point per second of clicking."""
    seconds = [bucket["second"] for bucket in timeline]
    for field, label in SERIES:
        axes.plot(seconds, [bucket[field] for bucket in timeline], marker=".", label=label)
    axes.set_xlabel("second since clicking began (by acknowledgement time)")
    axes.set_ylabel("propagation latency (ms)")
    axes.grid(alpha=0.3)
    if seconds:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no samples", ha="center", transform=axes.transAxes)


def convergence_panel(axes: Axes, convergence: Json) -> None:
    """Fraction of sessions showing the final totals against time after the last click."""
    curve = convergence["curve"]
    times = [0.0] + [point[0] for point in curve]
    fractions = [0.0] + [point[1] for point in curve]
    axes.step(times, fractions, where="post")
    timeout = convergence["timeout_s"]
    axes.axvline(timeout, color="red", linestyle="--", label=f"timeout ({timeout:g}s)")
    axes.set_xlim(0, max([*times, 0.001]) * 1.1)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("seconds after the last click")
    axes.set_ylabel("fraction of sessions converged")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
