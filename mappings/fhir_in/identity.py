"""The Vietnamese identity rules applied to FHIR Patients and to logical patient references."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from mappings.model import Issue
from mappings.vn import codes, systems
from mappings.vn.identifiers import bhyt_issues, cccd_issues, patient_key

FHIR_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", re.ASCII)
CCCD_TYPES = frozenset({"NNVNM"})
BHYT_TYPES = frozenset({"HC"})


@dataclass(frozen=True, slots=True)
class Identity:
    """The patient's CCCD and BHYT card as found; either may be empty."""

    cccd: str = ""
    bhyt: str = ""

    @property
    def key(self) -> str:
        return patient_key("cccd", self.cccd) if self.cccd else patient_key("bhyt", self.bhyt)


def _type_codes(identifier: dict[str, Any]) -> set[str]:
    kind = identifier.get("type") or {}
    return {str(c.get("code", "")).upper() for c in kind.get("coding", []) if isinstance(c, dict)}


def identity_of(identifiers: list[Any]) -> Identity:
    """Pick the CCCD (system or type NNVNM) and BHYT card (system or type HC) from FHIR identifiers."""
    cccd = bhyt = ""
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        value, system, kinds = identifier["value"], identifier.get("system", ""), _type_codes(identifier)
        if not cccd and (system == systems.CCCD or kinds & CCCD_TYPES):
            cccd = value
        elif not bhyt and (system == systems.BHYT or kinds & BHYT_TYPES):
            bhyt = value
    return Identity(cccd, bhyt)


def _birth_year(value: Any, path: str, issues: list[Issue]) -> int | None:
    if not value:
        issues.append(Issue(f"{path}.birthDate", "required", "birthDate is required"))
        return None
    match = FHIR_DATE.fullmatch(str(value))
    try:
        if match is None:
            raise ValueError
        date(int(match[1]), int(match[2] or 1), int(match[3] or 1))
    except ValueError:
        issues.append(Issue(f"{path}.birthDate", "invalid-date", "birthDate is not a valid FHIR date"))
        return None
    return int(match[1])


def patient_issues(patient: dict[str, Any], path: str) -> tuple[Identity, list[Issue]]:
    """Identity, birth date and sex of a Patient, checked as PID-3/PID-7/PID-8 are for HL7 v2."""
    issues: list[Issue] = []
    year = _birth_year(patient.get("birthDate"), path, issues)
    gender = patient.get("gender")
    sex = codes.sex_from_fhir(gender) if isinstance(gender, str) else None
    if not gender:
        issues.append(Issue(f"{path}.gender", "required", "gender is required"))
    elif sex is None:
        issues.append(Issue(f"{path}.gender", "invalid-code", "gender must be male, female, other or unknown"))
    identifiers = patient.get("identifier")
    identity = identity_of(identifiers if isinstance(identifiers, list) else [])
    issues += identity_issues(identity, f"{path}.identifier", year, sex)
    return identity, issues


def identity_issues(identity: Identity, path: str, birth_year: int | None = None,
                    sex: str | None = None) -> list[Issue]:
    """CCCD/BHYT presence and format (and CCCD agreement with birth year and sex when known)."""
    if not identity.cccd and not identity.bhyt:
        return [Issue(path, "required", "a CCCD (system urn:hbgw:id:cccd) or BHYT card (urn:hbgw:id:bhyt) is "
                                        "required; a medical record number alone is not enough")]
    issues: list[Issue] = []
    if identity.cccd:
        issues += cccd_issues(identity.cccd, path, birth_year, sex, against="birthDate/gender")
    if identity.bhyt:
        issues += bhyt_issues(identity.bhyt, path)
    return issues
