"""End to end: a FHIR client posts the corpus visit to a running `healthbook-gateway demo` process; the
answer comes after the commit, a malformed body does not stop it, and a retry is answered the same."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.adapters.test_fhir_api import corpus_bundle
from tests.e2e.harness import GatewayProcess, http_text


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path).start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def fhir_control_ids(gateway: GatewayProcess) -> list[str]:
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:
        return [row[0] for row in db.execute("SELECT control_id FROM messages WHERE source = 'fhir'")]


def test_corpus_transaction_is_stored_once_by_the_running_gateway(gateway: GatewayProcess) -> None:
    client = SyncFHIRClient(f"{gateway.http_url}/fhir")  # demo: no fhir_senders, so no token
    with pytest.raises(OperationOutcome):
        client.execute("", method="post", data=[{"resourceType": "Bundle"}])
    answer = client.execute("", method="post", data=corpus_bundle())
    assert answer["type"] == "transaction-response"
    assert fhir_control_ids(gateway) == ["urn:hbgw:sender:his-pkdk-danang|TX-20260402-000981"]

    assert client.execute("", method="post", data=corpus_bundle()) == answer
    assert len(fhir_control_ids(gateway)) == 1
    metrics = http_text(f"{gateway.http_url}/metrics")
    assert 'healthbook_gateway_duplicate_messages_total{source="fhir"} 1.0' in metrics
    assert 'healthbook_gateway_acks_total{code="400",source="fhir"} 1.0' in metrics
