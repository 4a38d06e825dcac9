"""The options of `counter-service loadtest`: argparse arguments and their validation."""

from __future__ import annotations

import argparse
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MAX_SESSIONS = 20_000
DEFAULT_CLICKERS = 10
MAX_SPAWN = 32
MAX_SECONDS = 3600.0
MAX_RATE = 100_000.0
URL_SCHEMES = ("http", "https", "ws", "wss")


class OptionsError(ValueError):
    """Bad command-line input; the message names the option at fault."""


@dataclass(frozen=True)
class LoadTestOptions:
    """Validated options of one load test run (times in seconds, rates per second)."""

    targets: tuple[str, ...]
    spawn: int
    sessions: int
    clickers: int
    rate: float
    duration: float
    ramp: float
    converge_timeout: float
    ack_timeout: float
    connect_timeout: float
    redis_url: str | None
    namespace: str
    metrics_urls: tuple[str, ...]
    """Replicas to read event-loop lag from (default: the targets themselves)."""
    out: Path | None
    plot: Path | None
    progress: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every loadtest option on `parser`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL",
        help="base URL of a running server or load balancer (repeatable)",
    )
    where.add_argument(
        "--spawn",
        type=int,
        metavar="N",
        help="start a local redis-server and N servers, stop them afterwards",
    )
    _add_load_arguments(parser)
    _add_output_arguments(parser)


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--sessions", type=int, default=100, help="headless sessions to open (%(default)s)")
    add("--clickers", type=int, help="sessions that click (default: 10, at most --sessions)")
    add("--rate", type=float, default=50.0, help="clicks per second in total (%(default)s)")
    add("--duration", type=float, default=10.0, help="seconds of clicking (%(default)s)")
    add("--ramp", type=float, default=100.0, help="sessions opened per second (%(default)s)")
    add(
        "--converge-timeout",
        type=float,
        default=10.0,
        help="seconds after the last click within which every session must show the"
        " expected totals (%(default)s)",
    )
    add(
        "--ack-timeout",
        type=float,
        default=5.0,
        help="seconds within which a click must show on its own page (%(default)s)",
    )
    add(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds for one session to connect and render (%(default)s)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--redis-url", help="Redis of the targets, to sample CLIENT LIST and read the totals")
    add("--namespace", default="counter-service", help="key namespace on Redis (%(default)s)")
    add(
        "--metrics-url",
        action="append",
        default=[],
        metavar="URL",
        help="a replica's own base URL to read its event-loop lag from, when --target is a load"
        " balancer that does not pass /metrics.json (repeatable)",
    )
    add("--out", type=Path, metavar="FILE.json", help="write the result as JSON")
    add("--plot", type=Path, metavar="FILE.png", help="draw latency and convergence plots")
    add("--no-progress", dest="progress", action="store_false", help="no live progress bar")
    add("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def from_args(args: argparse.Namespace) -> LoadTestOptions:
    """Validate parsed arguments; raise OptionsError with a clear message if one is bad."""
    targets = tuple(getattr(args, "target", None) or ())
    spawn = getattr(args, "spawn", None)
    _check_where(targets, spawn, args.redis_url)
    _check_load(args)
    return LoadTestOptions(
        targets=targets,
        spawn=spawn or 0,
        sessions=args.sessions,
        clickers=_clickers(args),
        rate=args.rate,
        duration=args.duration,
        ramp=args.ramp,
        converge_timeout=args.converge_timeout,
        ack_timeout=args.ack_timeout,
        connect_timeout=args.connect_timeout,
        redis_url=args.redis_url,
        namespace=args.namespace,
        metrics_urls=_metrics_urls(args),
        out=_output_path(args.out, "--out"),
        plot=_plot_path(args.plot),
        progress=bool(getattr(args, "progress", True)),
    )


def _check_where(targets: tuple[str, ...], spawn: int | None, redis_url: str | None) -> None:
    if bool(targets) == (spawn is not None):
        raise OptionsError("give exactly one of --target URL (repeatable) or --spawn N")
    if spawn is not None:
        _in_range("--spawn", spawn, 1, MAX_SPAWN)
        if redis_url:
            raise OptionsError("--redis-url is for --target: --spawn starts its own Redis")
    for url in targets:
        check_url(url)


def check_url(url: str, option: str = "--target") -> None:
    """Raise OptionsError unless `url` is an http(s)/ws(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise OptionsError(f"{option} {url!r}: expected a URL like http://127.0.0.1:8551")
    if parts.query or parts.fragment:
        raise OptionsError(f"{option} {url!r}: a base URL takes no query or fragment")


def _metrics_urls(args: argparse.Namespace) -> tuple[str, ...]:
    urls = tuple(getattr(args, "metrics_url", None) or ())
    if urls and getattr(args, "spawn", None) is not None:
        raise OptionsError("--metrics-url is for --target: --spawn reads its own servers")
    for url in urls:
        check_url(url, "--metrics-url")
    return urls


def _check_load(args: argparse.Namespace) -> None:
    _in_range("--sessions", args.sessions, 1, MAX_SESSIONS)
    clickers = _clickers(args)
    _in_range("--clickers", clickers, 1, MAX_SESSIONS)
    if clickers > args.sessions:
        raise OptionsError(f"--clickers {clickers}: more than --sessions {args.sessions}")
    _positive("--rate", args.rate, MAX_RATE)
    _positive("--duration", args.duration, MAX_SECONDS)
    _positive("--ramp", args.ramp, MAX_RATE)
    for name in ("converge_timeout", "ack_timeout", "connect_timeout"):
        _positive("--" + name.replace("_", "-"), getattr(args, name), MAX_SECONDS)
    if not args.namespace:
        raise OptionsError("--namespace must not be empty")


def _clickers(args: argparse.Namespace) -> int:
    chosen: int | None = args.clickers
    return min(DEFAULT_CLICKERS, args.sessions) if chosen is None else chosen


def _in_range(option: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise OptionsError(f"{option} {value}: must be between {low} and {high}")


def _positive(option: str, value: float, high: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise OptionsError(f"{option} {value}: must be a number greater than 0")
    if value > high:
        raise OptionsError(f"{option} {value}: must be at most {high:g}")


def _plot_path(path: Path | None) -> Path | None:
    """`--plot` needs matplotlib, an extra (`pip install 'counter-service[plot]'`)."""
    if path is not None and importlib.util.find_spec("matplotlib") is None:
        raise OptionsError(f"--plot {path}: needs matplotlib: pip install 'counter-service[plot]'")
    return _output_path(path, "--plot")


def _output_path(path: Path | None, option: str) -> Path | None:
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OptionsError(f"{option} {path}: directory {parent} does not exist")
    if path.is_dir():
        raise OptionsError(f"{option} {path}: is a directory")
    return path
