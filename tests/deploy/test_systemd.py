"""The systemd unit is valid, keeps its hardening, and the gateway runs under its memory and system-call limits."""
from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import CORPUS
from tests.deploy.conftest import DEPLOY
from tests.e2e.harness import BIN, GatewayProcess, http_text, wait_until

UNIT = DEPLOY / "systemd" / "healthbook-gateway.service"
INSTALLED_BINARY = "/opt/healthbook-gateway/bin/healthbook-gateway"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
PR_GET_MDWE = 66
SANDBOX = Path(__file__).with_name("sandbox.py")


def _sandbox_missing() -> str:
    """Why this machine cannot emulate the unit's W^X and system-call filter, or "" when it can."""
    if SYSTEMD_ANALYZE is None:
        return "systemd-analyze is not installed (it lists the system-call groups)"
    if ctypes.CDLL(None, use_errno=True).prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
        return "this kernel has no PR_SET_MDWE (Linux 6.3+) to emulate MemoryDenyWriteExecute"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp is not installed"
    return ""


def _syscall_group(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd group such as @system-service, nested groups expanded (a plain name: itself)."""
    if not group.startswith("@"):
        return {group}
    seen = set() if seen is None else seen
    listing = subprocess.run([SYSTEMD_ANALYZE, "syscall-filter", group], capture_output=True, text=True,
                             check=True, timeout=60).stdout.splitlines()[1:]
    calls: set[str] = set()
    for name in (line.strip() for line in listing):
        if name.startswith("@") and name not in seen:
            seen.add(name)
            calls |= _syscall_group(name, seen)
        elif name and not name.startswith(("#", "@")):
            calls.add(name)
    return calls


def _unit_syscalls() -> set[str]:
    """What the unit's SystemCallFilter= lines allow: allow-lists, minus the `~` deny-lists after them."""
    allowed: set[str] = set()
    for line in _service()["SystemCallFilter"]:
        denied = line.startswith("~")
        calls = set().union(*(_syscall_group(group) for group in line.lstrip("~").split()))
        allowed = allowed - calls if denied else allowed | calls
    return allowed


class ConfinedGateway(GatewayProcess):
    """The demo gateway under the unit's MemoryDenyWriteExecute and SystemCallFilter, emulated by sandbox.py."""

    allowed_syscalls: ClassVar[set[str]] = set()

    def start(self, timeout: float = 60.0) -> ConfinedGateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(SANDBOX), ",".join(sorted(self.allowed_syscalls)), str(BIN / "healthbook-gateway"),
             self.command], cwd=self.workdir, env=self.env(), stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout, what=f"confined gateway ready (log: {self.log_path})")
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
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify:\n{output}"


@needs_systemd_analyze
def test_exposure_score_stays_low() -> None:
    # systemd rates exposure from 0 (locked down) to 10; --threshold is that times ten.
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20", str(UNIT)],
                            capture_output=True, text=True, timeout=60, check=False)
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


@pytest.mark.skipif(bool(_sandbox_missing()), reason=_sandbox_missing())
def test_gateway_works_under_the_units_memory_and_system_call_restrictions(tmp_path: Path) -> None:
    gateway = ConfinedGateway(tmp_path)
    gateway.allowed_syscalls = _unit_syscalls()
    assert "sched_setscheduler" not in gateway.allowed_syscalls and "openat" in gateway.allowed_syscalls
    gateway.start()
    try:
        assert "MSA|AA" in gateway.mllp_send(CORPUS / "hl7v2" / "adt_a03_discharge.hl7")
        assert "MSA|AA" in gateway.mllp_send(CORPUS / "hl7v2" / "oru_r01_health_check.hl7")
        wait_until(lambda: _has_sample(gateway, "healthbook_gateway_documents_built_total{"), 60,
                   what="a document built (mapped in its own process) while confined")
        wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60,
                   what="a signed document accepted by the emulator while confined")
    finally:
        assert gateway.stop() == 0


@pytest.mark.parametrize("probe", [
    "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)",
    "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))",
], ids=["writable-executable-memory", "realtime-scheduling"])
def test_the_sandbox_really_refuses(probe: str) -> None:
    if reason := _sandbox_missing():
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(SANDBOX), ",".join(sorted(_unit_syscalls())), sys.executable,
                             "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "PermissionError" in result.stderr, result.stderr
