"""FHIR health checks: a Bundle is one when a Composition, DiagnosticReport or Encounter type is a health-check
code (KSK*, HBGW-KSK*) or an Observation carries a health class; then its QĐ 1551/2062 form must be fillable."""
from __future__ import annotations

from typing import Any

from mappings.checkup import facts as reading
from mappings.checkup import forms
from mappings.model import Issue

PATIENT_PATHS = {"HO_TEN": "name", "NGAY_SINH": "birthDate", "GIOI_TINH": "gender", "MA_DAN_TOC": "extension",
                 "SO_CCCD": "identifier", "DIA_CHI": "address", "DIEN_THOAI": "telecom"}
CLASS_CODES = frozenset({"KSK-PL", "HBGW-KSK-PHAN_LOAI_SK"})


def _codes(resource: dict[str, Any]) -> list[str]:
    types = resource.get("type")
    concepts = [resource.get("code"), types, resource.get("serviceType"), *(types if isinstance(types, list) else [])]
    return [str(c.get("code", "")) for concept in concepts if isinstance(concept, dict)
            for c in concept.get("coding", []) if isinstance(c, dict)]


def is_health_check(resources: list[dict[str, Any]]) -> bool:
    """Whether these resources are a health check rather than an ordinary episode."""
    for resource in resources:
        rtype = resource.get("resourceType")
        found = _codes(resource)
        if rtype in ("Composition", "DiagnosticReport", "Encounter") and any(map(forms.is_health_check_code, found)):
            return True
        if rtype == "Observation" and CLASS_CODES & {code.upper() for code in found}:
            return True
    return False


def _hint(element: str) -> str:
    table = forms.codes()
    loinc = [code for code, targets in table["loinc"].items() if element in targets]
    local = table["local_prefix"] + element
    return f"an Observation coded {loinc[0]} (LOINC) or {local}" if loinc else f"an Observation coded {local}"


def form_issues(entries: list[tuple[int, dict[str, Any]]]) -> list[Issue]:
    """Elements the health check's form needs that the Bundle does not give, located at the entry to fix."""
    found = reading.read([resource for _, resource in entries])
    name = found.form()
    reading.derive(found, name)
    where = {resource["resourceType"]: index for index, resource in reversed(entries)}
    issues = []
    for element in reading.missing(name, found.values, sender_only=True):
        if element in PATIENT_PATHS and "Patient" in where:
            location, hint = f"Bundle.entry[{where['Patient']}].resource.{PATIENT_PATHS[element]}", "the Patient"
        elif element == "NGAY_VAO" and "Encounter" in where:
            location, hint = f"Bundle.entry[{where['Encounter']}].resource.period.start", "Encounter.period.start"
        else:
            location, hint = "Bundle.entry", _hint(element)
        issues.append(Issue(location, "required",
                            f"the {name} health-check form (QĐ 1551/2062) requires {element}: send {hint}"))
    return issues
