"""The FHIR intake's business rules on a real store: who may post, what is taken, what is answered."""
from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.fhir_api import Credentials, FhirRequest, Interaction
from gateway.config import FhirSender, HttpSettings
from gateway.encryption import PayloadCipher
from gateway.fhir_intake import FhirIntake, Validate, control_id
from gateway.metrics import Metrics
from gateway.store import SqliteStore
from mappings.model import Issue

SENDERS = [FhirSender(name="his-a", token_sha256=hashlib.sha256(b"token-a").hexdigest()),
           FhirSender(name="lab-b", client_cert_cn="lab-b.benhvien.vn")]
PATIENT = {"resourceType": "Patient", "gender": "male"}


def no_issues(_resource: dict[str, Any]) -> list[Issue]:
    return []


def bundle(bundle_type: str, *entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries), **extra}


def entry(resource: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    return {"resource": resource, "request": {"method": method, "url": resource["resourceType"]}}


def request(resource: dict[str, Any], interaction: Interaction = "bundle", if_none_exist: str = "") -> FhirRequest:
    return FhirRequest(interaction, "his-a", resource, json.dumps(resource).encode(), if_none_exist)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"k" * 32)).open()
    yield opened
    await opened.close()


def intake(store: SqliteStore, validate: Validate = no_issues, senders: list[FhirSender] = SENDERS) -> FhirIntake:
    return FhirIntake(store, Metrics(), HttpSettings(fhir_senders=senders), validate)


@pytest.mark.parametrize(("credentials", "sender"), [
    (Credentials(bearer_token="token-a"), "his-a"),
    (Credentials(client_cn="lab-b.benhvien.vn"), "lab-b"),
    (Credentials(bearer_token="token-b", client_cn="lab-b.benhvien.vn"), None),  # a wrong token never falls back
    (Credentials(client_cn="someone-else"), None),
    (Credentials(), None),
])
async def test_authenticate_by_token_digest_or_certificate_name(store: SqliteStore, credentials: Credentials,
                                                                sender: str | None) -> None:
    assert intake(store).authenticate(credentials) == sender


async def test_empty_sender_list_is_open(store: SqliteStore) -> None:
    assert intake(store, senders=[]).authenticate(Credentials()) == "anonymous"


def test_control_id_prefers_bundle_identifier_then_conditional_criteria() -> None:
    keyed = PayloadCipher(b"k" * 32).lookup_digest
    identified = bundle("transaction", identifier={"system": "urn:s", "value": "TX-1"})
    assert control_id(identified, "identifier=x", keyed) == "urn:s|TX-1"
    criteria = "identifier=urn:hbgw:id:cccd|048190007788"
    conditional = control_id(PATIENT, criteria, keyed)
    assert conditional == control_id(PATIENT, criteria, keyed)
    assert conditional.startswith("Patient?key:") and "048190007788" not in conditional
    bare = hashlib.sha256(criteria.encode()).hexdigest()
    assert bare not in conditional and conditional != control_id(PATIENT, criteria, PayloadCipher(b"j" * 32).lookup_digest)
    assert control_id(PATIENT, "", keyed) != control_id(PATIENT, "", keyed)


async def test_bundle_without_entries_or_with_an_entry_without_resource_is_422(store: SqliteStore) -> None:
    for resource, expression in [(bundle("collection"), "Bundle.entry"),
                                 (bundle("transaction", {"request": {"method": "POST"}}), "Bundle.entry[0].resource")]:
        answer = await intake(store).submit(request(resource))
        assert answer.status == 422
        assert json.loads(answer.body)["issue"][0]["expression"] == [expression]
    assert await store.claim_messages(10) == []


async def test_batch_whose_entries_all_fail_is_422_and_not_stored(store: SqliteStore) -> None:
    def refuse_all(resource: dict[str, Any]) -> list[Issue]:
        return [Issue(f"Bundle.entry[{index}].resource.gender", "value", "gender is wrong")
                for index in range(len(resource["entry"]))]
    answer = await intake(store, refuse_all).submit(request(bundle("batch", entry(PATIENT), entry(PATIENT))))
    assert answer.status == 422
    assert await store.claim_messages(10) == []


async def test_warnings_travel_with_an_accepted_answer(store: SqliteStore) -> None:
    def warn(_resource: dict[str, Any]) -> list[Issue]:
        return [Issue("Patient.identifier", "bhyt-missing", "no health-insurance card", severity="warning")]
    answer = await intake(store, warn).submit(request(PATIENT, "create"))
    outcome = json.loads(answer.body)
    assert answer.status == 201 and answer.location.startswith("Patient/")
    assert [issue["severity"] for issue in outcome["issue"]] == ["information", "warning"]
    assert outcome["issue"][1]["details"]["coding"][0]["code"] == "bhyt-missing"


async def test_refusals_and_acceptances_are_counted_with_source_fhir(store: SqliteStore) -> None:
    def bad_gender(resource: dict[str, Any]) -> list[Issue]:
        return [Issue("Patient.gender", "value", "gender is wrong")] if resource.get("gender") == "x" else []
    running = intake(store, bad_gender)
    await running.submit(request(PATIENT, "create"))
    await running.submit(request({**PATIENT, "gender": "x"}, "create"))
    metrics = running._metrics
    assert metrics.acks.labels("fhir", "201")._value.get() == 1
    assert metrics.acks.labels("fhir", "422")._value.get() == 1
    assert metrics.mapping_errors.labels("fhir", "value")._value.get() == 1
    assert metrics.messages_received.labels("fhir", "Patient")._value.get() == 2


async def test_validate_never_stores_even_a_valid_resource(store: SqliteStore) -> None:
    answer = await intake(store).validate(request(PATIENT, "validate"))
    assert answer.status == 200 and json.loads(answer.body)["issue"][0]["severity"] == "information"
    assert await store.claim_messages(10) == []


@pytest.mark.parametrize("resource_type", ["MedicationRequest", "MedicationDispense", "MedicationAdministration",
                                           "ChargeItem", "ClinicalImpression"])
async def test_claim_resources_are_taken_alone_with_the_real_mapping(store: SqliteStore, resource_type: str) -> None:
    from gateway.app import validate_fhir
    from tests.mappings.claim_samples import outpatient_bundle

    resource = next((e["resource"] for e in outpatient_bundle()["entry"]
                     if e["resource"]["resourceType"] == resource_type), None) or {
        "resourceType": "MedicationAdministration", "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": "urn:hbgw:code:pkdk-danang", "code": "METF500"}]},
        "effectiveDateTime": "2026-05-02T10:30:00+07:00",
        "request": {"identifier": {"system": "urn:hbgw:order:pkdk-danang", "value": "DT26-5120-1"}}}
    link = "context" if resource_type in ("MedicationDispense", "MedicationAdministration", "ChargeItem") \
        else "encounter"
    alone = {**resource, "subject": {"identifier": {"system": "urn:hbgw:id:cccd", "value": "048190007788"}},
             link: {"identifier": {"system": "urn:hbgw:visit:pkdk-danang", "value": "KB26-005120"}}}
    answer = await intake(store, validate_fhir).submit(request(alone, "create"))
    assert answer.status == 201, answer.body
