"""A whole inpatient stay over MLLP and an outpatient BHYT visit over FHIR, through the gateway to the emulator."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.harness import GatewayProcess, http_text, wait_until
from tests.mappings.claim_samples import SAMPLES, inpatient_messages, outpatient_bundle


@pytest.fixture
def gateway(tmp_path: Path):
    process = GatewayProcess(tmp_path).start()
    yield process
    assert process.stop() == 0


def test_a_stay_and_a_visit_reach_the_portal_as_complete_claims(gateway: GatewayProcess, tmp_path: Path) -> None:
    stay = tmp_path / "stay.hl7"
    stay.write_text("\n".join(message.replace("\r", "\n") for _, message in inpatient_messages()), encoding="utf-8")
    acks = gateway.mllp_send(stay)
    assert acks.count("MSA|AA|") == len(list((SAMPLES / "inpatient").glob("*.hl7")))
    body = json.dumps(outpatient_bundle()).encode()
    request = urllib.request.Request(f"{gateway.http_url}/fhir", body, {"Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200

    wait_until(lambda: gateway.work_left() == 0, 90, what="every claim delivered")
    stats = gateway.emulator_stats()
    assert stats["rejected"] == 0 and stats["signature_failures"] == 0
    keys = set(stats["accepted_keys"])
    assert "pkdk-danang_KB26-005120:v1" in keys
    assert "4000000000123_VV26000777:v10" in keys  # the stay after its tenth message (earlier ones may be replaced)
    metrics = http_text(f"{gateway.http_url}/metrics")
    assert 'healthbook_gateway_messages_received_total{message_type="DFT^P03",source="mllp"} 1.0' in metrics
    assert "healthbook_gateway_documents_waiting 0.0" in metrics
