"""The systemd unit is valid for systemd and keeps its hardening."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CORPUS
from tests.deploy.conftest import DEPLOY
from tests.e2e.harness import BIN, GatewayProcess, http_text, wait_until

UNIT = DEPLOY / "systemd" / "healthbook-gateway.service"
INSTALLED_BINARY = "/opt/healthbook-gateway/bin/healthbook-gateway"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
PR_SET_MDWE, PR_GET_MDWE = 65, 66  # Linux 6.3+: refuse writable-and-executable memory, like MemoryDenyWriteExecute
# Turns W^X on for itself, then becomes the program named by its arguments (the setting survives execve).
MDWE_LAUNCHER = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def _kernel_has_mdwe() -> bool:
    return ctypes.CDLL(None, use_errno=True).prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0


class GatewayWithoutWritableCode(GatewayProcess):
    """The demo gateway started under W^X, the restriction MemoryDenyWriteExecute=yes puts on the service."""

    def start(self, timeout: float = 60.0) -> GatewayWithoutWritableCode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", MDWE_LAUNCHER, str(BIN / "healthbook-gateway"), self.command],
            cwd=self.workdir, env=self.env(), stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout, what=f"gateway ready under W^X (log: {self.log_path})")
        return self


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


def _has_sample(gateway: GatewayProcess, prefix: str) -> bool:
    """Whether /metrics has a sample line (not HELP or TYPE text) starting with prefix."""
    return any(line.startswith(prefix) for line in http_text(f"{gateway.http_url}/metrics").splitlines())


@pytest.mark.skipif(not _kernel_has_mdwe(), reason="this kernel has no PR_SET_MDWE (Linux 6.3+) to emulate it")
def test_gateway_works_without_writable_executable_memory(tmp_path: Path) -> None:
    gateway = GatewayWithoutWritableCode(tmp_path).start()
    try:
        assert "MSA|AA" in gateway.mllp_send(CORPUS / "hl7v2" / "adt_a03_discharge.hl7")
        wait_until(lambda: _has_sample(gateway, "healthbook_gateway_documents_built_total{"), 60,
                   what="a document built (mapped in its own process) under W^X")
    finally:
        assert gateway.stop() == 0
