"""`serve` refuses unsafe settings unless each is allowed on purpose, and then warns at every start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.safety import allowed_risks, refusals
from tests.e2e.harness import GatewayProcess

CLI = [str(Path(sys.executable).parent / "healthbook-gateway")]
CLEAN_ENV = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
# A production-like configuration that is safe: every risk below is added to it one at a time.
SAFE = {"HBGW_FACILITY__HEAD_CODE": "79123", "HBGW_SIGNING__SOURCE": "dev",
        "HBGW_SECURITY__ALLOW_DEV_CERTIFICATE": "true",
        "HBGW_PORTAL__BHXH__BASE_URL": "https://bhxh.example", "HBGW_PORTAL__HUB__BASE_URL": "https://hub.example",
        "HBGW_PORTAL__BHXH__PASSWORD": "s3cret-1", "HBGW_PORTAL__HUB__PASSWORD": "s3cret-2",
        "HBGW_MLLP__PORT": "0", "HBGW_HTTP__PORT": "0"}
RISKS = [
    ("allow_anonymous_fhir", {"HBGW_HTTP__HOST": "0.0.0.0"}, "http.fhir_senders: empty"),
    ("allow_dev_certificate", {"HBGW_SECURITY__ALLOW_DEV_CERTIFICATE": "false"}, "signing.source"),
    ("allow_plain_http_portal", {"HBGW_PORTAL__HUB__BASE_URL": "http://hub.example"}, "portal.hub.base_url"),
    ("allow_demo_passwords", {"HBGW_PORTAL__BHXH__PASSWORD": "demo"}, "portal.bhxh.password"),
    ("allow_empty_head_code", {"HBGW_FACILITY__HEAD_CODE": ""}, "facility.head_code"),
]


def _run(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, command], capture_output=True, text=True, cwd=cwd, env={**CLEAN_ENV, **env},
                          timeout=60, check=False)


def test_the_safe_base_is_safe() -> None:
    settings = load_settings(None, SAFE)
    assert refusals(settings) == [] and len(allowed_risks(settings)) == 1  # the dev certificate, allowed


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize("allow, risk, names", RISKS, ids=[r[0] for r in RISKS])
def test_each_unsafe_setting_stops_serve_and_check_config_with_one_line(
        tmp_path: Path, command: str, allow: str, risk: dict[str, str], names: str) -> None:
    result = _run(command, {**SAFE, **risk}, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"config error: {names}") and f"security.{allow}" in lines[0]
    assert "s3cret" not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before anything was created


@pytest.mark.parametrize("allow, risk, names", RISKS[:2], ids=[r[0] for r in RISKS[:2]])
def test_an_explicit_allow_passes_check_config_with_a_warning(
        tmp_path: Path, allow: str, risk: dict[str, str], names: str) -> None:
    result = _run("check-config", {**SAFE, **risk, f"HBGW_SECURITY__{allow.upper()}": "true"}, tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("config OK")
    assert any(line.startswith(f"config warning: {names}") for line in result.stderr.splitlines())


def test_the_defaults_refuse_all_but_anonymous_fhir_on_loopback() -> None:
    problems = refusals(load_settings(None, {}))
    assert [p.split(":")[0] for p in problems] == [
        "signing.source", "portal.bhxh.password", "portal.hub.password", "facility.head_code"]


def test_each_of_several_facilities_is_checked() -> None:
    facilities = ('[{"bhxh_code": "79001", "moh_facility_id": "7900000000789", "head_code": "79123"},'
                  ' {"bhxh_code": "79002", "moh_facility_id": "7900000000790", "portal_password": "demo",'
                  ' "signing": {"source": "dev"}}]')
    problems = refusals(load_settings(None, {**SAFE, "HBGW_FACILITIES": facilities,
                                             "HBGW_SECURITY__ALLOW_DEV_CERTIFICATE": "false"}))
    assert [p.split(":")[0] for p in problems] == [
        "signing.source", "facilities[1].signing.source", "facilities[1].portal_password", "facilities[1].head_code"]


def test_serve_warns_at_every_start_for_what_is_allowed(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, command="serve", extra_env={"HBGW_HTTP__HOST": "0.0.0.0",
                                                                   "HBGW_SECURITY__ALLOW_ANONYMOUS_FHIR": "true"})
    gateway.start()
    try:
        events = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line.startswith("{")]
    finally:
        assert gateway.stop() == 0
    warned = [event["risk"] for event in events if event.get("event") == "unsafe_setting_allowed"]
    assert any(risk.startswith("http.fhir_senders") for risk in warned)
    assert any(risk.startswith("signing.source") for risk in warned)


def test_demo_still_starts_as_is(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    assert gateway.stop() == 0
