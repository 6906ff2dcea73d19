"""Assembling fragments into versioned FHIR R4B document Bundles (one per episode)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from mappings.fhir_common import ref, resource_id
from mappings.model import Document, DocumentKind, Fragment
from mappings.vn import systems

SECTIONS: tuple[tuple[str, str], ...] = (
    ("administrative", "Thông tin hành chính"),
    ("history", "Tiền sử"),
    ("episode", "Thông tin đợt khám, chữa bệnh"),
    ("record-summary", "Tóm tắt hồ sơ bệnh án"),
    ("health-check", "Khám sức khỏe"),
    ("immunization", "Tiêm chủng"),
)
SECTION_OF_TYPE = {
    "Patient": "administrative", "Organization": "administrative", "Practitioner": "administrative",
    "AllergyIntolerance": "history", "FamilyMemberHistory": "history",
    "Encounter": "episode", "Condition": "episode", "Procedure": "episode", "MedicationStatement": "episode",
    "Observation": "episode", "DiagnosticReport": "episode",
    "DocumentReference": "record-summary", "Immunization": "immunization", "Coverage": "administrative",
    "MedicationRequest": "episode", "MedicationDispense": "episode", "MedicationAdministration": "episode",
    "ChargeItem": "episode", "ClinicalImpression": "episode",
}
HEALTH_CHECK_TYPES = frozenset({"Observation", "DiagnosticReport"})
KIND_TITLE: dict[DocumentKind, str] = {
    "episode": "Sổ sức khỏe điện tử: đợt khám, chữa bệnh",
    "health_check": "Sổ sức khỏe điện tử: khám sức khỏe",
    "immunization": "Sổ sức khỏe điện tử: tiêm chủng",
}
GAP_FILLED_TYPES = frozenset({"Patient", "Encounter"})
OWNING_SOURCES = ("ADT:", "fhir:")
SOURCE_PREFIX = "urn:hbgw:event:"
EMPTY_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">Không có dữ liệu</div>'


def _section_of(resource: dict[str, Any], kind: DocumentKind) -> str:
    rtype = resource["resourceType"]
    if kind == "health_check" and rtype in HEALTH_CHECK_TYPES:
        return "health-check"
    if rtype == "Condition":
        categories = {c.get("code") for cat in resource.get("category", []) for c in cat.get("coding", [])}
        return "episode" if "encounter-diagnosis" in categories else "history"
    return SECTION_OF_TYPE.get(rtype, "episode")


def _source_uri(source_event: str) -> str:
    """meta.source for a fragment's event ("ADT^A01" becomes urn:hbgw:event:ADT:A01, a valid URI)."""
    return SOURCE_PREFIX + source_event.replace("^", ":")


def _is_owner(source: str) -> bool:
    return source.removeprefix(SOURCE_PREFIX).startswith(OWNING_SOURCES)


def _newer_wins(new: dict[str, Any], old: dict[str, Any]) -> bool:
    if new["resourceType"] in GAP_FILLED_TYPES:
        new_owner, old_owner = _is_owner(new["meta"]["source"]), _is_owner(old["meta"]["source"])
        if new_owner != old_owner:
            return new_owner
    return datetime.fromisoformat(new["meta"]["lastUpdated"]) >= datetime.fromisoformat(old["meta"]["lastUpdated"])


def _merge(current: dict[tuple[str, str], dict[str, Any]], fragment: Fragment) -> None:
    """By identity, the later event replaces; an earlier one (late arrival) only fills gaps.

    Patient and Encounter belong to the ADT (or FHIR) feed: results and summaries only fill their gaps.
    """
    meta = {"lastUpdated": fragment.event_time, "source": _source_uri(fragment.source_event)}
    for incoming in fragment.resources:
        resource = {**incoming, "meta": meta}
        key = (resource["resourceType"], resource["id"])
        older = current.get(key)
        if older is None or _newer_wins(resource, older):
            current[key] = resource
        else:
            current[key] = {**resource, **older}


def _section(code: str, title: str, entries: list[str]) -> dict[str, Any]:
    section: dict[str, Any] = {"title": title, "code": {"coding": [{"system": systems.SECTION, "code": code}]}}
    if entries:
        section["entry"] = [ref(rid) for rid in entries]
    else:
        section["text"] = {"status": "generated", "div": EMPTY_DIV}
        section["emptyReason"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "unavailable"}]}
    return section


def _composition(document_id: str, kind: DocumentKind, date: str,
                 resources: list[dict[str, Any]], sections: dict[str, list[str]]) -> dict[str, Any]:
    patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
    org = next((r for r in resources if r["resourceType"] == "Organization"), None)
    encounter = next((r for r in resources if r["resourceType"] == "Encounter"), None)
    composition: dict[str, Any] = {
        "resourceType": "Composition", "id": resource_id(document_id, "Composition"),
        "identifier": {"system": systems.DOCUMENT, "value": document_id},
        "status": "final", "type": {"coding": [{"system": systems.DOCUMENT, "code": kind}], "text": KIND_TITLE[kind]},
        "date": date, "title": KIND_TITLE[kind],
        "author": [ref(org["id"])] if org else [{"display": "healthbook-gateway"}],
        "section": [_section(code, title, sections[code]) for code, title in SECTIONS],
    }
    if patient:
        composition["subject"] = ref(patient["id"])
    if encounter:
        composition["encounter"] = ref(encounter["id"])
    return composition


def assemble(previous: Document | None, fragment: Fragment) -> Document:
    """Apply one fragment to the latest version of its document, giving the next version to submit."""
    if previous is not None and previous.document_id != fragment.document_id:
        raise ValueError("fragment belongs to another document")
    current: dict[tuple[str, str], dict[str, Any]] = {}
    if previous is not None:  # a version purged by retention is {}: the next one starts from an empty document
        for entry in previous.bundle.get("entry", [])[1:]:
            resource = entry["resource"]
            current[(resource["resourceType"], resource["id"])] = resource
    _merge(current, fragment)
    kind = fragment.kind
    order = {code: n for n, (code, _) in enumerate(SECTIONS)}
    resources = sorted(current.values(), key=lambda r: (order[_section_of(r, kind)], r["resourceType"], r["id"]))
    sections: dict[str, list[str]] = {code: [] for code, _ in SECTIONS}
    for resource in resources:
        sections[_section_of(resource, kind)].append(resource["id"])
    date = fragment.event_time
    if previous and "timestamp" in previous.bundle and \
            datetime.fromisoformat(previous.bundle["timestamp"]) > datetime.fromisoformat(date):
        date = previous.bundle["timestamp"]
    version = previous.version + 1 if previous else 1
    composition = _composition(fragment.document_id, kind, date, resources, sections)
    bundle = {
        "resourceType": "Bundle", "id": resource_id(fragment.document_id, "Bundle", str(version)),
        "meta": {"versionId": str(version)},
        "identifier": {"system": systems.DOCUMENT, "value": fragment.document_id},
        "type": "document", "timestamp": date,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in (composition, *resources)],
    }
    return Document(fragment.document_id, version, kind, fragment.patient_key, bundle)
