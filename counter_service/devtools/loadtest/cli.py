"""The `loadtest` subcommand: its parser, and `run` from parsed arguments to exit status."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from counter_service.devtools.loadtest.options import (
    LoadTestOptions,
    OptionsError,
    add_arguments,
    from_args,
)

DESCRIPTION = (
    "Open many headless sessions against running servers (--target) or a local fleet"
    " (--spawn N), click at a steady rate, and check that every session converges on the"
    " exact totals. Exit status: 0 pass, 1 fail, 2 usage error, 130 interrupted."
)
DEFINITIONS = """definitions:
  acknowledged  the k-th click sent in the run (all clickers) is acknowledged when its own
                session shows clicks >= baseline + k within --ack-timeout
  propagation   from a click's acknowledgement until each other session shows a value at
                least as high; split by same/other server process when known
  converged     a session shows the expected clicks (baseline + sent), views (baseline +
                sessions opened) and online (baseline + sessions open) totals; timed from
                the last click sent
"""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
INTERRUPTED = 130


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `loadtest` subcommand to the `counter-service` subcommands."""
    parser = commands.add_parser(
        "loadtest",
        help="load-test servers and check the totals",
        description=DESCRIPTION,
        epilog=DEFINITIONS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run a load test from parsed arguments; return the exit status."""
    try:
        options = from_args(args)
    except OptionsError as exc:
        print(f"counter-service loadtest: error: {exc}", file=sys.stderr)
        return 2
    try:
        with _sigterm_as_sigint():
            return _run(options)
    except KeyboardInterrupt:
        print("counter-service loadtest: interrupted; started processes stopped", file=sys.stderr)
        return INTERRUPTED


def _run(options: LoadTestOptions) -> int:
    from rich.console import Console

    from counter_service.devtools.fleet import FleetError
    from counter_service.devtools.loadtest import report, result

    try:
        record = _execute(options, Console(stderr=True))
    except FleetError as exc:
        print(f"counter-service loadtest: could not start the fleet: {exc}", file=sys.stderr)
        return 1
    outcome = result.build(record)
    report.print_summary(outcome, Console())
    _write(outcome, options)
    return int(outcome["exit_status"])


def _execute(options: LoadTestOptions, console: Any) -> Any:
    from counter_service.devtools.loadtest import targets

    if not options.spawn:
        given = targets.given_targets(options.targets, options.redis_url)
        return _drive(options, given, console)
    with targets.spawned(options.spawn) as fleet:
        return _drive(options, targets.fleet_targets(fleet), console)


def _drive(options: LoadTestOptions, where: Any, console: Any) -> Any:
    from counter_service.devtools.loadtest.progress import shown
    from counter_service.devtools.loadtest.runner import RunRecord, execute

    record = RunRecord.new(options, where)

    async def main() -> None:
        async with shown(record, console, options.progress):
            await execute(record)

    asyncio.run(main())
    return record


def _write(outcome: dict[str, Any], options: LoadTestOptions) -> None:
    from counter_service.devtools.loadtest import report

    if options.out is not None:
        report.write_json(outcome, options.out)
    if options.plot is not None:
        from counter_service.devtools.loadtest import plot

        plot.draw(outcome, options.plot)


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so that `kill` also stops the spawned processes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_sigterm(_signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)  # asyncio's own while the loop runs
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler != signal.SIG_IGN:  # ignored only while the fleet is torn down
        raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (`python -m counter_service.devtools.loadtest`)."""
    parser = argparse.ArgumentParser(
        prog="counter-service loadtest",
        description=DESCRIPTION,
        epilog=DEFINITIONS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    return run(args)
