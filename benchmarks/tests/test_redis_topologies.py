"""The Redis-only scenarios run for real at a tiny size: every increment is counted on
its shard, and the replica ends up with every acknowledged increment."""

import shutil

import pytest

from benchmarks.redis_topologies import SHARDS, TopologyConfig, shards, wait
from benchmarks.report import table

TINY = TopologyConfig(requests=2_000, wait_s=0.3)


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="needs redis-tools")
def test_shards_counts_every_increment_on_every_topology() -> None:
    rows = shards(TINY)
    assert [row["shards"] for row in rows] == [1, *SHARDS]
    for row in rows:
        assert "note" not in row, row
        assert row["counted"] == TINY.requests, row
        assert row["requests_per_s"] > 0
    assert "| cluster, 3 masters |" in table("shards", [(r["topology"], r) for r in rows])


def test_wait_compares_both_acknowledgements_and_the_replica_has_everything() -> None:
    rows = wait(TINY)
    assert [(row["acknowledged"], row["callers"]) for row in rows] == [
        ("by the master (default)", 1),
        ("after WAIT 1", 1),
        ("by the master (default)", 20),
        ("after WAIT 1", 20),
    ]
    assert all(row["increments"] > 0 for row in rows)
    assert rows[-1]["replica_value"] == sum(row["increments"] for row in rows)
