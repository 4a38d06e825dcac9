"""Acknowledging clicks from the clicking sessions' recorded clicks history (see `clicker`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from counter_service.devtools.loadtest.clicker import Click
from counter_service.devtools.loadtest.history import History


@dataclass(frozen=True)
class Ack:
    """An acknowledged click: who sent it, when, when it showed, and the value then shown."""

    clicker: int
    sent_at: float
    acked_at: float
    value: int


def acknowledge(
    clicks: list[Click], histories: Mapping[int, History], timeout: float
) -> tuple[list[Ack], Counter[str]]:
    """The clicks acknowledged within `timeout` seconds, and why the others were not."""
    acks: list[Ack] = []
    missing: Counter[str] = Counter()
    for click in clicks:
        history = histories.get(click.clicker)
        seen = None if history is None else history.first_reaching(click.threshold)
        if seen is None:
            missing["never acknowledged"] += 1
        elif seen[0] - click.sent_at > timeout:
            missing[f"acknowledged after more than {timeout:g}s"] += 1
        else:
            acks.append(Ack(click.clicker, click.sent_at, seen[0], seen[1]))
    return acks, missing
