import pytest
from redis.crc import key_slot

from counter_service.errors import InvalidCounterName
from counter_service.names import Names


@pytest.mark.parametrize("sharded", [False, True])
def test_every_key_and_channel_is_under_the_namespace(sharded: bool) -> None:
    names = Names("shop", sharded=sharded)
    produced = [
        names.counter_channel("clicks"),
        names.topic_channel("chat"),
        names.value("clicks"),
        names.version("clicks"),
        names.presence,
    ]
    assert all(name.startswith("shop:") for name in produced)
    assert len(set(produced)) == len(produced)


def test_namespaces_do_not_collide() -> None:
    for sharded in (False, True):
        a, b = Names("a", sharded), Names("b", sharded)
        assert a.counter_channel("views") != b.counter_channel("views")
        assert a.topic_channel("t") != b.topic_channel("t")
        assert a.value("views") != b.value("views")


def test_a_single_server_carries_everything_on_two_channels() -> None:
    names = Names("n")
    assert {names.counter_channel(c) for c in ("a", "b", "online")} == {"n:events"}
    assert {names.topic_channel(t) for t in ("x", "y", None)} == {"n:messages"}
    assert names.publish_command == "PUBLISH"
    assert set(names.static_channels) == {"n:events", "n:messages"}


def test_a_cluster_puts_each_counter_channel_in_its_keys_slot() -> None:
    names = Names("n", sharded=True)
    assert names.publish_command == "SPUBLISH"
    for counter in ("clicks", "likes:post-42", "online"):
        slot = key_slot(names.value(counter).encode())
        assert key_slot(names.counter_channel(counter).encode()) == slot
        assert key_slot(names.version(counter).encode()) == slot
    assert key_slot(names.presence.encode()) == key_slot(names.value("online").encode())


def test_a_cluster_gives_each_topic_a_channel_of_its_own() -> None:
    names = Names("n", sharded=True)
    channels = {names.topic_channel(t) for t in ("a", "b", "{weird}", "", None)}
    assert len(channels) == 5
    assert all("{" in c and c.count("}") == 1 for c in channels)  # one clean hash tag
    slots = {key_slot(names.topic_channel(f"topic-{i}").encode()) for i in range(20)}
    assert len(slots) > 1  # topics spread over shards


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
