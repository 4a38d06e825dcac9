"""`counter-service balance`: nginx in front of the replicas, in the foreground.

Sticky: a browser keeps the replica that holds its Flet session (cookie `cs_replica`),
also while that replica is not ready; new browsers go to the ready replicas. The replicas
are given (--replicas: addresses, or names that stand for every address they resolve to)
or are every address a DNS name resolves to (--discover). Names are re-read every few
seconds: `docker compose up --scale app=5` and restarted replicas are picked up. Ctrl-C
or SIGTERM stops nginx and every worker of it; nothing it wrote is left behind."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from counter_service.balancer.config import MainOptions, routing_file
from counter_service.balancer.core import Balancer, Source
from counter_service.balancer.foreground import one_line, say, shielded, sigterm_interrupts
from counter_service.balancer.nginx import Nginx, NginxError, find_nginx
from counter_service.balancer.replicas import (
    AddressError,
    Discovery,
    ReplicaList,
    host_port,
    parse_address,
    parse_replicas,
)

PROG = "counter-service balance"
DEFAULT_INTERVAL_S = 1.0


class UsageError(Exception):
    """An option that cannot work; the message names it."""


@dataclass(frozen=True)
class BalanceOptions:
    """Checked options of one `counter-service balance`."""

    listen: tuple[str, int]
    source: Source
    nginx: str
    routing: Path
    interval_s: float
    access_log: str | None


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `balance` subcommand to the `counter-service` subcommands."""
    balance = commands.add_parser("balance", help="run nginx in front of the replicas")
    balance.description = __doc__
    balance.formatter_class = argparse.RawDescriptionHelpFormatter
    add = balance.add_argument
    add("--listen", required=True, metavar="HOST:PORT", help="where nginx listens")
    replicas = balance.add_mutually_exclusive_group(required=True)
    replicas.add_argument(
        "--replicas", metavar="HOST:PORT[,...]", help="the replicas (a name: each address it has)"
    )
    replicas.add_argument("--discover", metavar="NAME:PORT", help="every address NAME has")
    add(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="seconds between polls (%(default)s)",
    )
    add("--nginx", metavar="PATH", help="nginx binary (default: on PATH or in /usr/sbin)")
    add("--routing", metavar="FILE", help=f"the routing file (default {routing_file()})")
    add("--access-log", metavar="FILE", help="nginx's access log (default: none)")
    add("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def check(args: argparse.Namespace) -> BalanceOptions:
    """Validate before starting anything; UsageError names what is wrong."""
    listen = _address("--listen", args.listen)
    check_free("--listen", *listen)
    if not 0.05 <= args.interval <= 60:
        raise UsageError(f"--interval {args.interval}: must be between 0.05 and 60 seconds")
    routing = Path(args.routing) if args.routing else routing_file()
    if not routing.is_file():
        raise UsageError(f"--routing {routing}: no such file")
    access_log = _access_log(args.access_log)
    source = _source(args)
    return BalanceOptions(
        listen, source, nginx_binary(args.nginx), routing, args.interval, access_log
    )


def _source(args: argparse.Namespace) -> Source:
    if args.discover is None:
        try:
            return ReplicaList(parse_replicas(args.replicas), say=say)
        except AddressError as exc:
            raise UsageError(f"--replicas {args.replicas}: {exc}") from None
    name, port = _address("--discover", args.discover)
    return Discovery(name, port, say=say)


def _access_log(path: str | None) -> str | None:
    """`path` if nginx could open it for appending; UsageError otherwise."""
    if path is None:
        return None
    target = Path(path).absolute()
    if target.is_dir():
        raise UsageError(f"--access-log {path}: a directory, not a file")
    if not target.parent.is_dir():
        raise UsageError(f"--access-log {path}: no such directory {target.parent}")
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        raise UsageError(f"--access-log {path}: not writable")
    return str(target)


def _address(flag: str, text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def nginx_binary(given: str | None) -> str:
    """The nginx to run: `given` (a path or a name on PATH), else the system's."""
    found = shutil.which(given) if given else find_nginx()
    if found is None:
        where = given or "on PATH or in /usr/sbin"
        raise UsageError(f"nginx not found ({where}): install it (apt-get install nginx)")
    return found


def check_free(flag: str, host: str, port: int) -> None:
    """UsageError naming `flag` if nginx could not listen on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        # As nginx binds: a closed connection's TIME_WAIT does not make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            where = host_port(host, port)
            raise UsageError(f"{flag} {where}: cannot listen there ({exc.strerror})") from None


def run(args: argparse.Namespace) -> int:
    """Run `counter-service balance` from parsed arguments until stopped; the exit status."""
    try:
        options = check(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    directory = Path(tempfile.mkdtemp(prefix="counter-balancer-"))
    main = MainOptions(access_log=options.access_log)
    nginx = Nginx(options.nginx, directory, options.routing, options.listen, main)
    with sigterm_interrupts():
        return _serve(Balancer(nginx, options.source, say), options)


def _serve(balancer: Balancer, options: BalanceOptions) -> int:
    """Start nginx and poll until interrupted; however that ends, stop nginx and remove
    its directory. It holds nginx's files only (its log goes to our stderr), nothing worth
    keeping after an error, and a container restarting on errors would pile them up."""
    try:
        balancer.start()
        say(f"nginx pid={balancer.nginx.pid} config={balancer.nginx.config}")
        say(f"listening on http://{host_port(*options.listen)}")
        while True:
            time.sleep(options.interval_s)  # the polling period, not a wait for a condition
            balancer.step()
    except KeyboardInterrupt:
        return 0
    except (NginxError, OSError) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        with shielded():
            try:
                balancer.stop()
            finally:
                shutil.rmtree(balancer.nginx.directory, ignore_errors=True)
            say("stopped")
