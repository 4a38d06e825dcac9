from counter_service import CounterEvent, CounterUpdate, LatestValues


def ev(version: int, value: int | None = None, name: str = "clicks") -> CounterEvent:
    return CounterEvent(name, version if value is None else value, version)


def test_newer_versions_are_kept_and_older_or_equal_dropped() -> None:
    latest = LatestValues()
    assert latest.offer(ev(2))
    assert not latest.offer(ev(1))
    assert not latest.offer(ev(2))
    assert latest.offer(ev(5))
    assert latest.value("clicks") == 5


def test_counters_are_independent() -> None:
    latest = LatestValues()
    assert latest.offer(ev(9, name="views"))
    assert latest.offer(ev(1, name="clicks"))
    assert latest.value("views") == 9
    assert latest.value("online") == 0
    assert latest.get("online") is None


def test_a_reset_replaces_even_a_newer_version() -> None:
    latest = LatestValues()
    latest.offer(ev(500))
    assert latest.accept(CounterUpdate(ev(3), reset=True))
    assert latest.value("clicks") == 3
    assert latest.offer(ev(4))


def test_a_reset_to_the_same_state_reports_no_change() -> None:
    latest = LatestValues()
    latest.offer(ev(3))
    assert not latest.accept(CounterUpdate(ev(3), reset=True))


def test_a_plain_update_goes_through_the_version_check() -> None:
    latest = LatestValues()
    latest.offer(ev(3))
    assert not latest.accept(CounterUpdate(ev(2)))
    assert latest.accept(CounterUpdate(ev(4)))
