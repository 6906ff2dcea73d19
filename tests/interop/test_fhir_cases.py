"""Issue 14, FHIR side: what real clients send and expect, over a real socket to the real API and SQLite store."""
from __future__ import annotations

import copy
import re
import sqlite3
from typing import Any

import aiohttp
from multidict import CIMultiDict

from mappings.fhir_in import map_fhir
from tests.adapters import test_fhir_api
from tests.adapters.test_fhir_api import (
    AUTH,
    CCCD,
    VISIT,
    RunningApi,
    corpus_bundle,
    corpus_resource,
    expressions,
)

MEDICATION_URL = "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9d06"


async def post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] = AUTH,
               ) -> tuple[int, CIMultiDict[str], Any]:
    """POST, with the answer's headers looked up as HTTP does (aiohttp writes `Etag`)."""
    status, answer_headers, answer = await test_fhir_api.post(http, url, body, headers)
    return status, CIMultiDict(answer_headers), answer


def document_with_medication_reference() -> dict[str, Any]:
    """The corpus visit as an IPS-style document: its MedicationStatement names a Medication entry."""
    bundle = corpus_bundle()
    bundle.update(type="document", timestamp="2026-04-02T09:10:00+07:00")
    for entry in bundle["entry"]:
        entry.pop("request")
    statement = bundle["entry"][4]["resource"]
    statement.pop("medicationCodeableConcept")
    statement["medicationReference"] = {"reference": MEDICATION_URL}
    bundle["entry"].append({"fullUrl": MEDICATION_URL, "resource": {
        "resourceType": "Medication",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387517004", "display": "Paracetamol"}],
                 "text": "Paracetamol 500mg"}}})
    bundle["entry"].insert(0, {"fullUrl": "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9d00", "resource": {
        "resourceType": "Composition", "status": "final", "date": "2026-04-02T09:10:00+07:00",
        "title": "Patient Summary",
        "type": {"coding": [{"system": "http://loinc.org", "code": "60591-5"}]},
        "subject": {"reference": "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9d01"},
        "author": [{"display": "PKĐK Đà Nẵng"}],
        "section": [{"title": "Medication Summary", "entry": [{"reference": "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9d05"}]}]}})
    return bundle


async def test_a_document_whose_medication_statement_references_a_medication_entry_is_accepted(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, api.base, document_with_medication_reference())
    assert status == 201, body
    [fragment] = map_fhir(document_with_medication_reference()).fragments
    [statement] = [r for r in fragment.resources if r["resourceType"] == "MedicationStatement"]
    assert statement["medicationCodeableConcept"]["text"] == "Paracetamol 500mg"  # what XML 130 reads
    assert "medicationReference" not in statement
    assert "Medication" not in {r["resourceType"] for r in fragment.resources}


async def test_a_medication_reference_to_no_entry_is_refused_naming_it(api: RunningApi,
                                                                      http: aiohttp.ClientSession) -> None:
    bundle = document_with_medication_reference()
    bundle["entry"].pop()
    status, _, body = await post(http, api.base, bundle)
    assert (status, expressions(body)) == (422, ["Bundle.entry[5].resource.medicationReference.reference"])


