"""Small helpers shared by the tests."""

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def worker_metrics(url: str) -> dict[str, Any]:
    """The JSON view of the metrics of the worker serving at `url` (GET /metrics.json)."""
    with urllib.request.urlopen(url + "/metrics.json", timeout=5) as response:
        return dict(json.load(response))


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait until `check()` is true; fail with `what` after `timeout` seconds.

    A correctness deadline, not a speed assertion: it is generous on purpose."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}")
        await asyncio.sleep(0.02)


def metric_families(text: str) -> dict[str, str]:
    """Family name -> type in a Prometheus text exposition, names as exposed (the parser
    strips a counter's `_total`), without the `_created` gauges prometheus_client adds."""
    found = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        if not (family.type == "gauge" and name.endswith("_created")):
            found[name] = family.type
    return found


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of every sample in a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
