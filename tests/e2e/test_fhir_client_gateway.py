"""End to end: a FHIR client posts the corpus visit to a running `healthbook-gateway demo` process; it is
stored before the answer, mapped and accepted by the portal emulator, and a retry is answered the same and kept
once; a malformed body in between does not stop the server."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from tests.adapters.test_fhir_api import corpus_bundle
from tests.e2e.harness import GatewayProcess, http_text, wait_until


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path).start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def fhir_messages(gateway: GatewayProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:
        return db.execute("SELECT control_id, state FROM messages WHERE source = 'fhir'").fetchall()


def post_corpus(gateway: GatewayProcess) -> dict[str, Any]:
    client = SyncFHIRClient(f"{gateway.http_url}/fhir")  # demo: no fhir_senders, so no token
    return client.execute("", method="post", data=corpus_bundle())


def test_corpus_transaction_is_stored_once_and_delivered(gateway: GatewayProcess) -> None:
    with pytest.raises(OperationOutcome):
        SyncFHIRClient(f"{gateway.http_url}/fhir").execute("", method="post", data=[{"resourceType": "Bundle"}])
    answer = post_corpus(gateway)
    assert answer["type"] == "transaction-response"
    [(control_id, _)] = fhir_messages(gateway)
    assert control_id == "urn:hbgw:sender:his-pkdk-danang|TX-20260402-000981"
    wait_until(lambda: fhir_messages(gateway)[0][1] == "mapped", 60, what="the visit mapped")
    wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60, what="the visit accepted by the emulator")

    assert post_corpus(gateway) == answer
    assert len(fhir_messages(gateway)) == 1
    metrics = http_text(f"{gateway.http_url}/metrics")
    assert 'healthbook_gateway_duplicate_messages_total{source="fhir"} 1.0' in metrics
    assert 'healthbook_gateway_acks_total{code="400",source="fhir"} 1.0' in metrics