async def test_a_reused_bundle_identifier_with_other_content_is_refused_and_a_resend_replays(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    first = await post(http, api.base, corpus_bundle())
    resend = await post(http, api.base, {**corpus_bundle(), "timestamp": "2026-04-02T09:30:00+07:00"})
    changed = corpus_bundle()
    changed["entry"][3]["resource"]["valueQuantity"]["value"] = 39.1
    status, _, body = await post(http, api.base, changed)
    assert first[0] == 200 and resend[0] == 200 and resend[2] == first[2]
    assert (status, expressions(body)) == (409, ["Bundle.identifier"])
    assert body["issue"][0]["code"] == "duplicate"
    assert len(api.stored_rows()) == 1


async def test_a_transaction_referencing_an_entry_it_does_not_carry_is_refused_naming_it(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    bundle = corpus_bundle()
    bundle["entry"][2]["resource"]["encounter"] = {"reference": "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9dff"}
    status, _, body = await post(http, api.base, bundle)
    assert (status, expressions(body)) == (422, ["Bundle.entry[2].resource.encounter.reference"])
    assert "0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9dff" in body["issue"][0]["details"]["text"]
    assert api.stored_rows() == []


async def test_a_diagnosis_without_an_icd10_code_is_refused_but_a_problem_list_item_need_not_be(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    condition = corpus_resource("Condition")
    condition["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "54150009"}], "text": "URTI"}
    status, _, body = await post(http, f"{api.base}/Condition", condition)
    assert (status, expressions(body)) == (422, ["Condition.code.coding"])
    bundle = corpus_bundle()
    bundle["entry"][2]["resource"]["code"] = condition["code"]
    status, _, body = await post(http, api.base, bundle)
    assert (status, expressions(body)) == (422, ["Bundle.entry[2].resource.code.coding"])
    problem = {**condition, "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}]}
    assert (await post(http, f"{api.base}/Condition", problem))[0] == 201


async def test_an_allergy_posted_alone_is_told_about_its_own_elements(api: RunningApi,
                                                                     http: aiohttp.ClientSession) -> None:
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"identifier": CCCD},
               "encounter": {"identifier": VISIT},
               "code": {"coding": [{"system": "http://snomed.info/sct", "code": "764146007", "display": "Penicillin"}]}}
    status, _, body = await post(http, f"{api.base}/AllergyIntolerance", allergy)
    assert (status, expressions(body)) == (422, ["AllergyIntolerance.recordedDate"])
    status, _, body = await post(http, f"{api.base}/AllergyIntolerance",
                                 {**allergy, "onsetDateTime": "2020-05-01"})
    assert status == 201, body


def stored_acks(api: RunningApi) -> list[bytes]:
    with sqlite3.connect(api.db_path) as db:
        return [bytes(row[0]) for row in db.execute("SELECT ack FROM messages ORDER BY id")]


async def test_return_representation_answers_the_resource_as_created_without_keeping_it_unencrypted(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    headers = {**AUTH, "Prefer": "return=representation", "If-None-Exist": "identifier=urn:hbgw:id:cccd|048190007788"}
    status, answer_headers, body = await post(http, f"{api.base}/Patient", corpus_resource("Patient"), headers)
    assert status == 201 and body["resourceType"] == "Patient" and body["birthDate"] == "1990-09-03"
    assert answer_headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert body["meta"]["versionId"] == "1" and answer_headers["ETag"] == 'W/"1"'
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", answer_headers["Last-Modified"])
    again = await post(http, f"{api.base}/Patient", corpus_resource("Patient"), headers)
    assert again[0] == 200 and again[2]["id"] == body["id"] and again[1]["ETag"] == 'W/"1"'
    [kept] = stored_acks(api)
    for personal in (b"048190007788", b"1990-09-03", "Võ".encode(), b"0935123456"):
        assert personal not in kept


async def test_every_create_carries_etag_and_last_modified(api: RunningApi, http: aiohttp.ClientSession) -> None:
    for url, resource in ((f"{api.base}/Observation", corpus_resource("Observation")),
                          (api.base, {**corpus_bundle(), "type": "document", "timestamp": "2026-04-02T09:10:00Z"})):
        status, headers, _ = await post(http, url, resource)
        assert status == 201 and headers["ETag"] == 'W/"1"' and headers["Last-Modified"].endswith(" GMT")


async def put(http: aiohttp.ClientSession, url: str, body: dict[str, Any],
              headers: dict[str, str] = AUTH) -> tuple[int, CIMultiDict[str], Any]:
    async with http.put(url, json=body, headers=headers) as response:
        return response.status, CIMultiDict(response.headers), await response.json(content_type=None)


async def test_put_with_a_client_assigned_id_creates_then_updates_as_new_versions(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    observation = {**corpus_resource("Observation"), "id": "obs-temp-1"}
    created = await put(http, f"{api.base}/Observation/obs-temp-1", observation)
    changed = copy.deepcopy(observation)
    changed["valueQuantity"]["value"] = 37.9
    updated = await put(http, f"{api.base}/Observation/obs-temp-1", changed, {**AUTH, "Prefer": "return=representation"})
    back = await put(http, f"{api.base}/Observation/obs-temp-1", observation)
    assert created[0] == 201 and created[1]["ETag"] == 'W/"1"'
    assert created[1]["Location"].endswith("/Observation/obs-temp-1/_history/1")
    assert updated[0] == 200 and updated[2]["id"] == "obs-temp-1" and updated[2]["valueQuantity"]["value"] == 37.9
    assert updated[1]["ETag"] == f'W/"{updated[2]["meta"]["versionId"]}"' != created[1]["ETag"]
    assert back[0] == 200 and back[1]["ETag"] not in (created[1]["ETag"], updated[1]["ETag"])  # A, B, A: 3 versions
    assert len(api.stored_rows()) == 3
    assert all(b"obs-temp-1" not in ack for ack in stored_acks(api))  # a client id may be a personal number
    status, _, body = await put(http, f"{api.base}/Observation/other-id", observation)
    assert (status, expressions(body)) == (400, ["Observation.id"])


async def test_format_and_accept_are_honoured_alike_by_metadata_and_creates(
        api: RunningApi, http: aiohttp.ClientSession) -> None:
    async def metadata(query: str = "", accept: str = "application/fhir+json") -> int:
        async with http.get(f"{api.base}/metadata{query}", headers={"Accept": accept}) as response:
            assert response.content_type == "application/fhir+json"
            return response.status
    assert await metadata() == 200 and await metadata("?_format=json", "application/fhir+xml") == 200
    assert await metadata("?_format=xml") == 406 and await metadata(accept="application/fhir+xml") == 406
    observation = corpus_resource("Observation")
    assert (await post(http, f"{api.base}/Observation?_format=xml", observation))[0] == 406
    assert (await post(http, f"{api.base}/Observation", observation, {**AUTH, "Accept": "application/fhir+xml"}))[0] \
        == 406
    for _ in range(2):  # `_format` is no conditional-create criterion: two creates, two records
        assert (await post(http, f"{api.base}/Observation?_format=json", observation))[0] == 201
    assert len(api.stored_rows()) == 2


async def test_transaction_response_entries_carry_etag_and_last_modified(api: RunningApi,
                                                                        http: aiohttp.ClientSession) -> None:
    status, _, body = await post(http, api.base, corpus_bundle())
    assert status == 200
    for entry in body["entry"]:
        assert entry["response"]["etag"] == 'W/"1"' and entry["response"]["lastModified"].endswith("+00:00")
