"""Assembling episodes from several messages into versioned, valid FHIR R4B document Bundles."""
from __future__ import annotations

from functools import reduce
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from mappings.document import SECTIONS, assemble
from mappings.hl7v2 import map_message
from mappings.model import Document, Fragment
from tests.mappings.conftest import corpus_text, replace_field


def fragment_of(message: str) -> Fragment:
    result = map_message(message)
    assert result.ok and len(result.fragments) == 1, result.issues
    return result.fragments[0]


def corpus_fragment(name: str) -> Fragment:
    return fragment_of(corpus_text(name))


def build(*fragments: Fragment) -> Document:
    return reduce(lambda doc, frag: assemble(doc, frag), fragments, None)  # type: ignore[arg-type, return-value]


def resources(doc: Document, resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in doc.bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def section_entries(doc: Document) -> dict[str, int]:
    composition = doc.bundle["entry"][0]["resource"]
    return {s["code"]["coding"][0]["code"]: len(s.get("entry", [])) for s in composition["section"]}


EPISODE_FILES = ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a08_update.hl7", "adt_a03_discharge.hl7",
                 "mdm_t02_summary.hl7")


def test_full_episode_is_a_valid_document() -> None:
    doc = build(*(corpus_fragment(name) for name in EPISODE_FILES))
    Bundle.model_validate(doc.bundle)
    assert doc.version == 5 and doc.kind == "episode" and doc.idempotency_key == "4000000000123_VV26000456:v5"
    bundle = doc.bundle
    assert bundle["type"] == "document" and bundle["identifier"]["value"] == doc.document_id
    composition = bundle["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert [s["code"]["coding"][0]["code"] for s in composition["section"]] == [c for c, _ in SECTIONS]
    assert section_entries(doc) == {"administrative": 2, "history": 1, "episode": 19, "record-summary": 1,
                                    "health-check": 0, "immunization": 0}
    encounter = resources(doc, "Encounter")[0]
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2026-03-18T14:30:00+07:00"
    assert resources(doc, "Patient")[0]["address"][0]["line"] == ["Số 12 đường Lê Lợi"], "A03 is the last ADT"
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])


@pytest.mark.parametrize("order", [EPISODE_FILES, tuple(reversed(EPISODE_FILES))])
def test_arrival_order_does_not_change_the_clinical_content(order: tuple[str, ...]) -> None:
    doc = build(*(corpus_fragment(name) for name in order))
    assert section_entries(doc)["episode"] == 19
    assert resources(doc, "Encounter")[0]["period"]["end"] == "2026-03-18T14:30:00+07:00"


def test_resources_record_their_event_as_a_uri() -> None:
    doc = build(corpus_fragment("adt_a01_admit.hl7"))
    assert {e["resource"]["meta"]["source"] for e in doc.bundle["entry"][1:]} == {"urn:hbgw:event:ADT:A01"}


def test_same_message_twice_adds_nothing() -> None:
    once = build(corpus_fragment("oru_r01_lab.hl7"))
    twice = assemble(once, corpus_fragment("oru_r01_lab.hl7"))
    assert twice.version == 2
    assert twice.bundle["entry"] == once.bundle["entry"]


def test_results_after_discharge_do_not_reopen_the_encounter() -> None:
    doc = build(corpus_fragment("adt_a03_discharge.hl7"), corpus_fragment("oru_r01_lab.hl7"))
    encounter = resources(doc, "Encounter")[0]
    assert encounter["status"] == "finished" and "end" in encounter["period"]


def test_cancel_admit_marks_the_encounter_cancelled() -> None:
    admit = corpus_text("adt_a01_admit.hl7")
    doc = build(fragment_of(admit), fragment_of(replace_field(admit, "MSH", 9, "ADT^A11^ADT_A09")))
    assert resources(doc, "Encounter")[0]["status"] == "cancelled"
    Bundle.model_validate(doc.bundle)


def test_cancel_discharge_reopens_the_encounter() -> None:
    discharge = corpus_text("adt_a03_discharge.hl7")
    doc = build(fragment_of(discharge), fragment_of(replace_field(discharge, "MSH", 9, "ADT^A13^ADT_A01")))
    encounter = resources(doc, "Encounter")[0]
    assert encounter["status"] == "in-progress" and "end" not in encounter["period"]
    assert "hospitalization" not in encounter


def test_merge_replaces_the_patient_of_the_episode() -> None:
    admit = corpus_text("adt_a01_admit.hl7")
    merge = replace_field(replace_field(admit, "MSH", 9, "ADT^A40^ADT_A39"), "PV1", 19, "")
    merge += "\rMRG|BN25000001^^^BVDKNA^MR||||VV26000456"
    doc = build(fragment_of(admit), fragment_of(merge))
    patients = resources(doc, "Patient")
    assert len(patients) == 1 and patients[0]["identifier"][-1]["use"] == "old"
    assert resources(doc, "Encounter")[0]["status"] == "in-progress"


@pytest.mark.parametrize(("name", "kind", "sections"), [
    ("oru_r01_health_check.hl7", "health_check", {"administrative": 2, "history": 0, "episode": 1,
                                                  "record-summary": 0, "health-check": 12, "immunization": 0}),
    ("vxu_v04_immunization.hl7", "immunization", {"administrative": 2, "history": 0, "episode": 0,
                                                  "record-summary": 0, "health-check": 0, "immunization": 1}),
])
def test_other_document_kinds(name: str, kind: str, sections: dict[str, int]) -> None:
    doc = build(corpus_fragment(name))
    Bundle.model_validate(doc.bundle)
    assert doc.kind == kind and section_entries(doc) == sections
    empty = [s for s in doc.bundle["entry"][0]["resource"]["section"] if "entry" not in s]
    assert all("emptyReason" in s and "text" in s for s in empty)


def test_fragment_of_another_document_is_refused() -> None:
    doc = build(corpus_fragment("adt_a01_admit.hl7"))
    with pytest.raises(ValueError):
        assemble(doc, corpus_fragment("vxu_v04_immunization.hl7"))


def test_a_late_message_after_retention_purged_the_episode_starts_from_an_empty_document() -> None:
    """Found in review: the purged latest version reads as an empty bundle ({}), and assembling on it raised
    KeyError, so the late message was charged and parked instead of sent (see gateway/retention.py)."""
    admitted = build(corpus_fragment("adt_a01_admit.hl7"))
    purged = Document(admitted.document_id, 3, admitted.kind, admitted.patient_key, {})
    late = assemble(purged, corpus_fragment("oru_r01_lab.hl7"))
    fresh = assemble(None, corpus_fragment("oru_r01_lab.hl7"))
    Bundle.model_validate(late.bundle)
    assert late.version == 4, "the version number continues, so the portal replaces the older version"
    assert late.bundle["entry"] == fresh.bundle["entry"] and late.bundle["timestamp"] == fresh.bundle["timestamp"]
