"""Domain types shared by mappings, adapters and the gateway core; plain data, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DocumentKind = Literal["episode", "health_check", "immunization"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One precise problem with an input, located so the sender can fix it.

    `location` is an HL7 segment-field (`PID-3`, `PID-3.1`, `OBX[10]-5` for the tenth OBX) or a FHIR element path
    (`Bundle.entry[1].resource.birthDate`). `code` is a stable machine code (`required`,
    `cccd-format`, `cccd-birth-mismatch`, `unsupported-message-type`, ...). `message` is for humans
    and never repeats a personal value (no names, id numbers or dates of birth).
    """

    location: str
    code: str
    message: str
    severity: Severity = "error"


@dataclass(frozen=True, slots=True)
class FacilityInfo:
    """The sending facility as the national portals know it; the two codes are never swapped."""

    name: str
    bhxh_code: str  # 5 characters, BHXH reception portal (MACSKCB)
    moh_facility_id: str  # 13 digits, Ministry of Health data hub (sender_id)
    tax_code: str = ""
    head_code: str = ""  # XML 130 MA_TTDV: health id (BHXH number) of the facility head or delegate


@dataclass(frozen=True, slots=True)
class Fragment:
    """What one inbound message contributes to one health-book document.

    `document_id` is stable for the episode (it becomes MA_LK) and carries no personal data.
    `patient_key` is a one-way key used only to order one patient's documents; never log it.
    `resources` are FHIR R4B resources as JSON-compatible dicts.
    """

    document_id: str
    patient_key: str
    kind: DocumentKind
    event_time: str
    resources: tuple[dict[str, Any], ...]
    source_event: str = ""  # e.g. "ADT^A01", "ORU^R01", "fhir:Bundle/transaction"


@dataclass(frozen=True, slots=True)
class MappingResult:
    """Fragments made from one input, or the issues that stop it becoming a valid record."""

    fragments: tuple[Fragment, ...] = ()
    issues: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(issue.severity == "error" for issue in self.issues)


@dataclass(frozen=True, slots=True)
class Document:
    """One version of a health-book document: a FHIR R4B document Bundle as a JSON dict."""

    document_id: str
    version: int
    kind: DocumentKind
    patient_key: str
    bundle: dict[str, Any] = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.document_id}:v{self.version}"
