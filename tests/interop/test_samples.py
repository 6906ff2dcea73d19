"""Public samples of other toolkits and specifications through the real listener and the real FHIR API.

HL7 v2 from python-hl7 and HAPI, sent with python-hl7's own `mllp_send` command and `MLLPClient`; FHIR from the
International Patient Summary, US Core and Synthea, posted over HTTP. Each sample is first sent as published
(what the gateway answers it, and why), then with the Vietnamese data it lacked, adapted here in code so that
every change is visible (samples/README.md lists them).
"""
from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hl7.client import MLLPClient

from tests.adapters.test_fhir_api import RunningApi, expressions, post
from tests.gateway.intake_harness import Intake, ack_segments, running_intake
from tests.interop.test_hl7v2_cases import with_field

SAMPLES = Path(__file__).parent / "samples"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"
VISIT_SYSTEM = "urn:hbgw:visit:bv-interop"


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode("ascii")


def fhir_sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / "fhir" / name).read_text(encoding="utf-8"))


async def mllp_send(intake: Intake, message: str, tmp_path: Path) -> bytes:
    """python-hl7's own command line sender (`mllp_send --loose`): what it prints is the raw ACK."""
    path = tmp_path / "message.hl7"
    path.write_bytes(message.encode("ascii"))
    process = await asyncio.create_subprocess_exec(
        str(MLLP_SEND), "--loose", "--file", str(path), "--port", str(intake.server.port), "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.strip(b"\x0b\x1c\r\n")


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    async with running_intake(tmp_path) as running:
        yield running


# ---- HL7 v2: python-hl7 ---------------------------------------------------------------------------------


def python_hl7_oru_adapted() -> str:
    """CCCD in PID-3, a real PID-7 (the published one has 9 digits), and the visit PV1 the gateway files it under."""
    message = sample("hl7v2/python-hl7_oru_r01_v24.hl7")
    message = with_field(message, "PID", 3, "555-44-4444~048162001234^^^BCA^NNVNM")
    message = with_field(message, "PID", 7, "19620320")
    pid_end = message.index("\r", message.index("\rPID|") + 1)
    return message[:pid_end] + "\rPV1|1|O|||||||||||||||||XN-0215-3456" + message[pid_end:]


async def test_python_hl7_result_as_published_is_refused_with_a_v24_err(intake: Intake, tmp_path: Path) -> None:
    ack = ack_segments(await mllp_send(intake, sample("hl7v2/python-hl7_oru_r01_v24.hl7"), tmp_path))
    assert ack["MSA"][0][1:3] == ["AE", "CNTRL-3456"]
    [err] = ack["ERR"]  # v2.4: one ERR whose ERR-1 repeats
    assert len(err) == 2 and "PV1^1^19^101&Required field missing&HL70357" in err[1].split("~")
    assert "PID^1^7^102&Data type error&HL70357" in err[1].split("~")
    assert intake.rows("SELECT COUNT(*) FROM messages") == [(0,)]


async def test_python_hl7_result_with_vietnamese_identity_is_accepted(intake: Intake, tmp_path: Path) -> None:
    ack = ack_segments(await mllp_send(intake, python_hl7_oru_adapted(), tmp_path))
    assert ack["MSA"][0][1:3] == ["AA", "CNTRL-3456"] and "ERR" not in ack
    assert intake.rows("SELECT control_id, message_type FROM messages") == [("CNTRL-3456", "ORU^R01")]


def python_hl7_batch_adapted() -> str:
    """The Victorian (VINAH) batch: CCCD, sex M for its `1`, a birth date for its `10131113`, a visit number."""
    batch = sample("hl7v2/python-hl7_batch_adt_a04.hl7")
    batch = with_field(batch, "PID", 3, "0000112234^^^100^A~040085012345^^^BCA^NNVNM")
    batch = with_field(batch, "PID", 7, "19850214")
    batch = with_field(batch, "PID", 8, "M")
    return with_field(batch, "PV1", 19, "ABCHS-2006-0705")


async def send_batch(intake: Intake, batch: str) -> list[list[str]]:
    """python-hl7's MLLPClient (`mllp_send` splits files on MSH, which would break a batch apart)."""
    def send() -> bytes:
        with MLLPClient("127.0.0.1", intake.server.port) as client:
            return bytes(client.send_message(batch.encode("ascii")))
    answer = await asyncio.to_thread(send)
    return [line.split("|") for line in answer.strip(b"\x0b\x1c\r").decode().split("\r") if line]


@pytest.mark.parametrize(("adapt", "code"), [(lambda batch: batch, "CE"), (lambda _: python_hl7_batch_adapted(), "CA")])
async def test_python_hl7_batch_file_gets_an_acknowledgement_batch(intake: Intake, adapt: Any, code: str) -> None:
    lines = await send_batch(intake, adapt(sample("hl7v2/python-hl7_batch_adt_a04.hl7")))
    assert [fields[0] for fields in lines if fields[0] in ("FHS", "BHS", "MSA", "BTS", "FTS")] == [
        "FHS", "BHS", "MSA", "BTS", "FTS"]
    [bhs] = [fields for fields in lines if fields[0] == "BHS"]
    assert bhs[11] == "abchs20070101123401-1"  # BHS-12 names the batch it answers
    [msa] = [fields for fields in lines if fields[0] == "MSA"]
    assert msa[1:3] == [code, "12334456778890"]  # MSH-15/16 NE: in a batch every message is answered
    assert intake.rows("SELECT COUNT(*) FROM messages") == [(1 if code == "CA" else 0,)]


# ---- HL7 v2: HAPI ---------------------------------------------------------------------------------------


async def test_hapi_v22_admission_without_a_control_id_is_refused_in_the_v22_layout(intake: Intake,
                                                                                   tmp_path: Path) -> None:
    ack = ack_segments(await mllp_send(intake, sample("hl7v2/hapi_adt_a01_v22.hl7"), tmp_path))
    assert ack["MSA"][0][1:3] == ["AE", ""] and ack["MSH"][0][8] == "ACK^A01"
    assert ack["ERR"] == [["ERR", "MSH^1^10^101&Required field missing&HL70357"]]


async def test_hapi_v22_admission_with_a_control_id_and_cccd_is_accepted(intake: Intake, tmp_path: Path) -> None:
    message = with_field(sample("hl7v2/hapi_adt_a01_v22.hl7"), "MSH", 10, "HAPI-0001")
    message = with_field(message, "PID", 3, "00001122~048158001234^^^BCA^NNVNM")
    ack = ack_segments(await mllp_send(intake, message, tmp_path))
    assert ack["MSA"][0][1:3] == ["AA", "HAPI-0001"] and "ERR" not in ack


# ---- FHIR: IPS, US Core, Synthea ------------------------------------------------------------------------


def with_cccd(patient: dict[str, Any], cccd: str) -> None:
    patient.setdefault("identifier", []).append({"system": "urn:hbgw:id:cccd", "value": cccd})


def ips_adapted() -> dict[str, Any]:
    """CCCD for the patient, and the visit (Encounter) a health-book episode is filed under."""
    bundle = fhir_sample("ips_bundle_minimal.json")
    with_cccd(bundle["entry"][1]["resource"], "048172001234")
    bundle["entry"].append({"fullUrl": "urn:uuid:5a1f0f3e-8b0e-4c55-a8a4-000000000001", "resource": {
        "resourceType": "Encounter", "status": "finished", "identifier": [{"system": VISIT_SYSTEM, "value": "IPS-1"}],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": bundle["entry"][1]["fullUrl"]},
        "period": {"start": "2020-12-11T14:00:00+01:00", "end": "2020-12-11T14:30:00+01:00"}}})
    return bundle


async def test_ips_document_as_published_is_refused_for_its_missing_vietnamese_identity_and_visit(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, api.base, fhir_sample("ips_bundle_minimal.json"))
    assert (status, expressions(body)) == (422, ["Bundle.entry[1].resource.identifier", "Bundle.entry"])


async def test_ips_document_with_identity_and_visit_is_accepted_its_medication_resolved(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, headers, body = await post(http, api.base, ips_adapted())
    assert status == 201, body
    assert headers["Location"].startswith(f"{api.base}/Bundle/")
    [(_, control_id, message_type)] = api.stored_rows()
    assert (control_id, message_type) == ("urn:oid:2.16.724.4.8.10.200.10|28b95815-76ce-457b-b7ae-a972e527db40",
                                          "Bundle")


def us_core(name: str) -> dict[str, Any]:
    """A US Core example standing alone: its patient and visit named by identifier instead of `Patient/example`."""
    resource = fhir_sample(f"us-core_{name}.json")
    for element in ("subject", "patient"):
        if element in resource:
            resource[element] = {"identifier": {"system": "urn:hbgw:id:cccd", "value": "048190007788"}}
    if resource["resourceType"] == "Encounter":
        resource["identifier"] = [{"system": VISIT_SYSTEM, "value": "USCORE-1"}]
    else:
        resource["encounter"] = {"identifier": {"system": VISIT_SYSTEM, "value": "USCORE-1"}}
    return resource


@pytest.mark.parametrize(("name", "status", "expression"), [
    ("encounter-example-1", 201, None),
    ("temperature", 201, None),
    ("allergyintolerance-example", 422, "AllergyIntolerance.recordedDate"),  # no time at all
    ("condition-encounter-diagnosis-example1", 422, "Condition.code.coding"),  # ICD-10-CM, not WHO ICD-10
])
async def test_us_core_examples_are_answered_at_their_own_elements(
        api: RunningApi, http: aiohttp.ClientSession, name: str, status: int, expression: str | None) -> None:
    resource = us_core(name)
    answer_status, _, body = await post(http, f"{api.base}/{resource['resourceType']}", resource)
    assert answer_status == status, body
    if expression:
        assert expressions(body) == [expression]


async def test_us_core_allergy_and_diagnosis_once_completed_are_accepted(api: RunningApi,
                                                                        http: aiohttp.ClientSession) -> None:
    allergy = {**us_core("allergyintolerance-example"), "recordedDate": "2015-11-01"}
    condition = us_core("condition-encounter-diagnosis-example1")
    condition["code"]["coding"].append({"system": "http://hl7.org/fhir/sid/icd-10", "code": "T20.2"})
    for resource in (allergy, condition):
        status, _, body = await post(http, f"{api.base}/{resource['resourceType']}", resource)
        assert status == 201, body


def synthea(icd10: bool) -> dict[str, Any]:
    bundle = fhir_sample("synthea_sample_complete_patient_first3.json")
    with_cccd(bundle["entry"][0]["resource"], "048050001122")
    if icd10:
        bundle["entry"][2]["resource"]["code"]["coding"].append(
            {"system": "http://hl7.org/fhir/sid/icd-10", "code": "R73.0", "display": "Abnormal glucose"})
    return bundle


async def test_synthea_transaction_is_accepted_with_its_conditional_references_kept_as_logical_ones(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, api.base, synthea(icd10=False))
    assert (status, expressions(body)) == (422, ["Bundle.entry[2].resource.code.coding"])  # SNOMED CT alone
    status, _, body = await post(http, api.base, synthea(icd10=True))
    assert status == 200 and [entry["response"]["status"] for entry in body["entry"]] == ["201 Created"] * 3
