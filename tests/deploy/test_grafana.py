"""The Grafana dashboard loads, has the panels the on-call needs, and queries only real metrics."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, load_yaml, require_tool
from tests.deploy.metric_names import exported_series, names_used, unknown_labels, unknown_names
from tests.deploy.test_prometheus import _alert_rules

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "healthbook-gateway.json"
REQUIRED_PANELS = {
    "Messages received", "ACK codes", "Failed syncs by reason", "Queue depth by state",
    "Oldest pending age vs 24h deadline", "Submit latency", "Portal HTTP statuses", "Certificate days left",
    "Time since last successful submission", "Retries", "Rate in vs out", "Firing alerts", "Messages by sender",
    "Store size and free disk",
}
# Grafana variables, replaced by what they stand for so promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> list[dict]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def _queries() -> list[str]:
    queries = [target["expr"] for panel in _panels() for target in panel["targets"]]
    queries += [variable["definition"] for variable in _dashboard()["templating"]["list"] if "definition" in variable]
    return queries


def _as_promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def test_dashboard_has_the_panels_the_on_call_needs() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "healthbook-gateway"
    assert REQUIRED_PANELS <= {panel["title"] for panel in _panels()}
    assert all(panel["targets"] and panel["description"] for panel in _panels())


def test_panels_the_alerts_point_to_exist() -> None:
    descriptions = " ".join(rule["annotations"]["description"] for rule in _alert_rules())
    named = {name for pair in re.findall(r'"([^"]+)"(?: and "([^"]+)")? panels?\b', descriptions)
             for name in pair if name}
    assert named and named <= {panel["title"] for panel in _panels()}


def test_panels_pick_the_data_source_from_the_dashboard_variable() -> None:
    assert {panel["datasource"]["uid"] for panel in _panels()} == {"${datasource}"}
    assert {target["refId"] for panel in _panels() for target in panel["targets"]} <= {"A", "B", "C"}


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken.get((x, y))}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("query", _queries())
def test_queries_use_only_exported_metrics_and_labels(query: str) -> None:
    exported = exported_series()
    assert names_used(query) or query.startswith(('up{job="healthbook-gateway"', "ALERTS{")), "panels show gateway metrics"
    assert unknown_names(query, exported) == set()
    assert unknown_labels(query, exported) == set()


def test_promtool_parses_every_panel_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{number}", "expr": _as_promql(target["expr"])}
        for number, target in enumerate(t for panel in _panels() for t in panel["targets"])]}]}
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"a dashboard query is not valid PromQL:\n{result.stdout}\n{result.stderr}"


def test_firing_alerts_panel_lists_the_shipped_alerts() -> None:
    [panel] = [panel for panel in _panels() if panel["title"] == "Firing alerts"]
    [target] = panel["targets"]
    selector = re.search(r'alertname=~"([^"]+)"', target["expr"])
    assert selector is not None and 'alertstate="firing"' in target["expr"]
    assert all(re.fullmatch(selector.group(1), rule["alert"]) for rule in _alert_rules())


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [source["type"] for source in datasources] == ["prometheus"]
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "healthbook-gateway.yml")["providers"]
    assert [provider["options"]["path"] for provider in providers] == ["/var/lib/grafana/dashboards"]
