"""Giving inbound FHIR resources the document's stable ids and rewriting references to match."""
from __future__ import annotations

import json
from typing import Any

from mappings.fhir_common import resource_id
from mappings.fhir_in.references import entry_keys

SINGLETONS = frozenset({"Patient", "Encounter"})
CONTENT_KEYS: dict[str, tuple[str, ...]] = {
    "Condition": ("code", "onsetDateTime", "recordedDate"),
    "Observation": ("code", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
    "Procedure": ("code", "performedDateTime", "performedPeriod"),
    "MedicationStatement": ("medicationCodeableConcept", "medicationReference", "effectiveDateTime",
                            "effectivePeriod"),
    "AllergyIntolerance": ("code",),
    "Immunization": ("vaccineCode", "occurrenceDateTime"),
    "DiagnosticReport": ("code", "effectiveDateTime", "effectivePeriod"),
    "DocumentReference": ("type", "date"),
    "FamilyMemberHistory": ("relationship", "condition"),
    "MedicationRequest": ("medicationCodeableConcept", "authoredOn"),
    "MedicationDispense": ("medicationCodeableConcept", "whenHandedOver", "authorizingPrescription"),
    "MedicationAdministration": ("medicationCodeableConcept", "effectiveDateTime", "request"),
    "ChargeItem": ("code", "occurrenceDateTime", "occurrencePeriod"),
    "ClinicalImpression": ("effectiveDateTime", "date", "description"),
    "Coverage": ("subscriberId", "period"),
    "Organization": ("name",),
    "Practitioner": ("name",),
}


def stable_id(document_id: str, resource: dict[str, Any], fallback: str) -> str:
    """Patient and Encounter are one per document; others by business identifier, else by content.

    Content (code and time) rather than fullUrl, because many senders mint new urn:uuid fullUrls for
    every transaction: a resent Bundle must replace its resources, not add copies.
    """
    rtype = resource["resourceType"]
    if rtype in SINGLETONS:
        return resource_id(document_id, rtype)
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    for identifier in identifiers or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            return resource_id(document_id, rtype, str(identifier.get("system", "")), str(identifier["value"]))
    content = {name: resource[name] for name in CONTENT_KEYS.get(rtype, ()) if resource.get(name)}
    if content:
        return resource_id(document_id, rtype, json.dumps(content, sort_keys=True, ensure_ascii=False))
    return resource_id(document_id, rtype, fallback)


def rewrite(value: Any, targets: dict[str, str]) -> Any:
    """A deep copy with every `reference` that names a known resource pointed at its new urn:uuid."""
    if isinstance(value, list):
        return [rewrite(item, targets) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: rewrite(item, targets) for key, item in value.items()}
    target = targets.get(out.get("reference", "")) if isinstance(out.get("reference"), str) else None
    if target:
        out["reference"] = f"urn:uuid:{target}"
    return out


def adopt(document_id: str, entries: list[tuple[str, dict[str, Any]]],
          logical: dict[str, str]) -> list[dict[str, Any]]:
    """Resources with document ids (meta and request dropped) and references rewritten.

    `entries` are (fullUrl, resource); `logical` maps extra reference strings (e.g. "Patient") to ids.
    """
    targets = dict(logical)
    ids = []
    for index, (full_url, resource) in enumerate(entries):
        new_id = stable_id(document_id, resource, full_url or f"entry{index}")
        ids.append(new_id)
        for key in entry_keys(full_url, resource):
            targets[key] = new_id
    out = []
    for new_id, (_, resource) in zip(ids, entries, strict=True):
        body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        out.append({"resourceType": resource["resourceType"], "id": new_id, **rewrite(body, targets)})
    return out
