"""The text of the files nginx runs with: its main file, and the two files that the shared
routing file (deploy/nginx/counter-service.conf) includes from beside it: where to listen,
and the replicas (their ids, their upstream groups, which of them take new sessions)."""

from __future__ import annotations

import grp
import os
import pwd
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from counter_service.balancer.replicas import Replica, host_port

SITE_DIR = "counter-service"
"""Where the routing file includes its generated files from, beside the main file."""
LISTEN_FILE = "listen.conf"
REPLICAS_FILE = "replicas.conf"
ROUTING_NAME = "counter-service.conf"
# Passive health: a replica that refuses or times out one connection is skipped for
# 10 s by that upstream group, and the request goes to the next server.
SERVER_PARAMS = "max_fails=1 fail_timeout=10s"
NEW_SESSIONS = "cs_new"
# nginx needs a server in every upstream group: with no replica known yet, one that is
# never used (`down`), so requests get a plain 502 until a replica appears.
NO_REPLICA = "server 127.0.0.1:9 down;"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
WORKER_CONNECTIONS = 8192  # every open page holds two: browser side and replica side
WANTED_NOFILE = 4 * WORKER_CONNECTIONS
# A reload leaves the old workers running while websockets they carry are open, which is
# as long as their tabs are: each holds its memory (megabytes) until then. Cut them soon:
# a websocket cut this way costs its browser a reconnect, which goes, by its cookie, to
# the same replica and resumes its Flet session. With the reload budget (rotation.py: 3
# in a row, then one per 10 s) at most about 6 generations of old workers live at once.
SHUTDOWN_TIMEOUT = "30s"


def routing_file() -> Path:
    """The shared routing file: the checkout's, or the copy an image installs under
    the environment's prefix (deploy/Dockerfile puts it there)."""
    checkout = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / ROUTING_NAME
    installed = Path(sys.prefix) / "share" / "counter-service" / ROUTING_NAME
    return checkout if checkout.is_file() else installed


@dataclass(frozen=True)
class MainOptions:
    """What differs between the main files of `balance` (compose) and `up`."""

    workers: str = "auto"
    access_log: str | None = None
    """A file for nginx's access log; None: no access log."""


def listen_conf(host: str, port: int) -> str:
    """The `listen` directive of the one server block."""
    return f"listen {host_port(host, port)};\n"


def replicas_conf(replicas: Sequence[Replica], rotation: Sequence[Replica]) -> str:
    """The ids, upstream groups and rotation of `replicas`, for the routing file.

    `cs_<id>`: that replica, then the others in rotation as backups (where its browsers
    go when it is down). `cs_new`: the replicas in `rotation`, by fewest connections."""
    lines = [
        "# Written by counter-service balance; rewritten (and nginx reloaded) whenever a",
        "# replica appears or goes, or enters or leaves rotation.",
        *_cookie_map(replicas),
        *_served_map(replicas),
        f"upstream {NEW_SESSIONS} {{",
        "    least_conn;",
        f"    zone {NEW_SESSIONS} 64k;",
        *[f"    server {r.address} {SERVER_PARAMS};" for r in rotation],
        *([f"    {NO_REPLICA}"] if not rotation else []),
        "}",
    ]
    for replica in replicas:
        lines += _pinned_upstream(replica, [r for r in rotation if r != replica])
    return "\n".join(lines) + "\n"


def _cookie_map(replicas: Sequence[Replica]) -> list[str]:
    """The upstream group of a browser's `cs_replica` cookie: its replica's, else cs_new."""
    entries = [f"    {r.id} cs_{r.id};  # {r.address}" for r in replicas]
    return ["map $cookie_cs_replica $cs_upstream {", f"    default {NEW_SESSIONS};", *entries, "}"]


def _served_map(replicas: Sequence[Replica]) -> list[str]:
    """The id of the replica that served a response, from its address."""
    entries = [f'    "{r.address}" {r.id};' for r in replicas]
    return ["map $cs_served_address $cs_served {", '    default "";', *entries, "}"]


def _pinned_upstream(replica: Replica, backups: Sequence[Replica]) -> list[str]:
    return [
        f"upstream cs_{replica.id} {{",
        f"    server {replica.address} {SERVER_PARAMS};",
        *[f"    server {b.address} {SERVER_PARAMS} backup;" for b in backups],
        "}",
    ]


def main_conf(directory: Path, routing: Path, options: MainOptions) -> str:
    """nginx's main file: process-level settings, every path inside `directory`, then
    the shared routing file in the http block."""
    temp = "".join(f'    {name}_temp_path "{directory}/temp/{name}";\n' for name in TEMP_PATHS)
    access = f'"{options.access_log}"' if options.access_log else "off"
    return (
        "# Written by counter-service balance: nginx's process-level settings.\n"
        f"{user_line()}worker_processes {options.workers};\n"
        f"{_nofile_line()}"
        f"worker_shutdown_timeout {SHUTDOWN_TIMEOUT};\n"
        f'pid "{directory}/nginx.pid";\n'
        "error_log stderr notice;\n"
        f"events {{\n    worker_connections {WORKER_CONNECTIONS};\n}}\n"
        "http {\n"
        f"    access_log {access};\n"
        f"{temp}"
        f'    include "{routing}";\n'
        "}\n"
    )


def user_line() -> str:
    """As root, nginx would run its workers as `nobody`, who may not read our files:
    keep them as the current user. Not root (the image): nginx cannot switch anyway."""
    if os.geteuid() != 0:
        return ""
    user, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};\n"


def _nofile_line() -> str:
    """Room for every connection, as far as the hard limit lets an unprivileged nginx go."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    return f"worker_rlimit_nofile {wanted};\n"
