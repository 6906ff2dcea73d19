"""FHIR R4 input (Bundles and single resources) into health-book fragments, validated with fhir.resources."""
from __future__ import annotations

import hashlib
from typing import Any

from mappings.fhir_common import as_instant, document_id, ends_before_start, resource_id
from mappings.fhir_in import checkup
from mappings.fhir_in.claim import claim_issues
from mappings.fhir_in.identity import Identity, identity_issues, patient_issues
from mappings.fhir_in.references import (
    fold_medications,
    unresolved,
    with_logical_references,
)
from mappings.fhir_in.rewrite import adopt
from mappings.fhir_in.single import composition_summary, logical_identity, logical_visit
from mappings.fhir_validate import resource_issues
from mappings.model import DocumentKind, Fragment, Issue, MappingResult
from mappings.vn import systems
from mappings.vn.identifiers import icd10_issues
from mappings.vn.vitals import implausible

BUNDLE_TYPES = frozenset({"transaction", "batch", "document", "collection"})
SINGLE_TYPES = frozenset({"Patient", "Encounter", "Condition", "Observation", "AllergyIntolerance", "Procedure",
                          "MedicationStatement", "Immunization", "DiagnosticReport", "Composition",
                          "MedicationRequest", "MedicationDispense", "MedicationAdministration", "ChargeItem",
                          "ClinicalImpression"})
BUNDLE_ONLY_TYPES = frozenset({"Organization", "Practitioner", "FamilyMemberHistory", "DocumentReference",
                               "Medication", "Coverage"})
TIME_FIELDS = ("effectiveDateTime", "occurrenceDateTime", "recordedDate", "performedDateTime", "date", "issued",
               "onsetDateTime", "authoredOn", "whenHandedOver")
# The element a single resource's time is expected in, named when it has none.
TIME_ELEMENT = {"AllergyIntolerance": "recordedDate", "Condition": "recordedDate", "Observation": "effectiveDateTime",
                "Procedure": "performedDateTime", "MedicationStatement": "effectiveDateTime",
                "Immunization": "occurrenceDateTime", "DiagnosticReport": "effectiveDateTime",
                "Encounter": "period.start", "Composition": "date", "MedicationRequest": "authoredOn",
                "MedicationDispense": "whenHandedOver", "MedicationAdministration": "effectiveDateTime",
                "ChargeItem": "occurrencePeriod.start", "ClinicalImpression": "effectiveDateTime"}
# Condition categories the health book files as history, which need not be ICD-10 coded.
HISTORY_CATEGORIES = frozenset({"problem-list-item", "health-concern"})
VISIT_PREFIX = "urn:hbgw:visit:"


def _code_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """A diagnosis needs an ICD-10 coding (XML 130 MA_BENH_CHINH), of ICD-10 shape; history may be coded otherwise."""
    if resource["resourceType"] != "Condition":
        return []
    codings = [coding for coding in (resource.get("code") or {}).get("coding") or [] if isinstance(coding, dict)]
    categories = {str(coding.get("code")) for category in resource.get("category") or [] if isinstance(category, dict)
                  for coding in category.get("coding") or [] if isinstance(coding, dict)}
    if not any(coding.get("system") == systems.ICD10 for coding in codings) \
            and not (categories & HISTORY_CATEGORIES and "encounter-diagnosis" not in categories):
        return [Issue(f"{path}.code.coding", "required",
                      f"a diagnosis needs an ICD-10 coding (system {systems.ICD10}): the national record's main and "
                      "secondary diagnoses are ICD-10 codes; only a problem-list-item or health-concern may be "
                      "coded in another system alone")]
    return [issue for j, coding in enumerate(codings) if coding.get("system") == systems.ICD10
            for issue in icd10_issues(str(coding.get("code", "")), f"{path}.code.coding[{j}].code")]


def _vital_issues(resource: dict[str, Any], path: str) -> list[Issue]:
    """Vital signs (LOINC) in an Observation or its components must be physically possible (vn/vitals)."""
    if resource["resourceType"] != "Observation":
        return []
    parts = [(resource, path)] + [(part, f"{path}.component[{j}]") for j, part in
                                  enumerate(resource.get("component") or []) if isinstance(part, dict)]
    issues = []
    for part, where in parts:
        quantity = part.get("valueQuantity") or {}
        value = quantity.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        unit = str(quantity.get("code") or quantity.get("unit") or "")
        for coding in (part.get("code") or {}).get("coding") or []:
            why = implausible(str(coding.get("code", "")), value, unit) if coding.get("system") == systems.LOINC \
                else None
            if why:
                issues.append(Issue(f"{where}.valueQuantity.value", "implausible-value", why))
                break
    return issues


