"""A real Prometheus scrapes the real gateway, evaluates the shipped alerts and runs every dashboard query."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CORPUS, free_port
from tests.deploy.conftest import PROMETHEUS_DIR, require_tool
from tests.deploy.test_grafana import _as_promql, _panels
from tests.deploy.test_prometheus import _alert_rules
from tests.e2e.harness import GatewayProcess, http_json, wait_until

DEADLINE = 90.0  # seconds any one condition may take to come true on a slow CI machine


@dataclass
class PrometheusProcess:
    """`prometheus` on a free 127.0.0.1 port, scraping one target every second, with the shipped alert rules."""

    workdir: Path
    target: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProcess:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [{"job_name": "healthbook-gateway", "static_configs": [{"targets": [self.target]}]}],
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [require_tool("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, DEADLINE, what=f"prometheus ready (log: {self.workdir / 'prometheus.log'})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{log}")
        return bool(http_json(f"{self.url}/api/v1/status/buildinfo", timeout=1.0)["status"] == "success")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector Prometheus answers for the query now."""
        answer = http_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        assert answer["status"] == "success", json.dumps(answer)
        return answer["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value the query returns, or None while it returns nothing."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@contextmanager
def running_stack(gateway_dir: Path, prometheus_dir: Path) -> Iterator[tuple[GatewayProcess, PrometheusProcess]]:
    """The demo gateway and a Prometheus that has scraped it at least once; both stopped on exit."""
    gateway = GatewayProcess(gateway_dir)
    prometheus = PrometheusProcess(prometheus_dir, target="")
    try:
        gateway.start()
        prometheus.target = f"127.0.0.1:{gateway.http_port}"
        prometheus.start()
        wait_until(lambda: prometheus.query("healthbook_gateway_build_info"), DEADLINE,
                   what="prometheus to have scraped healthbook_gateway_build_info")
        yield gateway, prometheus
    finally:
        prometheus.stop()
        gateway.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, PrometheusProcess]]:
    with running_stack(tmp_path_factory.mktemp("gateway"), tmp_path_factory.mktemp("prometheus")) as processes:
        yield processes


