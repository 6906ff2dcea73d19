"""The Prometheus configuration and alert rules are valid, tested by promtool, and use real metric names."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, PROMETHEUS_DIR, load_yaml, require_tool
from tests.deploy.metric_names import exported_series, unknown_labels, unknown_names

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
README = DEPLOY / "README.md"
RULES_BEFORE_ISSUE_15 = Path(__file__).parent / "data" / "alerts_before_issue15.yml"
# The alerts_test.yml cases written for the alert defects of issue 15: each must fail on the old rules.
REGRESSION_CASES = {
    "the first failed syncs of a gateway that has just started fire at once",
    "a channel quiet before the outage fires after 25 minutes of failures, not 10",
    "a gateway restart does not restart the dead-letter timer",
    "a gateway restart does not restart the growing-backlog timer",
    "the growing-backlog alert resolves once the backlog shrinks",
}
REQUIRED_ALERTS = {
    "HealthbookGatewayDown", "HealthbookFailedSyncs", "HealthbookDeliveryDeadlineAtRisk",
    "HealthbookDeliveryDeadlineCritical", "HealthbookPortalUnreachable", "HealthbookCertificateExpiring",
}


def _promtool(*args: str) -> None:
    result = subprocess.run([require_tool("promtool"), *args], cwd=PROMETHEUS_DIR,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


def _alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config() -> None:
    _promtool("check", "config", CONFIG.name)


def test_promtool_check_rules() -> None:
    _promtool("check", "rules", ALERTS.name)


def test_promtool_rule_unit_tests() -> None:
    _promtool("test", "rules", ALERT_TESTS.name)


def test_the_required_alerts_exist() -> None:
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in _alert_rules()}


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_tells_the_on_call_what_to_do(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"]) > 150, "the description is the on-call's first runbook"
    assert f"### {rule['alert']}" in README.read_text(encoding="utf-8"), "explain the alert in deploy/README.md"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing, quiet = set(), set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alert_rules()}
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_uses_only_exported_metrics_and_labels(rule: dict) -> None:
    exported = exported_series()
    assert unknown_names(rule["expr"], exported) == set()
    assert unknown_labels(rule["expr"], exported) == set()


def test_scrape_job_is_the_one_the_alerts_select() -> None:
    jobs = {job["job_name"] for job in load_yaml(CONFIG)["scrape_configs"]}
    assert "healthbook-gateway" in jobs
    assert all('job="healthbook-gateway"' in rule["expr"] for rule in _alert_rules() if "up{" in rule["expr"])


def test_the_name_check_catches_a_misspelt_metric() -> None:
    exported = exported_series()
    assert unknown_names("rate(healthbook_gateway_failed_sync_total[5m])", exported) == {
        "healthbook_gateway_failed_sync_total"}
    assert unknown_labels('sum by (reason) (healthbook_gateway_submissions_total{status="500"})', exported) == {
        "reason", "healthbook_gateway_submissions_total{status}"}


def test_each_regression_case_fails_on_the_rules_it_was_written_against(tmp_path: Path) -> None:
    """A regression test that passes on the defective rules would catch nothing: run them on the old rules."""
    shutil.copy(RULES_BEFORE_ISSUE_15, tmp_path / "alerts.yml")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run([require_tool("promtool"), "test", "rules", ALERT_TESTS.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    failed = set(re.findall(r"^\s*name: (.+),\s*$", result.stdout + result.stderr, re.MULTILINE))
    old_alerts = {rule["alert"] for group in load_yaml(RULES_BEFORE_ISSUE_15)["groups"] for rule in group["rules"]}
    cases = {case["name"]: {check["alertname"] for check in case["alert_rule_test"]}
             for case in load_yaml(ALERT_TESTS)["tests"]}
    assert REGRESSION_CASES <= cases.keys()
    assert REGRESSION_CASES <= failed, "a regression case passes on the rules it should catch"
    assert all(name in REGRESSION_CASES or not cases[name] <= old_alerts for name in failed), \
        "cases for alerts the old rules already had must pass on them"
