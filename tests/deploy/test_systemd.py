"""The systemd unit is valid for systemd and keeps its hardening."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

UNIT = DEPLOY / "systemd" / "healthbook-gateway.service"
INSTALLED_BINARY = "/opt/healthbook-gateway/bin/healthbook-gateway"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")


def _service() -> dict[str, list[str]]:
    """The [Service] directives; a directive may be given several times, so each maps to all its values."""
    directives: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists, so point it at this checkout's binary; the rest is the unit as shipped.
    binary = Path(sys.executable).parent / "healthbook-gateway"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(binary)), encoding="utf-8")
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify:\n{output}"


@needs_systemd_analyze
def test_exposure_score_stays_low() -> None:
    # systemd rates exposure from 0 (locked down) to 10; --threshold is that times ten.
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"exposure above 2.0:\n{result.stdout[-3000:]}{result.stderr}"


def test_unit_runs_as_a_dedicated_user_with_the_required_hardening() -> None:
    service = _service()
    expected = {
        "User": "healthbook", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/healthbook-gateway", "PrivateTmp": "yes", "ProtectHome": "yes",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes", "Restart": "on-failure",
    }
    assert {key: service[key][-1] for key in expected} == expected
    assert "@system-service" in service["SystemCallFilter"]


def test_unit_starts_the_gateway_with_the_documented_config_path() -> None:
    service = _service()
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} serve --config /etc/healthbook-gateway/gateway.toml"]
    assert service["RestartPreventExitStatus"] == ["2"]
