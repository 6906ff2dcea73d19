"""The walking skeleton end to end: HIS -> real mllp_send -> gateway process -> emulator, with metrics."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CORPUS
from tests.e2e.harness import GatewayProcess, http_text, wait_until

PERSONAL_VALUES = ("040085012345", "GD4404012345678", "19850214", "NGUYỄN", "0912345678", "Tăng huyết áp")


@pytest.fixture
def gateway(tmp_path: Path):
    process = GatewayProcess(tmp_path).start()
    yield process
    assert process.stop() == 0


def test_admission_is_stored_acknowledged_signed_and_accepted(gateway: GatewayProcess) -> None:
    acks = gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")
    assert "MSA|AA|MSG000123" in acks
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:  # on disk by the time the AA was read
        assert db.execute("SELECT count(*) FROM messages WHERE control_id = 'MSG000123'").fetchone()[0] == 1

    stats = wait_until(lambda: (s := gateway.emulator_stats())["accepted"] >= 1 and s, 60, what="emulator accepted")
    assert stats["rejected"] == 0 and stats["signature_failures"] == 0 and stats["duplicates"] == 0
    assert len(stats["accepted_keys"]) == 1

    metrics = http_text(f"{gateway.http_url}/metrics")
    assert 'healthbook_gateway_messages_received_total{message_type="ADT^A01",source="mllp"} 1.0' in metrics
    assert 'healthbook_gateway_acks_total{code="AA",source="mllp"} 1.0' in metrics
    wait_until(lambda: 'healthbook_gateway_submissions_total{channel="bhxh_xml130"} 1.0'
               in http_text(f"{gateway.http_url}/metrics"), 30, what="submission counted")


def test_retransmission_gets_the_original_ack_and_is_sent_once(gateway: GatewayProcess) -> None:
    first = gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")
    again = gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")
    assert "MSA|AA|MSG000123" in first and first == again
    wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60, what="emulator accepted")
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1


@pytest.mark.parametrize("name, control_id, location", [
    ("invalid_cccd_mismatch.hl7", "MSG000140", "PID^1^3"),
    ("invalid_missing_identity.hl7", "MSG000141", "PID^1^3"),
])
def test_invalid_messages_are_refused_with_the_field_and_the_server_keeps_serving(
        gateway: GatewayProcess, name: str, control_id: str, location: str) -> None:
    acks = gateway.mllp_send(CORPUS / "hl7v2" / name)
    assert f"MSA|AE|{control_id}" in acks and f"ERR||{location}" in acks
    assert "MSA|AA|MSG000123" in gateway.mllp_send(CORPUS / "hl7v2" / "adt_a01_admit.hl7")


def test_logs_carry_no_personal_data(gateway: GatewayProcess) -> None:
    for name in ("adt_a01_admit.hl7", "invalid_cccd_mismatch.hl7", "oru_r01_lab.hl7"):
        gateway.mllp_send(CORPUS / "hl7v2" / name)
    wait_until(lambda: gateway.emulator_stats()["accepted"] >= 1, 60, what="emulator accepted")
    gateway.stop()
    log = gateway.log_path.read_text(encoding="utf-8")
    assert "hl7_stored" in log and "correlation_id" in log
    for value in PERSONAL_VALUES:
        assert value not in log
