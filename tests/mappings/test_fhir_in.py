"""FHIR input: the corpus Bundle, every Bundle type, single resources, identity rules, OperationOutcome."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from mappings.document import assemble
from mappings.fhir_in import map_fhir, operation_outcome
from mappings.hl7v2 import map_message
from mappings.model import Issue
from tests.mappings.conftest import CORPUS, corpus_text

CCCD = "048190007788"
ENCOUNTER_REF = {"identifier": {"system": "urn:hbgw:visit:pkdk-danang", "value": "KB26-004411"}}
PATIENT_REF = {"identifier": {"system": "urn:hbgw:id:cccd", "value": CCCD}}


@pytest.fixture
def bundle() -> dict[str, Any]:
    with open(CORPUS / "fhir" / "transaction_outpatient_visit.json", encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def codes_at(issues: tuple[Issue, ...]) -> list[tuple[str, str]]:
    return [(i.location, i.code) for i in issues if i.severity == "error"]


def test_corpus_transaction_maps_to_a_valid_document(bundle: dict[str, Any]) -> None:
    result = map_fhir(bundle)
    assert result.ok and result.issues == ()
    fragment = result.fragments[0]
    assert (fragment.document_id, fragment.kind, fragment.source_event) == (
        "pkdk-danang_KB26-004411", "episode", "fhir:Bundle/transaction")
    assert fragment.event_time == "2026-04-02T09:05:00+07:00"
    doc = assemble(None, fragment)
    Bundle.model_validate(doc.bundle)
    by_type = {e["resource"]["resourceType"]: e["resource"] for e in doc.bundle["entry"]}
    full_urls = {e["fullUrl"] for e in doc.bundle["entry"]}
    assert by_type["Condition"]["subject"]["reference"] in full_urls
    assert by_type["MedicationStatement"]["context"]["reference"] == f"urn:uuid:{by_type['Encounter']['id']}"
    assert "request" not in json.dumps(doc.bundle)


def test_same_bundle_twice_gives_same_ids(bundle: dict[str, Any]) -> None:
    first, second = map_fhir(bundle).fragments[0], map_fhir(copy.deepcopy(bundle)).fragments[0]
    assert [r["id"] for r in first.resources] == [r["id"] for r in second.resources]


def test_resent_bundle_with_new_full_urls_replaces_instead_of_adding(bundle: dict[str, Any]) -> None:
    fresh = json.dumps(bundle).replace("0b7c1a52-4a1e-4f4e-9a0c-", "9f9f9f9f-4a1e-4f4e-9a0c-")
    resent = json.loads(fresh)
    doc = assemble(assemble(None, map_fhir(bundle).fragments[0]), map_fhir(resent).fragments[0])
    assert len(doc.bundle["entry"]) == 6
    references = {e["resource"].get("subject", {}).get("reference") for e in doc.bundle["entry"][2:]}
    patient = next(e["fullUrl"] for e in doc.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert references == {patient}


@pytest.mark.parametrize("bundle_type", ["transaction", "batch", "document", "collection"])
def test_bundle_types(bundle: dict[str, Any], bundle_type: str) -> None:
    bundle["type"] = bundle_type
    if bundle_type in ("document", "collection"):
        for entry in bundle["entry"]:
            del entry["request"]
    if bundle_type == "document":
        bundle["identifier"] = {"system": "urn:x", "value": "1"}
        bundle["timestamp"] = "2026-04-02T09:10:00+07:00"
        bundle["entry"].insert(0, {"fullUrl": "urn:uuid:0b7c1a52-4a1e-4f4e-9a0c-2f6b6f3a9d00", "resource": {
            "resourceType": "Composition", "status": "final", "type": {"text": "x"}, "date": "2026-04-02",
            "author": [{"display": "x"}], "title": "x"}})
    result = map_fhir(bundle)
    assert result.ok and len(result.fragments[0].resources) == 5


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda b: b["entry"][0]["resource"].update(birthDate="1991-09-03"),
     [("Bundle.entry[0].resource.identifier", "cccd-birth-mismatch")]),
    (lambda b: b["entry"][0]["resource"].update(gender="male"),
     [("Bundle.entry[0].resource.identifier", "cccd-birth-mismatch")]),
    (lambda b: b["entry"][0]["resource"].update(birthDate="1990-02-31"),
     [("Bundle.entry[0].resource.birthDate", "invalid")]),
    (lambda b: b["entry"][0]["resource"].pop("birthDate"), [("Bundle.entry[0].resource.birthDate", "required")]),
    (lambda b: b["entry"][0]["resource"].pop("gender"), [("Bundle.entry[0].resource.gender", "required")]),
    (lambda b: b["entry"][0]["resource"].update(identifier=[b["entry"][0]["resource"]["identifier"][1]]),
     [("Bundle.entry[0].resource.identifier", "required")]),
    (lambda b: b["entry"][0]["resource"]["identifier"][0].update(value="04819000778"),
     [("Bundle.entry[0].resource.identifier", "cccd-format")]),
    (lambda b: b["entry"][0]["resource"]["identifier"][2].update(value="DN448481234567"),
     [("Bundle.entry[0].resource.identifier", "bhyt-format")]),
    (lambda b: b["entry"][1]["resource"].pop("identifier"), [("Bundle.entry[1].resource.identifier", "required")]),
    (lambda b: b["entry"][1]["resource"].update(status=5), [("Bundle.entry[1].resource.status", "invalid")]),
    (lambda b: b["entry"][1]["resource"]["period"].update(start="2026-04"),
     [("Bundle.entry[1].resource.period.start", "invalid-date")]),
    (lambda b: b["entry"][1]["resource"]["period"].update(end="2026-04-02T08:09:59+07:00"),
     [("Bundle.entry[1].resource.period.end", "discharge-before-admission")]),
    (lambda b: b["entry"][1]["resource"]["period"].update(end="2026-04-02T01:09:00Z"),
     [("Bundle.entry[1].resource.period.end", "discharge-before-admission")]),
    (lambda b: b["entry"][1]["resource"]["period"].update(end="2025-12-31"),
     [("Bundle.entry[1].resource.period.end", "discharge-before-admission")]),
    (lambda b: b["entry"][1]["resource"]["period"].update(end="2026-04-02T01:10:00Z"), []),
    (lambda b: b["entry"][1]["resource"]["period"].update(end="2026-04-02"), []),
    (lambda b: b["entry"][1]["resource"].update(reasonCode=None), []),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].update(value=45), []),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].update(value=384),
     [("Bundle.entry[3].resource.valueQuantity.value", "implausible-value")]),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].update(value=120, code="[degF]", unit="°F"),
     [("Bundle.entry[3].resource.valueQuantity.value", "implausible-value")]),
    (lambda b: b["entry"][3]["resource"]["valueQuantity"].update(value=101.3, code="[degF]", unit="°F"), []),
    (lambda b: b["entry"][3]["resource"]["code"]["coding"][0].update(system="urn:local") or
     b["entry"][3]["resource"]["valueQuantity"].update(value=384), []),
    (lambda b: b["entry"][0]["resource"]["identifier"].insert(0, None),
     [("Bundle.entry[0].resource.identifier", "invalid")]),
    (lambda b: b["entry"].append({"resource": {"resourceType": 7}}),
     [("Bundle.entry[5].resource.resourceType", "invalid")]),
    (lambda b: b["entry"][2]["resource"]["code"]["coding"][0].update(code="J069"),
     [("Bundle.entry[2].resource.code.coding[0].code", "icd10-format")]),
    (lambda b: b.update(type="searchset"), [("Bundle.type", "unsupported-bundle")]),
    (lambda b: b["entry"].pop(0), [("Bundle.entry", "required")]),
    (lambda b: b["entry"].append(copy.deepcopy(b["entry"][0])), [("Bundle.entry", "invalid")]),
    (lambda b: b["entry"].append({"resource": {"resourceType": "Account", "status": "active"}}),
     [("Bundle.entry[5].resource.resourceType", "unsupported-resource")]),
    (lambda b: [b["entry"].pop(i) for i in (4, 3, 2, 1)], [("Bundle.entry", "required")]),
])
def test_bundle_rules(bundle: dict[str, Any], mutate: Any, expected: list[tuple[str, str]]) -> None:
    mutate(bundle)
    result = map_fhir(bundle)
    assert codes_at(result.issues) == expected and (result.fragments == ()) == bool(expected)
    assert not any(CCCD in i.message or "1990" in i.message for i in result.issues)


@pytest.mark.parametrize(("resource", "kind"), [
    ({"resourceType": "Observation", "status": "final", "code": {"text": "Nhiệt độ"}, "subject": PATIENT_REF,
      "encounter": ENCOUNTER_REF, "effectiveDateTime": "2026-04-02T08:15:00+07:00",
      "valueQuantity": {"value": 38.4, "unit": "Cel"}}, "episode"),
    ({"resourceType": "Condition", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J06.9"}]},
      "subject": PATIENT_REF, "encounter": ENCOUNTER_REF, "recordedDate": "2026-04-02"}, "episode"),
    ({"resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}, "patient": PATIENT_REF,
      "encounter": ENCOUNTER_REF, "recordedDate": "2026-04-02"}, "episode"),
    ({"resourceType": "Procedure", "status": "completed", "code": {"text": "Điện tâm đồ"}, "subject": PATIENT_REF,
      "encounter": ENCOUNTER_REF, "performedDateTime": "2026-04-02T08:30:00+07:00"}, "episode"),
    ({"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Paracetamol"},
      "subject": PATIENT_REF, "context": ENCOUNTER_REF, "effectivePeriod": {"start": "2026-04-02"}}, "episode"),
    ({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "Công thức máu"}, "subject": PATIENT_REF,
      "encounter": ENCOUNTER_REF, "effectiveDateTime": "2026-04-02T08:15:00+07:00"}, "episode"),
    ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": PATIENT_REF,
      "identifier": [ENCOUNTER_REF["identifier"]], "period": {"start": "2026-04-02T08:10:00+07:00"}}, "episode"),
    ({"resourceType": "Composition", "status": "final", "type": {"text": "Tóm tắt"},
      "date": "2026-04-02T10:00:00+07:00",
      "author": [{"display": "BS"}], "title": "Tóm tắt", "subject": PATIENT_REF, "encounter": ENCOUNTER_REF,
      "section": [{"title": "Chẩn đoán", "text": {"status": "generated",
                                                  "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">J06.9</div>"}}]},
     "episode"),
    ({"resourceType": "Immunization", "status": "completed", "vaccineCode": {"coding": [
        {"system": "http://hl7.org/fhir/sid/cvx", "code": "45"}]}, "patient": PATIENT_REF,
      "occurrenceDateTime": "2026-01-10T10:00:00+07:00"}, "immunization"),
])
def test_single_resources(resource: dict[str, Any], kind: str) -> None:
    result = map_fhir(resource)
    assert result.ok and result.issues == (), result.issues
    fragment = result.fragments[0]
    assert fragment.kind == kind and CCCD not in fragment.document_id
    if kind == "episode":
        assert fragment.document_id == "pkdk-danang_KB26-004411"
    Bundle.model_validate(assemble(None, fragment).bundle)


def test_single_resources_join_the_bundle_episode(bundle: dict[str, Any]) -> None:
    doc = assemble(None, map_fhir(bundle).fragments[0])
    extra = map_fhir({"resourceType": "Observation", "status": "final", "code": {"text": "SpO2"},
                      "subject": PATIENT_REF, "encounter": ENCOUNTER_REF,
                      "effectiveDateTime": "2026-04-02T08:20:00+07:00", "valueQuantity": {"value": 97, "unit": "%"}})
    doc = assemble(doc, extra.fragments[0])
    observations = [e["resource"] for e in doc.bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    patient = next(e["resource"] for e in doc.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert len(observations) == 2 and {o["subject"]["reference"] for o in observations} == {f"urn:uuid:{patient['id']}"}


@pytest.mark.parametrize(("resource", "expected"), [
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "encounter": ENCOUNTER_REF},
     [("Observation.subject.identifier", "required")]),
    ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": PATIENT_REF},
     [("Observation.encounter.identifier", "required")]),
    ({"resourceType": "Patient", "gender": "female"}, [("Patient.birthDate", "required"),
                                                        ("Patient.identifier", "required")]),
    ({"resourceType": "Account", "status": "active"}, [("resourceType", "unsupported-resource")]),
    ({"resourceType": "Observation", "status": "final"}, [("Observation.code", "invalid")]),
    ({}, [("resourceType", "required")]),
    ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": PATIENT_REF,
      "identifier": [ENCOUNTER_REF["identifier"]],
      "period": {"start": "2026-04-02T08:10:00+07:00", "end": "2026-03-02T08:10:00+07:00"}},
     [("Encounter.period.end", "discharge-before-admission")]),
])
def test_single_resource_rules(resource: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    result = map_fhir(resource)
    assert codes_at(result.issues) == expected and result.fragments == ()


def test_patient_alone_changes_no_document(bundle: dict[str, Any]) -> None:
    result = map_fhir(bundle["entry"][0]["resource"])
    assert result.ok and result.fragments == () and [i.code for i in result.issues] == ["no-episode"]


@pytest.mark.parametrize("junk", [None, [], "Bundle", 5, {"resourceType": 5}, {"resourceType": "Bundle"},
                                  {"resourceType": "Bundle", "type": "transaction", "entry": [{}]},
                                  {"resourceType": "Bundle", "type": "collection", "entry": "x"}])
def test_junk_never_raises(junk: Any) -> None:
    result = map_fhir(junk)
    assert not result.ok and result.issues


def test_operation_outcome_validates_and_carries_paths() -> None:
    issues = [Issue("Bundle.entry[1].resource.birthDate", "required", "birthDate is required"),
              Issue("Patient", "no-episode", "nothing changed", "warning")]
    outcome = operation_outcome(issues)
    OperationOutcome.model_validate(outcome)
    assert [i["expression"] for i in outcome["issue"]] == [["Bundle.entry[1].resource.birthDate"], ["Patient"]]
    assert [i["code"] for i in outcome["issue"]] == ["required", "informational"]
    OperationOutcome.model_validate(operation_outcome([]))


@pytest.mark.parametrize(("code", "issue_type"), [
    ("implausible-value", "value"), ("discharge-before-admission", "invariant"), ("invalid-date", "invalid")])
def test_operation_outcome_issue_type_of_plausibility_failures(code: str, issue_type: str) -> None:
    outcome = operation_outcome([Issue("Encounter.period.end", code, "x")])
    OperationOutcome.model_validate(outcome)
    assert outcome["issue"][0]["code"] == issue_type


def test_our_own_document_bundle_maps_back_to_the_same_episode() -> None:
    doc = assemble(None, map_message(corpus_text("adt_a03_discharge.hl7")).fragments[0])
    result = map_fhir(doc.bundle)
    assert result.ok and result.issues == ()
    fragment = result.fragments[0]
    assert fragment.document_id == doc.document_id and fragment.patient_key == doc.patient_key
    assert sorted(r["resourceType"] for r in fragment.resources) == sorted(
        e["resource"]["resourceType"] for e in doc.bundle["entry"][1:])


BP_PANEL = {"resourceType": "Observation", "status": "final", "subject": PATIENT_REF, "encounter": ENCOUNTER_REF,
            "effectiveDateTime": "2026-04-02T08:15:00+07:00",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                           "valueQuantity": {"value": value, "unit": "mmHg", "code": "mm[Hg]"}}
                          for code, value in (("8480-6", 120), ("8462-4", 80))]}


@pytest.mark.parametrize(("change", "expected"), [
    ({}, []),
    ({"valueQuantity": {"value": -1, "unit": "kg", "code": "kg"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]}, "component": []},
     [("Observation.valueQuantity.value", "implausible-value")]),
    ({"component": [{**BP_PANEL["component"][0], "valueQuantity": {"value": 1200, "code": "mm[Hg]"}},
                    BP_PANEL["component"][1]]},
     [("Observation.component[0].valueQuantity.value", "implausible-value")]),
    ({"component": [BP_PANEL["component"][0], {**BP_PANEL["component"][1], "valueQuantity": {"value": 401}}]},
     [("Observation.component[1].valueQuantity.value", "implausible-value")]),
])
def test_single_observation_vital_signs(change: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    result = map_fhir({**copy.deepcopy(BP_PANEL), **change})
    assert codes_at(result.issues) == expected and (result.fragments == ()) == bool(expected)
    assert all("outside the plausible range" in i.message and "1200" not in i.message for i in result.issues)
