"""Capped exponential backoff with jitter, as an object that retry loops share."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for retrying: `next_delay()` grows exponentially up to `cap`, with
    jitter so that many workers do not reconnect in lockstep; `reset()` after a success."""

    base: float = 0.05
    cap: float = 5.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap or self.factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")

    def ceiling(self) -> float:
        """The largest delay the next attempt may wait."""
        # The exponent is bounded so a long outage cannot overflow the float.
        return min(self.cap, self.base * self.factor ** min(self.attempts, 64))

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [ceiling/2, ceiling]."""
        ceiling = self.ceiling()
        self.attempts += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def reset(self) -> None:
        """Start again from `base`: call after a successful attempt."""
        self.attempts = 0
