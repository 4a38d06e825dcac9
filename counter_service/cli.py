"""The `counter-service` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from counter_service.devtools import loadtest, stack
from counter_service.errors import SettingsError
from counter_service.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counter-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one server process (Flet web app)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--port", type=int, default=8550, help="port to bind (default %(default)s)")
    serve.add_argument("--redis-url", help="Redis URL; default $REDIS_URL, else the embedded store")
    serve.add_argument("--namespace", help="prefix of every key and channel")
    serve.add_argument("--tick-ms", type=int, help="coalescing tick in milliseconds")
    serve.add_argument("--presence-ttl", type=float, help="seconds until a dead worker drops out")
    serve.add_argument(
        "--fanout",
        choices=["direct", "update"],
        help="how pages get updates: direct patches (default) or Flet's control.update()",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    loadtest.add_parser(commands)
    stack.add_parser(commands)
    return parser


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from ui.app import create_app

    settings = Settings.from_env().with_overrides(
        redis_url=args.redis_url,
        namespace=args.namespace,
        tick_ms=args.tick_ms,
        presence_ttl_s=args.presence_ttl,
        fanout=args.fanout,
    )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=None,
        lifespan="on",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `counter-service` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.command == "loadtest":
        sys.exit(loadtest.run(args))
    if args.command == "up":
        sys.exit(stack.run(args))
    try:
        serve(args)
    except SettingsError as exc:
        sys.exit(f"counter-service: {exc}")
