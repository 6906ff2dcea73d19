"""The BHXH channel end to end: HIS over MLLP and a FHIR client -> gateway process -> emulated BHXH portal.

The emulator accepts only the real wire (form bodies, session headers, signed XML0 and GIAMDINHHS), so
every acceptance below proves the shape; the stats show each document's form in arrival order, and the
gateway's receipts archive holds the portal's transaction ids.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirpy import SyncFHIRClient

from tests.adapters.test_fhir_api import corpus_bundle
from tests.conftest import CORPUS
from tests.e2e.harness import GatewayProcess, wait_until


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, extra_env={"HBGW_PORTAL__BHXH__SEND_FILES": "finished",
                                                  "HBGW_PORTAL__BHXH__USERNAME": "40001_BV",
                                                  "HBGW_FACILITY__PROVINCE_CODE": "40"}).start()
    yield process
    assert process.stop() == 0


def received(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        documents: list[dict[str, Any]] = gateway.emulator_stats()["bhxh"]
        return documents if len(documents) >= count else None
    return wait_until(enough, 90, what=f"{count} BHXH documents accepted")


def receipts(gateway: GatewayProcess) -> dict[str, tuple[str, str]]:
    """The archived receipts by the key the emulator records (a check-in's marked XML0/)."""
    with sqlite3.connect(gateway.workdir / "var" / "gateway.db") as db:
        rows = db.execute("SELECT r.channel, o.idempotency_key, r.transaction_id, r.result_code FROM receipts r"
                          " JOIN outbox o ON o.id = r.outbox_id"
                          " WHERE r.channel IN ('bhxh_xml130', 'bhxh_checkin')").fetchall()
    return {(f"XML0/{key}" if channel == "bhxh_checkin" else key): (transaction, code)
            for channel, key, transaction, code in rows}


def test_an_inpatient_stay_checks_in_at_its_first_cost_and_sends_its_files_at_discharge(
        gateway: GatewayProcess) -> None:
    for name in ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a03_discharge.hl7"):
        ack = gateway.mllp_send(CORPUS / "hl7v2" / name)
        assert "MSA|AA|" in ack or "MSA|CA|" in ack  # the lab asks for enhanced acknowledgements
    checkin, files = received(gateway, 2)
    assert (checkin["loaiHoSo"], checkin["files"]) == ("0", ["XML0"])
    assert checkin["key"] == "XML0/4000000000123_VV26000456:v2"  # made due by the lab results, the first cost
    assert files["loaiHoSo"] == "130" and {"XML1", "XML7", "XML8"} <= set(files["files"])
    assert checkin["episodes"] == files["episodes"]  # one episode, MA_LK kept
    for document in (checkin, files):
        assert (document["username"], document["maTinh"], document["maCSKCB"]) == ("40001_BV", "40", "40001")
    stats = gateway.emulator_stats()
    assert (stats["accepted"], stats["rejected"], stats["duplicates"], stats["signature_failures"]) == (2, 0, 0, 0)
    archived = wait_until(lambda: len(r := receipts(gateway)) == 2 and r, 30, what="both receipts archived")
    assert archived[checkin["key"]] == (checkin["maGiaoDich"], "200")
    assert archived[files["key"]] == (files["maGiaoDich"], "200")


def test_an_outpatient_visit_from_fhir_checks_in_then_sends_its_files(gateway: GatewayProcess) -> None:
    SyncFHIRClient(f"{gateway.http_url}/fhir").execute("", method="post", data=corpus_bundle())
    checkin, files = received(gateway, 2)
    assert checkin["loaiHoSo"] == "0"
    assert (files["loaiHoSo"], files["episodes"]) == ("130", checkin["episodes"])
    archived = wait_until(lambda: len(r := receipts(gateway)) == 2 and r, 30, what="both receipts archived")
    assert {transaction for transaction, _ in archived.values()} == {checkin["maGiaoDich"], files["maGiaoDich"]}


FACILITIES = [
    {"name": "BVDK Nghe An", "bhxh_code": "40001", "moh_facility_id": "4000000000123", "senders": ["BVDK_NGHEAN"]},
    {"name": "BV TP HCM", "bhxh_code": "79001", "moh_facility_id": "7900000000456", "province_code": "79",
     "portal_username": "79001_BV", "portal_password": "hcm-pass"},
]


def test_two_facilities_each_file_under_their_own_codes_and_account_and_a_stranger_is_refused(
        tmp_path: Path) -> None:
    hcm_discharge = tmp_path / "hcm_a03.hl7"
    text = (CORPUS / "hl7v2" / "adt_a03_discharge.hl7").read_text(encoding="utf-8")
    hcm_discharge.write_text(text.replace("BVDK_NGHEAN^4000000000123^L", "BV_TPHCM^7900000000456^L"), "utf-8")
    stranger = tmp_path / "stranger.hl7"
    stranger.write_text(text.replace("BVDK_NGHEAN^4000000000123^L", "PK_LA^0100000000999^L"), "utf-8")
    process = GatewayProcess(tmp_path / "gw", extra_env={
        "HBGW_PORTAL__BHXH__SEND_FILES": "finished", "HBGW_PORTAL__BHXH__USERNAME": "40001_BV",
        "HBGW_FACILITIES": json.dumps(FACILITIES)}).start()
    try:
        refused = process.mllp_send(stranger)
        assert "MSA|AR|" in refused and "ERR||MSH^1^4" in refused
        for message in (CORPUS / "hl7v2" / "adt_a03_discharge.hl7", hcm_discharge):
            assert "MSA|AA|" in process.mllp_send(message)
        forms = sorted((item["username"], item["maCSKCB"], item["maTinh"], item["loaiHoSo"])
                       for item in received(process, 4))  # the procedure on the discharge is a first cost
        assert forms == [("40001_BV", "40001", "40", "0"), ("40001_BV", "40001", "40", "130"),
                         ("79001_BV", "79001", "79", "0"), ("79001_BV", "79001", "79", "130")]
    finally:
        assert process.stop() == 0
