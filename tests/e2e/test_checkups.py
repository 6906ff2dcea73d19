"""End to end: health checks for an adult, a pupil, a child under 6 and a driver, sent over MLLP (real
mllp_send) and FHIR (HTTP) to a running `healthbook-gateway demo`, reach its emulator as signed QĐ 1551/2062
XML forms that pass the hub's checks (form, checksum, every XML signature); one without blood pressure is
refused at the listener, on both inputs, with the element named."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.checkup_samples import EYE_DOCTOR, RESULTS, fhir, hl7
from tests.e2e.harness import GatewayProcess, wait_until

KINDS = ("adult", "pupil", "child", "driver")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    doctors = [{"licence": EYE_DOCTOR, "source": "dev", "dev_dir": str(tmp_path / "eye-doctor")}]
    process = GatewayProcess(tmp_path, extra_env={"HBGW_PORTAL__HUB__PRACTITIONER_SIGNERS": json.dumps(doctors)})
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def send_hl7(gateway: GatewayProcess, message: str, name: str) -> str:
    path = gateway.workdir / f"{name}.hl7"
    path.write_bytes(message.encode("utf-8"))
    return gateway.mllp_send(path)


def post_fhir(gateway: GatewayProcess, bundle: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{gateway.http_url}/fhir", method="POST", data=json.dumps(bundle).encode(),
                                     headers={"Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def without_systolic(message: str) -> str:
    return "\r".join(line for line in message.split("\r") if "|8480-6^" not in line)


def test_every_form_arrives_signed_over_mllp_and_fhir_and_a_gap_is_refused_at_the_listener(
        gateway: GatewayProcess) -> None:
    for kind in KINDS:
        assert "MSA|AA|" in send_hl7(gateway, hl7(kind), kind), kind
        status, answer = post_fhir(gateway, fhir(kind, visit=f"KSK-{kind.upper()}-F"))
        assert (status, answer["type"]) == (200, "transaction-response"), (kind, answer)

    refused = send_hl7(gateway, without_systolic(hl7("adult", "KSK-A-0002")), "bad")
    assert "MSA|AE|" in refused or "MSA|AR|" in refused
    assert "HUYET_AP" in refused and "8480-6" in refused
    bundle = fhir("adult", visit="KSK-A-0003")
    bundle["entry"] = [e for e in bundle["entry"] if "8480-6" not in json.dumps(e["resource"])]
    status, outcome = post_fhir(gateway, bundle)
    assert status in (400, 422) and outcome["resourceType"] == "OperationOutcome"
    assert any("HUYET_AP" in issue["details"]["text"] for issue in outcome["issue"])

    stats = wait_until(lambda: (s := gateway.emulator_stats())["accepted"] >= 8 and s, 90,
                       what="eight health checks accepted by the emulator")
    assert stats["verifies_against_configured_cert"] is True
    assert (stats["accepted"], stats["rejected"], stats["signature_failures"]) == (8, 0, 0)
    assert stats["hub_forms"] == {"TREN_18": 2, "DUOI_18": 2, "DUOI_6": 2, "LAI_XE": 2}
    eye_results = sum(1 for *_, observer in RESULTS["adult"] if observer == EYE_DOCTOR)
    assert eye_results and stats["hub_signatures"] == {"CKS_BENH_VIEN": 8, "CKS_NGUOI_KHAM": 2}
