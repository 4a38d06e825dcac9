import pytest

from benchmarks.redis_topologies import STANDALONE
from benchmarks.run import build_parser, parse_scenarios
from benchmarks.scenarios import SCENARIOS, Config, inapplicable
from benchmarks.variants import VARIANTS, counter_key, parse_variants


def test_parse_scenarios() -> None:
    assert parse_scenarios("all") == [*SCENARIOS, *STANDALONE]
    assert parse_scenarios("shards,wait") == ["shards", "wait"]
    assert parse_scenarios("lost, fanout") == ["lost", "fanout"]
    with pytest.raises(ValueError, match="nope"):
        parse_scenarios("fanout,nope")


def test_parse_variants_keeps_order_and_drops_repeats() -> None:
    assert [v.key for v in parse_variants("d,a,d")] == ["d", "a"]
    with pytest.raises(ValueError, match="choose from"):
        parse_variants("a,e")
    with pytest.raises(ValueError, match="choose from"):
        parse_variants(" , ")


def test_defaults_and_quick() -> None:
    args = build_parser().parse_args([])
    assert (args.scenario, args.variants, args.quick) == ("all", "a,r,u,k,b,c,d,p,f", False)
    assert Config.quick().fanout_sizes == (100,)
    assert Config().fanout_sizes == (100, 500, 1000)
    assert Config().scaling_sizes == (100, 250, 500, 1000)


def test_counter_keys_match_each_design() -> None:
    assert counter_key(VARIANTS["a"], "clicks") == "counter-service:counter:{clicks}"
    assert counter_key(VARIANTS["k"], "clicks") == "counter-service:counter:{clicks}"
    assert counter_key(VARIANTS["c"], "clicks") == "naive:clicks"
    assert counter_key(VARIANTS["d"], "clicks") == "sio:clicks"
    assert counter_key(VARIANTS["r"], "clicks") == "counter-service:counter:clicks"


def test_file_baseline_has_no_connections_scenario() -> None:
    assert inapplicable("connections", VARIANTS["b"]) is not None
    assert inapplicable("connections", VARIANTS["a"]) is None
    assert inapplicable("fanout", VARIANTS["b"]) is None


def test_the_pubsub_scenario_has_its_own_pair_of_variants() -> None:
    assert inapplicable("pubsub", VARIANTS["p"]) is None
    assert inapplicable("pubsub", VARIANTS["f"]) is None
    assert inapplicable("pubsub", VARIANTS["a"]) is not None
    assert inapplicable("fanout", VARIANTS["p"]) is not None
