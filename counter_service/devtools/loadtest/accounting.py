"""Loss accounting and convergence: final values against exact expected totals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from counter_service.devtools.loadtest.recorder import CLICKS, ONLINE, VIEWS


def expected_totals(start: Mapping[str, int], sent: int, opened: int, live: int) -> dict[str, int]:
    """clicks = start + clicks sent; views = start + sessions opened; online = start + live."""
    return {
        CLICKS: start[CLICKS] + sent,
        VIEWS: start[VIEWS] + opened,
        ONLINE: start[ONLINE] + live,
    }


@dataclass(frozen=True)
class CounterCheck:
    """One number: expected total, what was observed, and every session's final value."""

    name: str
    start: int
    expected: int
    observed: int | None
    observed_from: str
    lost: int
    extra: int
    sessions: int
    sessions_showing_expected: int
    shown_min: int | None
    shown_max: int | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def check_counter(
    name: str, start: int, expected: int, shown: Sequence[int | None], store: int | None
) -> CounterCheck:
    """Compare with the expected total. The observed total is the store's value when it is
    known, else the highest value any session shows; lost/extra are its shortfall/excess."""
    values = [v for v in shown if v is not None]
    observed = store if store is not None else max(values, default=None)
    gap = expected if observed is None else expected - observed  # nothing seen: all lost
    return CounterCheck(
        name=name,
        start=start,
        expected=expected,
        observed=observed,
        observed_from="redis" if store is not None else "sessions",
        lost=max(0, gap),
        extra=max(0, -gap),
        sessions=len(shown),
        sessions_showing_expected=sum(1 for v in shown if v == expected),
        shown_min=min(values, default=None),
        shown_max=max(values, default=None),
    )


def converged_after(
    values: Mapping[str, int],
    changed_at: Mapping[str, float],
    expected: Mapping[str, int],
    since: float,
) -> float | None:
    """Seconds after `since` from which a session showed every expected total (0 if it
    already did), or None if it does not show them now."""
    if any(values.get(name) != total for name, total in expected.items()):
        return None
    return max(0.0, max(changed_at[name] for name in expected) - since)


def shows(values: Mapping[str, int], expected: Mapping[str, int]) -> bool:
    """True if a session's values equal every expected total."""
    return all(values.get(name) == total for name, total in expected.items())


def curve(times: Sequence[float | None]) -> list[tuple[float, float]]:
    """The convergence curve: (seconds after the last click, fraction of sessions showing
    the final values from then on), one point per session that converged."""
    done = sorted(t for t in times if t is not None)
    return [(t, (i + 1) / len(times)) for i, t in enumerate(done)]


@dataclass(frozen=True)
class Convergence:
    """How many sessions converged within the timeout, and when the last of them did."""

    sessions: int
    converged: int
    timeout_s: float
    all_converged: bool
    all_converged_after_s: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def convergence(times: Sequence[float | None], timeout: float) -> Convergence:
    """Summarize per-session convergence times against `timeout` (None: never)."""
    within = [t for t in times if t is not None and t <= timeout]
    everyone = len(within) == len(times)
    latest = max(within, default=0.0) if everyone else None
    return Convergence(len(times), len(within), timeout, everyone, latest)
