import pytest

from benchmarks.run import build_parser, parse_scenarios
from benchmarks.scenarios import SCENARIOS, Config, applies
from benchmarks.variants import VARIANTS, counter_key, parse_variants


def test_parse_scenarios() -> None:
    assert parse_scenarios("all") == list(SCENARIOS)
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
    assert (args.scenario, args.variants, args.quick) == ("all", "a,u,b,c,d", False)
    assert Config.quick().fanout_sizes == (100,)
    assert Config().fanout_sizes == (100, 500, 1000)
    assert Config().scaling_sizes == (100, 250, 500, 1000)


def test_counter_keys_match_each_design() -> None:
    assert counter_key(VARIANTS["a"], "clicks") == "counter-service:counter:{clicks}"
    assert counter_key(VARIANTS["c"], "clicks") == "naive:clicks"
    assert counter_key(VARIANTS["d"], "clicks") == "sio:clicks"


def test_file_baseline_has_no_connections_scenario() -> None:
    assert not applies("connections", VARIANTS["b"])
    assert applies("connections", VARIANTS["a"])
    assert applies("fanout", VARIANTS["b"])
