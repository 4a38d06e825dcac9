"""Retry delays for background loops: redis-py's equal-jitter backoff and a failure count."""

from __future__ import annotations

from redis.backoff import EqualJitterBackoff

# redis-py computes base * 2**failures, which no longer fits a float after about a
# thousand failures (an outage of an hour or so at a 5 s cap): count no higher.
_MAX_EXPONENT = 32


class Backoff:
    """Delays that grow exponentially up to `cap`, each uniform in [d/2, d] so that
    many workers do not retry in lockstep; `reset()` after a success."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self._policy = EqualJitterBackoff(cap=cap, base=base)
        self.failures = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; counts one more failure."""
        delay = self._policy.compute(min(self.failures, _MAX_EXPONENT))
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Start again from `base`: call after a successful attempt."""
        self.failures = 0
