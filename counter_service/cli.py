"""The `counter-service` command line."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import shlex
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from counter_service import RedisConfigError, Settings, SettingsError, balancer, check_redis
from counter_service.devtools import loadtest, stack

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Open websockets get this long to close on SIGTERM or Ctrl-C before the process ends.
GRACEFUL_SHUTDOWN_S = 5
# The status a shell reports for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A flag or variable the user gave cannot work; the message names it."""


class CommandParser(argparse.ArgumentParser):
    """The parser of one subcommand; with `one_line=True` its errors, unknown
    arguments included, are one line (`prog: --flag value: problem`) without the
    usage text, and exit with status 2."""

    def __init__(self, *args: Any, one_line: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_line = one_line

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it; this is the one used
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.one_line:  # otherwise the top-level parser reports them
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        if not self.one_line:
            super().error(message)
        self.exit(2, f"{self.prog}: {message.removeprefix('argument ')}\n")


def checked(parse: Callable[[str], object]) -> type[argparse.Action]:
    """An argparse action that stores `parse(text)`; a ValueError from it stops the
    parser with one line naming the flag and the text as typed (`--port 99999: ...`)."""

    class Checked(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: str | Sequence[Any] | None,
            option_string: str | None = None,
        ) -> None:
            try:
                setattr(namespace, self.dest, parse(str(values)))
            except ValueError as exc:
                parser.error(f"{option_string} {shlex.quote(str(values))}: {exc}")

    return Checked


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counter-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    serve = commands.add_parser(
        "serve", help="run one server process (Flet web app)", one_line=True
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument(
        "--port",
        action=checked(port_number),
        default=8550,
        help="port to bind (default %(default)s)",
    )
    # Settings flags stay text: Settings parses and checks them with the environment.
    serve.add_argument("--redis-url", help="Redis URL; default $REDIS_URL, else the embedded store")
    serve.add_argument("--namespace", help="prefix of every key and channel")
    serve.add_argument("--tick-ms", help="coalescing tick in milliseconds")
    serve.add_argument("--presence-ttl", help="seconds until a dead worker drops out")
    serve.add_argument("--session-timeout", help="seconds a session is kept after its browser left")
    serve.add_argument(
        "--fanout",
        choices=["direct", "update"],
        help="how pages get updates: direct patches (default) or Flet's control.update()",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    loadtest.add_parser(commands)
    stack.add_parser(commands)
    balancer.add_parser(commands)
    return parser


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535; a ValueError says what is wrong with `text`."""
    try:
        port = int(text)
    except ValueError:
        raise ValueError("is not a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError("must be between 1 and 65535")
    return port


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings with the flags on top, checked once both are in; an
    error names the flag or variable that gave the bad value, as typed."""
    flags = {
        "redis_url": args.redis_url,
        "namespace": args.namespace,
        "tick_ms": args.tick_ms,
        "presence_ttl_s": args.presence_ttl,
        "fanout": args.fanout,
        "session_timeout_s": args.session_timeout,
    }
    try:
        return Settings.from_env(flags=flags)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`, or a `UsageError` naming the flag at fault."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        problem = f"not an address or a name that resolves ({exc.strerror})"
        raise UsageError(f"--host {host}: {problem}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(_bind_problem(host, port, exc)) from None
    return sock


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"--port {port}: address {host}:{port} is already in use"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine"
    if error.errno == errno.EACCES:
        return f"--port {port}: permission denied (ports below 1024 need privileges)"
    return f"--host {host} --port {port}: cannot listen ({error.strerror})"


def serve(args: argparse.Namespace) -> None:
    """Run one server process until SIGTERM or Ctrl-C."""
    import uvicorn

    from ui.app import create_app

    settings = settings_from(args)
    sock = bind(args.host, args.port)  # before anything starts: a bad address costs nothing
    try:
        asyncio.run(check_redis(settings))
        app = create_app(settings)  # checks Flet's own variables (FLET_SESSION_TIMEOUT)
    except (RedisConfigError, SettingsError) as exc:
        sock.close()
        raise UsageError(str(exc)) from None
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # uvicorn refuses bigger frames before buffering them (its default is 16 MB).
        ws_max_size=4 * settings.max_frame_bytes,  # over ours: the guard refuses and counts
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `counter-service` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.command == "loadtest":
        sys.exit(loadtest.run(args))
    if args.command == "up":
        sys.exit(stack.run(args))
    if args.command == "balance":
        sys.exit(balancer.run(args))
    try:
        serve(args)
    except UsageError as exc:
        sys.exit(f"counter-service serve: {exc}")
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C once it has shut down cleanly: nothing went wrong.
        sys.exit(EXIT_INTERRUPTED)
