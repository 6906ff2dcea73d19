"""Small helpers shared by every mapping into the canonical FHIR form: ids, references, dates."""
from __future__ import annotations

import re
import uuid
from typing import Any

NAMESPACE = uuid.UUID("6f1c6a52-3d0e-4c4b-9a57-1f0e5c2b7a10")
VN_OFFSET = "+07:00"
HL7_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?")
_SAFE_ID = re.compile(r"[^A-Za-z0-9.\-]+")
MAX_DOCUMENT_ID = 100


def resource_id(document_id: str, resource_type: str, *key: str) -> str:
    """A stable id for a resource within a document, so the same input merges instead of duplicating."""
    return str(uuid.uuid5(NAMESPACE, "|".join((document_id, resource_type, *key))))


def ref(rid: str) -> dict[str, str]:
    """A Bundle-internal reference to a resource id (its fullUrl is urn:uuid:<id>)."""
    return {"reference": f"urn:uuid:{rid}"}


def document_id(*parts: str) -> str:
    """An episode id (MA_LK) from non-personal parts: at most 100 characters of [A-Za-z0-9.-_]."""
    cleaned = [_SAFE_ID.sub("-", part).strip("-") for part in parts if part]
    return "_".join(cleaned)[:MAX_DOCUMENT_ID]


def fhir_datetime(hl7: str) -> str | None:
    """An HL7 DTM as a FHIR date or dateTime; a time without zone is taken as Vietnam time (+07:00)."""
    match = HL7_DTM.fullmatch(hl7.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    if not hour:
        return f"{year}-{month}-{day}"
    offset = f"{zone[:3]}:{zone[3:]}" if zone else VN_OFFSET
    return f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{offset}"


def codeable(system: str, code: str, display: str = "") -> dict[str, Any]:
    """A CodeableConcept with one coding (display only when known)."""
    coding: dict[str, str] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def as_instant(value: str) -> str:
    """A FHIR date or dateTime widened to an instant (midnight Vietnam time when only a date is known)."""
    if "T" in value:
        return value
    parts = (value.split("-") + ["01", "01"])[:3]
    return f"{parts[0]}-{parts[1]}-{parts[2]}T00:00:00{VN_OFFSET}"
