import pytest

from counter_service.errors import InvalidCounterName
from counter_service.names import Names


def test_every_key_and_channel_is_under_the_namespace() -> None:
    names = Names("shop")
    produced = [
        names.counter_events,
        names.messages,
        names.value("clicks"),
        names.version("clicks"),
        names.presence_workers,
        names.presence_worker("w1"),
    ]
    assert all(name.startswith("shop:") for name in produced)
    assert len(set(produced)) == len(produced)


def test_namespaces_do_not_collide() -> None:
    assert Names("a").counter_events != Names("b").counter_events
    assert Names("a").messages != Names("b").messages
    assert Names("a").value("views") != Names("b").value("views")


def test_worker_keys_start_with_the_presence_prefix() -> None:
    names = Names("n")
    assert names.presence_worker("host-1-abc").startswith(names.presence_prefix)


@pytest.mark.parametrize(
    "good", ["clicks", "Clicks", "1st", "likes:post-42", "a.b_c-d:e", "x" * 200]
)
def test_counter_names_an_app_would_use_are_accepted(good: str) -> None:
    assert Names("n").value(good) == f"n:counter:{{{good}}}"


@pytest.mark.parametrize(
    "bad", ["", "a" * 201, "views\n", "ü", 'a"b', "a b", "{clicks}", "a}b", "a*", None, 5]
)
def test_bad_counter_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidCounterName, match="likes:post-42"):
        Names("n").value(bad)