def test_prometheus_scrapes_the_gateway(stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    _gateway, prometheus = stack
    assert prometheus.value('up{job="healthbook-gateway"}') == 1.0
    [build] = prometheus.query("healthbook_gateway_build_info")
    assert build["metric"]["version"] == version("healthbook-gateway")
    assert build["metric"]["job"] == "healthbook-gateway"


def test_a_message_sent_over_mllp_shows_up_in_prometheus(stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    gateway, prometheus = stack
    acks = gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")
    assert "MSA|A" in acks
    received = 'sum(healthbook_gateway_messages_received_total{source="mllp"})'
    wait_until(lambda: (prometheus.value(received) or 0) >= 1, DEADLINE, what=f"{received} >= 1")
    accepted = 'sum(healthbook_gateway_acks_total{source="mllp", code=~"AA|CA"})'
    wait_until(lambda: (prometheus.value(accepted) or 0) >= 1, DEADLINE, what=f"{accepted} >= 1")


def test_a_document_accepted_by_the_portal_shows_up_in_prometheus(
        stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    gateway, prometheus = stack
    sent_at = time.time()
    assert "MSA|A" in gateway.mllp_send(CORPUS / "hl7v2" / "oru_r01_health_check.hl7")
    accepted = 'sum(healthbook_gateway_submissions_total{channel="moh_checkup"})'
    wait_until(lambda: (prometheus.value(accepted) or 0) >= 1, DEADLINE, what=f"{accepted} >= 1")
    assert gateway.emulator_stats()["accepted"] >= 1
    last = prometheus.value('healthbook_gateway_last_successful_submission_timestamp_seconds{channel="moh_checkup"}')
    assert last is not None and last >= sent_at - 1, "the success recorded is the one just sent"
    assert prometheus.query('healthbook_gateway_portal_http_responses_total{channel="moh_checkup", status="200"}')
    assert prometheus.query("healthbook_gateway_failed_syncs_total") == []


def test_certificate_and_queue_metrics_carry_real_values(stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    _gateway, prometheus = stack
    days_left = prometheus.value("(healthbook_gateway_certificate_expiry_timestamp_seconds - time()) / 86400")
    assert days_left is not None and days_left > 30, "the development certificate is fresh"
    states = {sample["metric"]["state"] for sample in prometheus.query("healthbook_gateway_queue_depth")}
    assert {"pending", "dead", "delivered"} <= states


def test_shipped_alert_rules_evaluate_cleanly_and_stay_quiet(stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    _gateway, prometheus = stack
    seen: dict[str, tuple[str, str]] = {}

    def all_rules_healthy_and_inactive() -> bool:
        groups = http_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
        seen.clear()
        seen.update({rule["name"]: (rule["health"], rule["state"]) for group in groups for rule in group["rules"]})
        return bool(seen) and set(seen.values()) == {("ok", "inactive")}

    try:
        wait_until(all_rules_healthy_and_inactive, DEADLINE, what="every alert rule healthy and inactive")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; rules as (health, state): {seen}") from None
    assert set(seen) == {rule["alert"] for rule in _alert_rules()}


def test_every_dashboard_query_runs_on_a_real_prometheus(stack: tuple[GatewayProcess, PrometheusProcess]) -> None:
    _gateway, prometheus = stack
    for panel in _panels():
        for target in panel["targets"]:
            prometheus.query(_as_promql(target["expr"]))
    [up_panel] = [panel for panel in _panels() if panel["title"] == "Gateway up"]
    gateway_up = prometheus.query(_as_promql(up_panel["targets"][0]["expr"]))
    assert [float(sample["value"][1]) for sample in gateway_up] == [1.0]


def test_a_stopped_gateway_raises_the_gateway_down_alert(tmp_path: Path) -> None:
    with running_stack(tmp_path / "gateway", tmp_path / "prometheus") as (gateway, prometheus):
        assert gateway.stop() == 0
        wait_until(lambda: prometheus.value('up{job="healthbook-gateway"}') == 0.0, DEADLINE, what="up == 0")
        down = 'ALERTS{alertname="HealthbookGatewayDown", severity="critical"}'
        wait_until(lambda: prometheus.query(down), DEADLINE, what=f"{down} pending or firing")


def test_a_failing_portal_raises_the_portal_unreachable_alert(tmp_path: Path) -> None:
    with running_stack(tmp_path / "gateway", tmp_path / "prometheus") as (gateway, prometheus):
        request = urllib.request.Request(f"{gateway.emulator_url}/_emulator/faults", method="POST",
                                         data=json.dumps({"fail_rate": 1.0}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["fail_rate"] == 1.0
        assert "MSA|AA" in gateway.mllp_send(CORPUS / "hl7v2" / "oru_r01_health_check.hl7")
        # The rule needs 25 minutes of failures; its own expression, asked for one failing 5-second step
        # instead of 25 failing minutes, shows that the gateway's real metrics drive it (alerts_test.yml
        # covers the 25 minutes). A 5 s step, not 1 m, so the test waits seconds for an aligned step.
        [rule] = [rule for rule in _alert_rules() if rule["alert"] == "HealthbookPortalUnreachable"]
        assert rule["expr"].count("[25m:1m]\n) >= 25\n") == 1
        one_minute = rule["expr"].replace("[25m:1m]\n) >= 25\n", "[25m:5s]\n) >= 1\n")
        wait_until(lambda: [sample for sample in prometheus.query(one_minute)
                            if sample["metric"].get("channel") == "moh_checkup"],
                   DEADLINE, what="HealthbookPortalUnreachable's expression for moh_checkup, after one failing step")
        assert prometheus.query('healthbook_gateway_portal_http_responses_total{status="500"}')
        assert gateway.emulator_stats()["accepted"] == 0
