import pytest

from counter_service.backoff import Backoff


def test_delays_grow_to_the_cap_within_equal_jitter_bounds() -> None:
    backoff = Backoff(base=0.1, cap=2.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    for ceiling in ceilings:
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    assert backoff.failures == len(ceilings)


def test_jitter_spreads_workers_apart() -> None:
    delays = {Backoff().next_delay() for _ in range(20)}
    assert len(delays) > 1


def test_reset_starts_again_from_base() -> None:
    backoff = Backoff(base=0.1, cap=5.0)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_a_long_outage_does_not_overflow() -> None:
    backoff = Backoff(base=0.1, cap=3.0)
    backoff.failures = 10_000  # redis-py alone raises OverflowError here
    assert 1.5 <= backoff.next_delay() <= 3.0


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (2, 1), (-1, 1)])
def test_nonsense_parameters_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(base=base, cap=cap)
