"""Whether a replica is ready to take new sessions: its /readyz answer, read into one line
(the rotation, counter_service/balancer/rotation.py, decides what to do with it)."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from counter_service.balancer.replicas import Replica

READY = "ready"
PROBE_TIMEOUT_S = 1.0
# Straight to the replica: a proxy from the environment must not see this traffic.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# What /readyz reports (counter_service/flet/app.py), each with the value that is
# healthy, and how a line says it is not.
HEALTHY_FLAGS = {
    "redis_reachable": (True, "Redis unreachable"),
    "relay_subscribed": (True, "relay not subscribed"),
    "event_loop_lagging": (False, "event loop lagging"),
}
SKIPPED = {"ready", "worker"}
MAX_REASON = 200
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Health:
    """One poll of one replica: ready or not, and in words (`ready` or why not)."""

    ready: bool
    state: str


def probe(replica: Replica, timeout: float = PROBE_TIMEOUT_S) -> Health:
    """GET the replica's /readyz: 200 is ready; a 503 says what is missing."""
    try:
        with DIRECT.open(replica.url + "/readyz", timeout=timeout):
            return Health(True, READY)
    except urllib.error.HTTPError as exc:
        return Health(False, f"not ready: {missing(_body(exc)) or f'HTTP {exc.code}'}")
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        return Health(False, f"not ready: no answer ({readable(str(getattr(exc, 'reason', exc)))})")


def _body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(65536)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        error.close()


def missing(body: bytes) -> str:
    """What a 503 from /readyz says is missing, in words; "" if it names nothing. Any
    body will do: this is whatever a replica, or something in its place, answered."""
    try:
        report = json.loads(body)
        if not isinstance(report, dict):
            return ""
        words = ", ".join(what for name, value in report.items() if (what := _problem(name, value)))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return ""
    return readable(words)


def readable(words: str) -> str:
    """`words` on one line of at most MAX_REASON characters."""
    line = " ".join(CONTROL.sub(" ", words).split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def _problem(name: str, value: Any) -> str | None:
    """What one field of /readyz says is wrong, or None when it says nothing is."""
    if name in SKIPPED:
        return None
    if name in HEALTHY_FLAGS:
        healthy, words = HEALTHY_FLAGS[name]
        return None if value is healthy else words
    if isinstance(value, list):  # tasks_down, redis_configuration: what is wrong
        return f"{name}: {'; '.join(map(str, value))}" if value else None
    if value is False:
        return f"{name} false"  # a check this version does not know yet
    return None
