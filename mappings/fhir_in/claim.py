"""The FHIR twin of hl7v2/rules_claim: what a claim resource must carry to become an XML2/XML3 row."""
from __future__ import annotations

from typing import Any

from mappings.fhir_common import ends_before_start
from mappings.model import Issue
from mappings.vn import systems

TREATMENT_RESULTS = frozenset({"1", "2", "3", "4", "5", "6", "7", "8"})
INACTIVE = frozenset({"cancelled", "entered-in-error", "stopped", "not-done", "aborted", "declined"})


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _quantity_issue(container: dict[str, Any], path: str, what: str) -> list[Issue]:
    if _positive((container.get("quantity") or {}).get("value")):
        return []
    return [Issue(f"{path}.quantity.value", "required", f"{what} needs a positive quantity")]


def _coded(concept: Any, path: str, what: str) -> list[Issue]:
    codings = (concept or {}).get("coding") or [] if isinstance(concept, dict) else []
    if any(isinstance(c, dict) and c.get("code") for c in codings):
        return []
    return [Issue(f"{path}.coding", "required", f"{what} needs a coded item (the HIS code the site maps)")]


def _order(resource: dict[str, Any], path: str) -> list[Issue]:
    if ((resource.get("identifier") or [{}])[0]).get("value"):
        return []
    return [Issue(f"{path}.identifier", "required",
                  "the order number (identifier) links dispenses and administrations")]


def _encounter_issues(encounter: dict[str, Any], path: str) -> list[Issue]:
    issues = []
    for extension in encounter.get("extension") or []:
        code = str((extension.get("valueCoding") or {}).get("code", ""))
        if extension.get("url") == systems.TREATMENT_RESULT_EXTENSION and code not in TREATMENT_RESULTS:
            issues.append(Issue(f"{path}.extension", "invalid-code", "the treatment result (KET_QUA_DTRI) must be 1-8"))
    return issues


def claim_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """Issues that stop a claim resource (or an Encounter's discharge codes) making a valid XML 130 row."""
    rtype = resource.get("resourceType")
    if rtype == "Encounter":
        return _encounter_issues(resource, path)
    if rtype == "Coverage":
        period = resource.get("period") or {}
        if period.get("start") and period.get("end") and ends_before_start(str(period["start"]), str(period["end"])):
            return [Issue(f"{path}.period.end", "invalid-date", "the card's validity ends before it starts")]
        return []
    if resource.get("status") in INACTIVE:
        return []
    if rtype == "ChargeItem":
        period = resource.get("occurrencePeriod") or {}
        issues = _coded(resource.get("code"), f"{path}.code", "a charge") + _quantity_issue(resource, path, "a charge")
        if not (resource.get("occurrenceDateTime") or period.get("start")):
            issues.append(Issue(f"{path}.occurrenceDateTime", "required", "a charge needs its time (NGAY_YL)"))
        return issues
    if rtype == "MedicationRequest":
        return _coded(resource.get("medicationCodeableConcept"), f"{path}.medicationCodeableConcept", "an order") \
            + _order(resource, path) + _quantity_issue(resource.get("dispenseRequest") or {},
                                                       f"{path}.dispenseRequest", "an order")
    if rtype == "MedicationDispense":
        issues = _coded(resource.get("medicationCodeableConcept"), f"{path}.medicationCodeableConcept", "a dispense")
        issues += _quantity_issue(resource, path, "a dispense")
        if not resource.get("whenHandedOver"):
            issues.append(Issue(f"{path}.whenHandedOver", "required", "a dispense needs its time"))
        return issues
    if rtype == "MedicationAdministration" and not ((resource.get("request") or {}).get("identifier") or {}) \
            .get("value"):
        return [Issue(f"{path}.request.identifier", "required", "an administration names its order by identifier")]
    return []
