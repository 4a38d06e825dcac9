"""Which replicas get new sessions, and how often that may change: hysteresis, so that one
failed or one good poll moves nothing; a hold-down that keeps a flapping replica out until
it has stayed ready for a while; and a budget of nginx reloads, since every reload leaves
the old workers running for as long as they carry websockets."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from counter_service.balancer.replicas import Replica

Clock = Callable[[], float]

POLLS_TO_SWITCH = 2
STABLE_S = 60.0
"""A replica that stayed in rotation this long before it left was not flapping."""
HOLD_BASE_S = 5.0
HOLD_MAX_S = 300.0
RELOAD_BURST = 3
RELOAD_EVERY_S = 10.0


def hold_s(flaps: int) -> float:
    """How long a replica that left rotation `flaps` times in a row, each time less than
    STABLE_S after it came back, must stay ready before it comes back again. The first
    exit costs nothing: a replica that had one bad moment is back after two good polls."""
    if flaps <= 1:
        return 0.0
    return min(HOLD_BASE_S * 2.0 ** (flaps - 2), HOLD_MAX_S)


@dataclass
class _Track:
    """What the rotation remembers of one replica."""

    streak: int = 0
    """Ready polls in a row (> 0) or failed ones (< 0)."""
    ready_since: float | None = None
    entered: float | None = None
    """When it last entered rotation; None while it is out."""
    flaps: int = 0
    hold_s: float = 0.0


class Rotation:
    """Which replicas get new sessions. A replica leaves after `polls` failed polls in a
    row and comes back after `polls` ready ones, and, if it flaps, only once it has been
    ready for `hold_s(flaps)`. A new replica starts outside, unless no replica is inside
    (at start): then its first ready poll lets it in, since nothing routed yet needs the
    hysteresis. When none is in, all are: pages still render and say the store is down."""

    def __init__(self, polls: int = POLLS_TO_SWITCH, clock: Clock = time.monotonic) -> None:
        self.polls, self.clock = polls, clock
        self._tracks: dict[Replica, _Track] = {}

    def update(self, polls: Iterable[tuple[Replica, bool]]) -> list[tuple[Replica, float]]:
        """Count one poll of each replica; forget the replicas that were not polled.
        The replicas that just left rotation and are held out, with the seconds each must
        now stay ready before it comes back."""
        now, polled = self.clock(), dict(polls)
        first_entry = not any(t.entered is not None for t in self._tracks.values())
        tracks = {r: self._tracks.get(r) for r in polled}
        self._tracks = {r: track or _Track() for r, track in tracks.items()}
        held: list[tuple[Replica, float]] = []
        for replica, ready in polled.items():
            track = self._tracks[replica]
            if ready:
                self._ready(track, now, first_entry and tracks[replica] is None)
            elif self._failed(track, now) and track.hold_s:
                held.append((replica, track.hold_s))
        return held

    def members(self, replicas: Sequence[Replica]) -> list[Replica]:
        """Those of `replicas` in rotation, in their order (all of them when none is)."""
        inside = [r for r in replicas if r in self._tracks and self._tracks[r].entered is not None]
        return inside or list(replicas)

    def _ready(self, track: _Track, now: float, new_at_start: bool) -> None:
        if track.streak <= 0:
            track.streak, track.ready_since = 0, now
        track.streak += 1
        if track.entered is not None:
            return
        settled = track.streak >= self.polls and now - (track.ready_since or now) >= track.hold_s
        if new_at_start or settled:
            track.entered = now

    def _failed(self, track: _Track, now: float) -> bool:
        """Count a failed poll; True if the replica left rotation with it."""
        track.streak = min(track.streak, 0) - 1
        track.ready_since = None
        if track.entered is None or track.streak > -self.polls:
            return False
        stayed, track.entered = now - track.entered, None
        track.flaps = track.flaps + 1 if stayed < STABLE_S else 1
        track.hold_s = hold_s(track.flaps)
        return True


class ReloadBudget:
    """At most `burst` nginx reloads in a row, then one per `every_s` seconds. After a
    reload the old workers keep running while they carry websockets (up to nginx's
    worker_shutdown_timeout): this bounds how many generations of them live at once."""

    def __init__(
        self,
        burst: int = RELOAD_BURST,
        every_s: float = RELOAD_EVERY_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.burst, self.every_s, self.clock = burst, every_s, clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one reload if there is one to spend."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) / self.every_s)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
