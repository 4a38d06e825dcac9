import pytest

from counter_service import InvalidCounterName, Names


def test_every_key_and_channel_is_under_the_namespace() -> None:
    names = Names("shop")
    produced = [
        names.channel,
        names.value("clicks"),
        names.version("clicks"),
        names.presence_workers,
        names.presence_worker("w1"),
    ]
    assert all(name.startswith("shop:") for name in produced)
    assert len(set(produced)) == len(produced)


def test_namespaces_do_not_collide() -> None:
    assert Names("a").channel != Names("b").channel
    assert Names("a").value("views") != Names("b").value("views")


def test_worker_keys_start_with_the_presence_prefix() -> None:
    names = Names("n")
    assert names.presence_worker("host-1-abc").startswith(names.presence_prefix)


@pytest.mark.parametrize("bad", ["", "Clicks", "1st", "a:b", "a" * 33, "views\n", "ü", 'a"b'])
def test_bad_counter_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidCounterName):
        Names("n").value(bad)
