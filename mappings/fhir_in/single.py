"""Single FHIR resources name their patient and episode by identifier (logical references)."""
from __future__ import annotations

import base64
import re
from typing import Any

from mappings.fhir_in.identity import Identity, identity_of

TAGS = re.compile(r"<[^>]+>")
CONTEXT_TYPES = frozenset({"MedicationStatement", "MedicationDispense", "MedicationAdministration", "ChargeItem"})


def logical_identity(resource: dict[str, Any]) -> tuple[Identity, str]:
    """The CCCD/BHYT in subject.identifier (or patient.identifier), with the path to report."""
    rtype = resource["resourceType"]
    name = "patient" if "patient" in resource else "subject"
    identifier = (resource.get(name) or {}).get("identifier")
    return identity_of([identifier] if identifier else []), f"{rtype}.{name}.identifier"


def logical_visit(resource: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The visit identifier: the Encounter's own, or encounter.identifier / context.identifier."""
    rtype = resource["resourceType"]
    if rtype == "Encounter":
        identifier = (resource.get("identifier") or [None])[0]
        path = f"{rtype}.identifier"
    else:
        name = "context" if rtype in CONTEXT_TYPES else "encounter"
        identifier = (resource.get(name) or {}).get("identifier")
        path = f"{rtype}.{name}.identifier"
    if isinstance(identifier, dict) and identifier.get("value"):
        return identifier, path
    return None, path


def composition_summary(composition: dict[str, Any], patient_id: str, encounter_id: str) -> dict[str, Any]:
    """A Composition sent alone becomes the record summary: a DocumentReference holding its section texts."""
    texts = []
    for section in composition.get("section") or []:
        body = TAGS.sub("", ((section.get("text") or {}).get("div") or "")).strip()
        if body:
            texts.append(f"{section.get('title', '')}\n{body}".strip())
    text = "\n\n".join(texts)
    summary: dict[str, Any] = {
        "resourceType": "DocumentReference", "status": "current", "docStatus": "final",
        "type": composition.get("type"), "subject": {"reference": f"urn:uuid:{patient_id}"},
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode(),
                                    "title": composition.get("title", "")}}],
        "context": {"encounter": [{"reference": f"urn:uuid:{encounter_id}"}]},
    }
    if composition.get("identifier"):
        summary["identifier"] = [composition["identifier"]]
    if composition.get("date"):
        summary["date"] = composition["date"]
    return summary
