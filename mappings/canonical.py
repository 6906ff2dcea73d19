"""Reading the canonical FHIR document back out, for the national encodings (XML 130, QĐ 1551)."""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any

from mappings.model import Document
from mappings.vn import codes, systems

VN_TZ = timezone(timedelta(hours=7))
_PROVINCE_PREFIX = re.compile(r"^(thanh pho|tinh|tp\.?)\s+")


class DocumentView:
    """Typed-enough access to the resources of one document version."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.resources = [entry["resource"] for entry in document.bundle["entry"][1:]]
        self._by_type: dict[str, list[dict[str, Any]]] | None = None

    def all(self, resource_type: str) -> list[dict[str, Any]]:
        if self._by_type is None:  # one pass over the resources, however many kinds are asked for
            self._by_type = {}
            for resource in self.resources:
                self._by_type.setdefault(resource["resourceType"], []).append(resource)
        return list(self._by_type.get(resource_type, ()))

    def one(self, resource_type: str) -> dict[str, Any]:
        found = self.all(resource_type)
        return found[0] if found else {}

    def identifier(self, system: str) -> str:
        """The patient identifier of a system (CCCD, BHYT); MRN via type code MR."""
        for identifier in self.one("Patient").get("identifier", []):
            if identifier.get("system") == system and identifier.get("use") != "old":
                return str(identifier.get("value", ""))
        return ""

    def ranked_conditions(self) -> list[dict[str, Any]]:
        """Diagnoses in clinical order: ICD-10 coded first, then by rank (DG1-15/DG1-1), then recorded time."""
        return sorted(self.all("Condition"),
                      key=lambda c: (not icd10_code(c), _rank(c), str(c.get("recordedDate", ""))))

    def mrn(self) -> str:
        for identifier in self.one("Patient").get("identifier", []):
            kinds = {c.get("code") for c in (identifier.get("type") or {}).get("coding", [])}
            if "MR" in kinds and identifier.get("use") != "old":
                return str(identifier.get("value", ""))
        return ""


def _rank(condition: dict[str, Any]) -> int:
    for extension in condition.get("extension", []):
        if extension.get("url") == systems.DIAGNOSIS_RANK_EXTENSION:
            return int(extension["valuePositiveInt"])
    return 1_000


def icd10_code(condition: dict[str, Any]) -> str:
    """The ICD-10 code of a Condition; "" when it is coded only in another system."""
    codings = (condition.get("code") or {}).get("coding", [])
    return next((str(c.get("code", "")) for c in codings if c.get("system") == systems.ICD10), "")


def xml_datetime(value: str | None) -> str:
    """A FHIR date/dateTime as yyyyMMddHHmm in Vietnam time; missing parts of a date are zeros."""
    if not value:
        return ""
    if "T" not in value:
        digits = value.replace("-", "")
        return (digits + "00000000")[:12] if len(digits) < 8 else digits + "0000"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(VN_TZ)
    return moment.strftime("%Y%m%d%H%M")


def name_text(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    name = names[0]
    return str(name.get("text") or " ".join([name.get("family", ""), *name.get("given", [])]).strip())


def address_text(patient: dict[str, Any]) -> str:
    address = (patient.get("address") or [{}])[0]
    parts = [*address.get("line", []), address.get("district", ""), address.get("city", ""), address.get("state", "")]
    return ", ".join(p for p in parts if p)


def _fold(text: str) -> str:
    plain = unicodedata.normalize("NFD", text.replace("Đ", "D").replace("đ", "d"))
    return _PROVINCE_PREFIX.sub("", "".join(c for c in plain if not unicodedata.combining(c)).lower().strip())


def province_code(patient: dict[str, Any]) -> str:
    """The 2-digit code of the address province among the 34 in force since 2025-07-01; "" when unknown.

    An address still naming one of the 63 former provinces is coded as the province it is now part of.
    """
    return _province_of_state(str((patient.get("address") or [{}])[0].get("state", "")))


@lru_cache(maxsize=512)
def _province_of_state(state: str) -> str:
    folded = _fold(state)
    return _province_by_name().get(folded, "") if folded else ""


@cache
def _province_by_name() -> dict[str, str]:
    """Folded province name -> current province code: the 34 current names first, then the 63 former ones."""
    found: dict[str, str] = {}
    for code, name in codes.province_2025_codes().items():
        found.setdefault(_fold(name), code)
    for entry in codes.cccd_provinces().values():
        found.setdefault(_fold(entry["name"]), entry["province_2025"])
    return found


def sex_code(patient: dict[str, Any]) -> str:
    """XML 130 GIOI_TINH: 1 male, 2 female, 3 unknown/other."""
    hl7 = codes.sex_from_fhir(str(patient.get("gender", "")))
    entry = codes.sex(hl7) if hl7 else None
    return str(entry["xml130"]) if entry else "3"


def ethnicity_code(patient: dict[str, Any]) -> str:
    for extension in patient.get("extension", []):
        if extension.get("url") == systems.ETHNICITY_EXTENSION:
            return str(extension.get("valueCoding", {}).get("code", ""))
    return ""


def nationality_code(patient: dict[str, Any]) -> str:
    """XML 130 MA_QUOCTICH from the FHIR patient-nationality extension ("000" for Việt Nam)."""
    for extension in patient.get("extension", []):
        if extension.get("url") == systems.NATIONALITY_EXTENSION:
            for part in extension.get("extension", []):
                if part.get("url") == "code":
                    return codes.nationality_xml130(str(first_coding(part.get("valueCodeableConcept")).get("code", "")))
    return ""


def first_coding(concept: dict[str, Any] | None) -> dict[str, Any]:
    coding: dict[str, Any] = ((concept or {}).get("coding") or [{}])[0]
    return coding


def concept_text(concept: dict[str, Any] | None) -> str:
    coding = first_coding(concept)
    return str((concept or {}).get("text") or coding.get("display") or coding.get("code") or "")


def value_text(observation: dict[str, Any]) -> tuple[str, str]:
    """An observation's value and unit as text, numbers written as received."""
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        number = f"{quantity.get('comparator', '')}{quantity.get('value', '')}"
        return number, str(quantity.get("unit") or quantity.get("code") or "")
    if "valueCodeableConcept" in observation:
        return concept_text(observation["valueCodeableConcept"]), ""
    return str(observation.get("valueString", "")), ""


def licence(reference: dict[str, Any] | None) -> tuple[str, str]:
    """Licence number and display name of a practitioner reference."""
    if not reference:
        return "", ""
    return str((reference.get("identifier") or {}).get("value", "")), str(reference.get("display", ""))
