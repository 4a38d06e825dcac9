"""deploy/grafana/counter-service.json: importable anywhere (a datasource variable, no fixed
uid), and it queries only series the app exposes, with label values that occur."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from counter_service import Settings
from tests.support import metric_samples
from ui.app import create_app

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "counter-service.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"\bcounter_service_\w+")
MATCHER = re.compile(r'\b(\w+)="([^"]*)"')
# Labels Prometheus adds to every series it scrapes.
SCRAPE_LABELS = {"instance", "job"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    exprs = [target["expr"] for panel in panels() for target in panel["targets"]]
    variables = dashboard()["templating"]["list"]
    return exprs + [v["query"]["query"] for v in variables if v["type"] == "query"]


@pytest.fixture(scope="module")
def exposed() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label -> values, from GET /metrics of a running app."""
    with TestClient(create_app(Settings())) as client:
        text = client.get("/metrics").text
    found: dict[str, dict[str, set[str]]] = {}
    for name, labels in metric_samples(text):
        for label, label_value in labels:
            found.setdefault(name, {}).setdefault(label, set()).add(label_value)
        found.setdefault(name, {})
    return found


def test_every_series_the_dashboard_queries_is_exposed_by_the_app(
    exposed: dict[str, dict[str, set[str]]],
) -> None:
    for query in queries():
        names = METRIC.findall(query)
        assert names, f"queries nothing of counter-service: {query}"
        assert not [n for n in names if n not in exposed], query


def test_label_values_the_dashboard_filters_on_occur(
    exposed: dict[str, dict[str, set[str]]],
) -> None:
    for query in queries():
        labels: dict[str, set[str]] = {}
        for name in METRIC.findall(query):
            for label, values in exposed[name].items():
                labels.setdefault(label, set()).update(values)
        for label, label_value in MATCHER.findall(query):
            if label not in SCRAPE_LABELS:
                assert label_value in labels.get(label, set()), (label, label_value, query)


def test_the_dashboard_asks_which_prometheus_instead_of_naming_one() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    every = dashboard()["panels"]
    assert len({p["id"] for p in every}) == len(every)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in every)
    assert len(panels()) >= 12


# `make test` puts it next to the venv's python (tools/ensure-promtool.sh).
PROMTOOL = shutil.which(
    "promtool", path=os.pathsep.join([os.environ.get("PATH", ""), str(Path(sys.executable).parent)])
)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (tools/ensure-promtool.sh)")
def test_promtool_accepts_every_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": concrete(query)}
        for i, query in enumerate(q for q in queries() if not q.startswith("label_values"))
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr


def concrete(query: str) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    return query.replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")


def test_the_relay_panel_explains_every_outcome_the_app_exposes(
    exposed: dict[str, dict[str, set[str]]],
) -> None:
    relay = "counter_service_relay_events_total"
    outcomes = exposed[relay]["outcome"]
    assert {"applied", "stale", "suspect", "invalid", "unwatched"} <= outcomes
    described = [p for p in panels() if any(relay in t["expr"] for t in p["targets"])]
    assert described
    for panel in described:
        assert all(f"{o}:" in panel["description"] for o in outcomes), panel["title"]
