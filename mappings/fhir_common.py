"""Small helpers shared by every mapping into the canonical FHIR form: ids, references, dates."""
from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime
from typing import Any

NAMESPACE = uuid.UUID("6f1c6a52-3d0e-4c4b-9a57-1f0e5c2b7a10")
VN_OFFSET = "+07:00"
HL7_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9\-]")
MAX_DOCUMENT_ID = 100


def resource_id(document_id: str, resource_type: str, *key: str) -> str:
    """A stable id for a resource within a document, so the same input merges instead of duplicating."""
    return str(uuid.uuid5(NAMESPACE, "|".join((document_id, resource_type, *key))))


def ref(rid: str) -> dict[str, str]:
    """A Bundle-internal reference to a resource id (its fullUrl is urn:uuid:<id>)."""
    return {"reference": f"urn:uuid:{rid}"}


def document_id(*parts: str) -> str:
    """An episode id (MA_LK) from non-personal parts, injective: distinct visits never share an id.

    Parts are joined by "_"; inside a part every character outside [A-Za-z0-9-] is written ".XXXX"
    (its code point in hex), so "VV/1" and "VV 1" stay apart. Past 100 characters the tail is a hash.
    """
    encoded = "_".join(_UNSAFE.sub(lambda m: f".{ord(m.group()):04X}", part) for part in parts if part)
    if len(encoded) <= MAX_DOCUMENT_ID:
        return encoded
    return encoded[:80] + "." + hashlib.sha256(encoded.encode()).hexdigest()[:19]


def fhir_datetime(hl7: str) -> str | None:
    """An HL7 DTM as a FHIR date or dateTime (None when not a real time); no zone means Vietnam time."""
    match = HL7_DTM.fullmatch(hl7.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if zone and not (zone[1:] == "1400" or (int(zone[1:3]) < 14 and int(zone[3:]) < 60)):
        return None  # FHIR allows offsets up to 14:00 only
    if not month:
        return year
    if not day:
        return f"{year}-{month}"
    if not hour:
        return f"{year}-{month}-{day}"
    offset = f"{zone[:3]}:{zone[3:]}" if zone else VN_OFFSET
    return f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{offset}"


def codeable(system: str, code: str, display: str = "") -> dict[str, Any]:
    """A CodeableConcept with one coding (display only when known); blanks in the code are normalised."""
    coding: dict[str, str] = {"system": system, "code": " ".join(code.split())}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def as_instant(value: str) -> str:
    """A FHIR date or dateTime widened to an instant (midnight Vietnam time when only a date is known)."""
    if "T" in value:
        return value
    parts = (value.split("-") + ["01", "01"])[:3]
    return f"{parts[0]}-{parts[1]}-{parts[2]}T00:00:00{VN_OFFSET}"


def ends_before_start(start: str, end: str) -> bool:
    """True when a FHIR period ends before it starts; equal is fine, and a bare date compares by date only."""
    if "T" in start and "T" in end:
        try:
            return datetime.fromisoformat(end) < datetime.fromisoformat(start)
        except ValueError:
            return False
    common = min(len(start.split("T")[0]), len(end.split("T")[0]))
    return end[:common] < start[:common]
