"""Whether a replica should get new sessions: its /readyz answer, read into one line, and
the hysteresis that keeps one failed or one good poll from moving it in or out."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from counter_service.balancer.replicas import Replica

READY = "ready"
PROBE_TIMEOUT_S = 1.0
POLLS_TO_SWITCH = 2
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
        return Health(False, f"not ready: no answer ({getattr(exc, 'reason', exc)})")


def _body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read(65536)
    except (OSError, http.client.HTTPException):
        return b""
    finally:
        error.close()


def missing(body: bytes) -> str:
    """What a 503 from /readyz says is missing, in words; "" if it names nothing."""
    try:
        report = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(report, dict):
        return ""
    return ", ".join(what for name, value in report.items() if (what := _problem(name, value)))


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


class Rotation:
    """Which replicas get new sessions. A replica leaves after `polls` failed polls in a
    row and comes back after `polls` ready ones; a new replica starts outside. When none
    is in, all are: pages still render and say that the store is unreachable."""

    def __init__(self, polls: int = POLLS_TO_SWITCH) -> None:
        self.polls = polls
        self._inside: set[Replica] = set()
        self._streak: dict[Replica, int] = {}
        """Ready polls in a row (> 0) or failed ones (< 0)."""

    def update(self, polls: Iterable[tuple[Replica, bool]]) -> None:
        """Count one poll of each replica; forget the replicas that were not polled."""
        polled = dict(polls)
        self._inside &= set(polled)
        self._streak = {r: self._count(self._streak.get(r, 0), ok) for r, ok in polled.items()}
        for replica, streak in self._streak.items():
            if streak >= self.polls:
                self._inside.add(replica)
            elif streak <= -self.polls:
                self._inside.discard(replica)

    def members(self, replicas: Sequence[Replica]) -> list[Replica]:
        """Those of `replicas` in rotation, in their order (all of them when none is)."""
        inside = [replica for replica in replicas if replica in self._inside]
        return inside or list(replicas)

    @staticmethod
    def _count(streak: int, ready: bool) -> int:
        if ready:
            return streak + 1 if streak > 0 else 1
        return streak - 1 if streak < 0 else -1
