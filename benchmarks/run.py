"""Run the benchmark scenarios against every variant in one command.

    python -m benchmarks.run [--scenario NAME[,NAME]] [--variants a,r,u,b,c,d,p,f] [--quick]
                             [--out FILE.jsonl]

Each scenario starts, for each variant, one fresh redis-server and two server processes,
runs, stops them by PID, prints a Markdown table and appends one JSON line to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import report, targets
from benchmarks.redis_topologies import STANDALONE
from benchmarks.scenarios import (
    SCENARIO_CAP_S,
    SCENARIO_ENV,
    SCENARIOS,
    Config,
    Row,
    inapplicable,
    redis_script_vs_incr,
)
from benchmarks.variants import VARIANTS, Variant, parse_variants, running_fleet

DEFAULT_OUT = Path("benchmarks/results.jsonl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--scenario",
        default="all",
        help=f"comma-separated, from {', '.join(ALL_SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated (default {','.join(VARIANTS)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, about two minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines appended here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' log files")
    return parser


ALL_SCENARIOS = (*SCENARIOS, *STANDALONE)


def parse_scenarios(text: str) -> list[str]:
    if text == "all":
        return list(ALL_SCENARIOS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_SCENARIOS]
    if unknown or not names:
        raise ValueError(
            f"unknown scenarios {unknown or text!r}; choose from {', '.join(ALL_SCENARIOS)}"
        )
    return names


async def run_variant(
    scenario: str, variant: Variant, cfg: Config, keep_logs: bool = False
) -> list[Row]:
    """One variant in one scenario, within `cfg.variant_cap_s`; failures become a row."""
    reason = inapplicable(scenario, variant)
    if reason is not None:
        return [{"note": reason}]
    started = time.monotonic()
    env = SCENARIO_ENV.get(scenario)
    cap = max(cfg.variant_cap_s, SCENARIO_CAP_S.get(scenario, 0.0))
    try:
        async with asyncio.timeout(cap), running_fleet(variant, keep_logs, env) as fleet:
            rows = await SCENARIOS[scenario](fleet, cfg)
            problems = fleet.log_problems()
            if problems["server_tracebacks"] and "server_tracebacks" not in rows[-1]:
                note = (
                    f"{problems['server_tracebacks']} errors with tracebacks in the server logs"
                    f" (opening and closing sessions included); most often:"
                    f" {problems['top_exception']}"
                )
                rows.append({"note": note, **problems})
            if not all(fleet.running()):
                tails = "; ".join(f"{k}: {v[-300:]}" for k, v in fleet.log_tails().items())
                rows.append({"note": f"a server process died: {tails}"})
            return rows
    except TimeoutError:
        return [{"note": f"stopped after the {cap:.0f}s cap"}]
    except Exception as exc:
        return [{"note": f"failed after {time.monotonic() - started:.0f}s: {exc!r}"[:400]}]


async def run(
    scenarios: Sequence[str],
    variants: Sequence[Variant],
    cfg: Config,
    out: Path,
    keep_logs: bool = False,
) -> None:
    base = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.run", *sys.argv[1:]]),
        "machine": report.machine(),
        "quick": cfg.fanout_sizes == Config.quick().fanout_sizes,
    }
    print(f"machine: {base['machine']}", flush=True)
    records: targets.Records = {}
    for scenario in scenarios:
        if scenario in STANDALONE:
            records[scenario] = await run_standalone(scenario, cfg, out, base)
            continue
        started = time.monotonic()
        results: list[tuple[str, dict[str, Any]]] = []
        record: dict[str, Any] = {**base, "scenario": scenario, "variants": {}}
        for variant in variants:
            label = f"({variant.key}) {variant.label}"
            print(f"[{scenario}] {label} ...", end=" ", flush=True)
            began = time.monotonic()
            rows = await run_variant(scenario, variant, cfg, keep_logs)
            print(f"{time.monotonic() - began:.0f}s", flush=True)
            record["variants"][variant.key] = rows
            results += [(label, row) for row in rows]
        print(f"\n## {scenario} ({time.monotonic() - started:.0f}s)\n")
        print(report.table(scenario, results), flush=True)
        if scenario == "throughput":
            redis_rows = await asyncio.to_thread(redis_script_vs_incr, cfg)
            record["redis_benchmark"] = redis_rows
            print("\nredis-benchmark, 50 clients, no pipelining, no subscribers:\n")
            print(report.table("redis", [("redis", row) for row in redis_rows]), flush=True)
        record["seconds"] = round(time.monotonic() - started, 1)
        report.append_json(out, record)
        records[scenario] = record
        print()
    found = targets.verdicts(records)
    if found:
        print("## the issues' targets, in this run\n")
        print(targets.table(found), flush=True)


async def run_standalone(
    scenario: str, cfg: Config, out: Path, base: dict[str, Any]
) -> dict[str, Any]:
    """A scenario of Redis alone: its own servers, no variants; one row per topology."""
    print(f"[{scenario}] ...", end=" ", flush=True)
    started = time.monotonic()
    rows = await asyncio.to_thread(STANDALONE[scenario], cfg.topologies)
    seconds = time.monotonic() - started
    print(f"{seconds:.0f}s\n\n## {scenario} ({seconds:.0f}s)\n")
    labelled = [(row.get("topology", "?"), row) for row in rows]
    print(report.table(scenario, labelled, first="topology"), flush=True)
    record = {**base, "scenario": scenario, "rows": rows, "seconds": round(seconds, 1)}
    report.append_json(out, record)
    print()
    return record


def _raise_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops its processes


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        scenarios = parse_scenarios(args.scenario)
        variants = parse_variants(args.variants)
    except ValueError as exc:
        sys.exit(f"benchmarks.run: {exc}")
    cfg = Config.quick() if args.quick else Config()
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    raise_fd_limit()
    started = time.monotonic()
    # The Socket.IO client logs an error for each connection it closes; nothing is wrong.
    logging.getLogger("engineio.client").setLevel(logging.CRITICAL)
    asyncio.run(run(scenarios, variants, cfg, args.out, args.keep_logs))
    print(f"total {time.monotonic() - started:.0f}s; results appended to {args.out}")


if __name__ == "__main__":
    main()
