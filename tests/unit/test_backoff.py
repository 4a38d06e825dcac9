import random

import pytest

from counter_service.backoff import Backoff


def test_delays_grow_to_the_cap_and_stay_within_jitter_bounds() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert ceilings[5:] == [2.0] * 5


def test_jitter_spreads_workers_apart() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_reset_starts_again_from_base() -> None:
    backoff = Backoff(base=0.1, cap=5.0)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling() == pytest.approx(0.1)


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff(base=0.1, cap=3.0)
    backoff.attempts = 10_000
    assert backoff.next_delay() <= 3.0


@pytest.mark.parametrize(("base", "cap", "factor"), [(0, 1, 2), (2, 1, 2), (0.1, 1, 0.5)])
def test_nonsense_parameters_are_refused(base: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(base=base, cap=cap, factor=factor)