def _period_issues(encounter: dict[str, Any], path: str) -> list[Issue]:
    """Admission and discharge times: at least full dates (XML 130 NGAY_VAO / NGAY_RA), the end not first."""
    period = encounter.get("period") or {}
    issues = [Issue(f"{path}.period.{name}", "invalid-date", f"period.{name} needs at least a full date")
              for name in ("start", "end") if name in period and len(str(period[name])) < 10]
    if not issues and "start" in period and "end" in period \
            and ends_before_start(str(period["start"]), str(period["end"])):
        issues.append(Issue(f"{path}.period.end", "discharge-before-admission",
                            "period.end (discharge) is before period.start (admission)"))
    return issues


def _errors(issues: list[Issue]) -> bool:
    return any(issue.severity == "error" for issue in issues)


def map_fhir(resource: dict[str, Any]) -> MappingResult:
    """Turn a FHIR Bundle or single resource into fragments, or issues located by FHIR element path."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return MappingResult(issues=(Issue("resourceType", "required",
                                           "a FHIR resource with resourceType is required"),))
    resource = _without_nulls(resource)
    rtype = resource["resourceType"]
    if rtype != "Bundle" and rtype not in SINGLE_TYPES:
        return MappingResult(issues=(Issue("resourceType", "unsupported-resource",
                                           "this resource type is not accepted here"),))
    issues = resource_issues(resource, rtype)
    if _errors(issues):
        return MappingResult(issues=tuple(issues))
    if rtype == "Bundle":
        return _map_bundle(resource)
    return _map_single(resource)


def _without_nulls(value: Any) -> Any:
    """FHIR JSON has no nulls; fhir.resources reads a null property as absent, and so does everything here.

    Nulls inside arrays are kept, so that the array indices in issue paths are the sender's own.
    """
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _episode_id(encounter: dict[str, Any], health_check: bool = False) -> str:
    """Facility (serviceProvider MoH id, else the visit system's namespace), KSK for a health check, visit number."""
    identifier = encounter["identifier"][0]
    provider = (encounter.get("serviceProvider") or {}).get("identifier") or {}
    if provider.get("system") == systems.MOH_FACILITY and provider.get("value"):
        facility = provider["value"]
    else:
        facility = str(identifier.get("system", "")).removeprefix(VISIT_PREFIX)
    return document_id(facility, *(("KSK",) if health_check else ()), identifier["value"])


def _event_time(resources: list[dict[str, Any]], bundle: dict[str, Any] | None) -> str:
    if bundle and bundle.get("timestamp"):
        return str(bundle["timestamp"])
    times = []
    for resource in resources:
        period = resource.get("period") or resource.get("effectivePeriod") or resource.get("occurrencePeriod") or {}
        times += [period.get("end"), period.get("start")] + [resource.get(name) for name in TIME_FIELDS]
    found = [str(t) for t in times if t]
    return as_instant(max(found)) if found else ""


def _immunization_id(identity: Identity, immunizations: list[dict[str, Any]]) -> str:
    first = immunizations[0]
    identifiers = first.get("identifier") or []
    if identifiers and identifiers[0].get("value"):
        return document_id("TC", str(identifiers[0]["value"]))
    code = str(((first.get("vaccineCode") or {}).get("coding") or [{}])[0].get("code", ""))
    digest = hashlib.sha256(f"{identity.key}|{code}|{first.get('occurrenceDateTime', '')}".encode()).hexdigest()
    return document_id("TC", digest[:24])


def _map_bundle(bundle: dict[str, Any]) -> MappingResult:
    issues: list[Issue] = []
    if bundle.get("type") not in BUNDLE_TYPES:
        return MappingResult(issues=(Issue("Bundle.type", "unsupported-bundle",
                                           "Bundle.type must be transaction, batch, document or collection"),))
    kept: list[tuple[int, str, dict[str, Any]]] = []
    every: list[tuple[int, str, dict[str, Any]]] = []
    patients: list[tuple[int, dict[str, Any]]] = []
    encounters: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(bundle.get("entry") or []):
        resource, path = entry.get("resource"), f"Bundle.entry[{index}]"
        if not resource:
            issues.append(Issue(f"{path}.resource", "required", "every entry must carry a resource"))
            continue
        rtype = resource["resourceType"]
        every.append((index, entry.get("fullUrl", ""), resource))
        if rtype == "Composition" and bundle["type"] == "document":
            continue
        if rtype not in SINGLE_TYPES | BUNDLE_ONLY_TYPES or rtype == "Composition":
            issues.append(Issue(f"{path}.resource.resourceType", "unsupported-resource",
                                f"{rtype} is not accepted in a health-book Bundle"))
            continue
        kept.append((index, entry.get("fullUrl", ""), resource))
        issues += _code_issues(resource, f"{path}.resource") + _vital_issues(resource, f"{path}.resource")
        issues += claim_issues(resource, f"{path}.resource")
        if rtype == "Patient":
            patients.append((index, resource))
        if rtype == "Encounter":
            encounters.append((index, resource))
    if len(patients) != 1:
        issues.append(Issue("Bundle.entry", "required" if not patients else "invalid",
                            "the Bundle must hold exactly one Patient"))
        return MappingResult(issues=tuple(issues))
    identity, found = patient_issues(patients[0][1], f"Bundle.entry[{patients[0][0]}].resource")
    issues += found
    if len(encounters) > 1:
        issues.append(Issue(f"Bundle.entry[{encounters[1][0]}].resource", "invalid",
                            "one Bundle carries one episode (Encounter)"))
    for index, encounter in encounters[:1]:
        if not (encounter.get("identifier") or [{}])[0].get("value"):
            issues.append(Issue(f"Bundle.entry[{index}].resource.identifier", "required",
                                "the Encounter needs an identifier (the visit number)"))
        issues += _period_issues(encounter, f"Bundle.entry[{index}].resource")
    kept, folded = fold_medications(kept)
    issues += unresolved(every) + folded
    immunizations = [r for _, _, r in kept if r["resourceType"] == "Immunization"]
    compositions = [e["resource"] for e in bundle.get("entry") or [] if (e.get("resource") or {}).get(
        "resourceType") == "Composition"]
    health_check = bool(encounters) and checkup.is_health_check([*compositions, *(r for _, _, r in kept)])
    if health_check:
        issues += checkup.form_issues([(index, resource) for index, _, resource in kept])
    if not encounters and not immunizations:
        issues.append(Issue("Bundle.entry", "required", "an Encounter (episode) or an Immunization is required"))
    if _errors(issues):
        return MappingResult(issues=tuple(issues))
    kind: DocumentKind
    if encounters:
        doc_id, kind = _episode_id(encounters[0][1], health_check), "health_check" if health_check else "episode"
    else:
        doc_id, kind = _immunization_id(identity, immunizations), "immunization"
    resources = adopt(doc_id, [(full_url, with_logical_references(resource)) for _, full_url, resource in kept], {})
    return _result(doc_id, kind, identity, resources, _event_time(resources, bundle),
                   f"fhir:Bundle/{bundle['type']}", issues)


def _result(doc_id: str, kind: DocumentKind, identity: Identity, resources: list[dict[str, Any]],
            event_time: str, source: str, issues: list[Issue]) -> MappingResult:
    if not event_time:
        rtype = source.removeprefix("fhir:")
        if rtype in TIME_ELEMENT:
            return MappingResult(issues=(*issues, Issue(f"{rtype}.{TIME_ELEMENT[rtype]}", "required", (
                f"{rtype} carries no time: {TIME_ELEMENT[rtype]} is needed to place it in the record"))))
        return MappingResult(issues=(*issues, Issue("Bundle.timestamp", "required",
                                                    "no time found (Bundle.timestamp or a resource time)")))
    fragment = Fragment(doc_id, identity.key, kind, event_time, tuple(resources), source)
    return MappingResult((fragment,), tuple(issues))


def _map_single(resource: dict[str, Any]) -> MappingResult:
    rtype = resource["resourceType"]
    if rtype == "Patient":
        _, issues = patient_issues(resource, "Patient")
        if _errors(issues):
            return MappingResult(issues=tuple(issues))
        return MappingResult(issues=(*issues, Issue("Patient", "no-episode",
                                                    "a Patient alone changes no episode document", "warning")))
    identity, identity_path = logical_identity(resource)
    issues = identity_issues(identity, identity_path) + _code_issues(resource, rtype) + _vital_issues(resource, rtype)
    issues += claim_issues(resource, rtype)
    if rtype == "Encounter":
        issues += _period_issues(resource, rtype)
    visit, visit_path = logical_visit(resource)
    if rtype != "Immunization" and visit is None:
        issues.append(Issue(visit_path, "required", "the episode is named by an Encounter identifier"))
    if _errors(issues):
        return MappingResult(issues=tuple(issues))
    kind: DocumentKind
    if visit is None:
        doc_id, kind = _immunization_id(identity, [resource]), "immunization"
    else:
        doc_id, kind = _episode_id(resource if rtype == "Encounter" else {"identifier": [visit]}), "episode"
    patient_id, encounter_id = resource_id(doc_id, "Patient"), resource_id(doc_id, "Encounter")
    if rtype == "Composition":
        resource = composition_summary(resource, patient_id, encounter_id)
    resources = adopt(doc_id, [("", resource)], {})
    for item in resources:
        _point_at_document(item, patient_id, encounter_id)
    return _result(doc_id, kind, identity, resources, _event_time(resources, None), f"fhir:{rtype}", issues)


def _point_at_document(resource: dict[str, Any], patient_id: str, encounter_id: str) -> None:
    """Logical references (by identifier) become references to the document's Patient and Encounter."""
    for name in ("subject", "patient"):
        if isinstance(resource.get(name), dict) and "identifier" in resource[name]:
            resource[name] = {"reference": f"urn:uuid:{patient_id}"}
    for name in ("encounter", "context"):
        if isinstance(resource.get(name), dict) and "identifier" in resource[name]:
            resource[name] = {"reference": f"urn:uuid:{encounter_id}"}
