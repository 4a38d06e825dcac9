from counter_service.events import CounterEvent
from counter_service.versions import CounterUpdate, LatestValues


def ev(version: int, value: int | None = None, name: str = "clicks") -> CounterEvent:
    return CounterEvent(name, version if value is None else value, version)


def change(version: int, value: int | None = None, name: str = "clicks") -> CounterUpdate:
    return CounterUpdate.change(ev(version, value, name))


def test_newer_versions_are_kept_and_older_or_equal_dropped() -> None:
    latest = LatestValues()
    assert latest.accept(change(2))
    assert not latest.accept(change(1))
    assert not latest.accept(change(2))
    assert latest.accept(change(5))
    assert latest.get("clicks") == ev(5)


def test_counters_are_independent() -> None:
    latest = LatestValues()
    assert latest.accept(change(9, name="views"))
    assert latest.accept(change(1, name="clicks"))
    assert latest.get("views") == ev(9, name="views")
    assert latest.get("online") is None


def test_a_truth_replaces_even_a_newer_version() -> None:
    latest = LatestValues()
    latest.accept(change(500))
    assert latest.accept(CounterUpdate.truth(ev(3)))
    assert latest.get("clicks") == ev(3)
    assert latest.accept(change(4))


def test_a_truth_equal_to_what_is_held_reports_no_change() -> None:
    latest = LatestValues()
    latest.accept(change(3))
    assert not latest.accept(CounterUpdate.truth(ev(3)))


def test_a_broken_counter_holds_nothing_and_takes_the_next_change() -> None:
    latest = LatestValues()
    latest.accept(change(7))
    broken = CounterUpdate.broken("clicks", "holds a list")
    assert broken.value is None
    assert latest.accept(broken)
    assert not latest.accept(broken)
    assert latest.get("clicks") is None
    assert latest.accept(change(1))


def test_forget_drops_a_counter() -> None:
    latest = LatestValues()
    latest.accept(change(3))
    latest.forget("clicks")
    assert latest.get("clicks") is None
    assert latest.accept(change(1))
