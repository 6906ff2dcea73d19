"""Clinical resources from HL7 v2: Condition, AllergyIntolerance, Procedure, Observation, reports, summary."""
from __future__ import annotations

import base64
import re
from typing import Any

from mappings.fhir_common import codeable, fhir_datetime, ref, resource_id
from mappings.hl7v2.build_admin import practitioner_ref
from mappings.hl7v2.context import Context
from mappings.hl7v2.er7 import Segment
from mappings.hl7v2.values import NUMBER, quantity_number
from mappings.vn import codes, systems

OBX_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "R": "preliminary", "X": "cancelled",
              "D": "entered-in-error"}
ALLERGY_CATEGORY = {"DA": "medication", "FA": "food", "EA": "environment", "MA": "environment"}
ALLERGY_SEVERITY = {"MI": "mild", "MO": "moderate", "SV": "severe"}
RANK = re.compile(r"[1-9][0-9]{0,3}")


def condition(ctx: Context, dg1: Segment) -> dict[str, Any]:
    """A diagnosis (ICD-10 unless DG1-3.3 names another system); one per code and type (A, F) per episode."""
    code = ctx.c(dg1, 3)
    if ctx.c(dg1, 3, 3).upper() in systems.HL7_ICD10_NAMES:
        concept = codeable(systems.ICD10, code, ctx.t(dg1, 3, 2) or codes.icd10_display(code) or "")
    else:
        concept = ctx.coded(dg1, 3)
    category = codeable(systems.CONDITION_CATEGORY, "encounter-diagnosis")
    if ctx.c(dg1, 6):
        category["coding"].append({"system": systems.V2_0052, "code": ctx.c(dg1, 6).upper()})
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": resource_id(ctx.document_id, "Condition", code, ctx.c(dg1, 6).upper()),
        "clinicalStatus": codeable(systems.CONDITION_CLINICAL, "active"), "category": [category],
        "code": concept,
        "subject": ref(ctx.patient_id), "encounter": ref(ctx.encounter_id),
    }
    if recorded := fhir_datetime(ctx.c(dg1, 5)):
        resource["recordedDate"] = recorded
    rank = ctx.c(dg1, 15) if RANK.fullmatch(ctx.c(dg1, 15)) else ctx.c(dg1, 1)
    if RANK.fullmatch(rank):
        resource["extension"] = [{"url": systems.DIAGNOSIS_RANK_EXTENSION, "valuePositiveInt": int(rank)}]
    return resource


def allergy(ctx: Context, al1: Segment) -> dict[str, Any]:
    """A history-section allergy, one per allergen."""
    allergen = ctx.coded(al1, 3)
    key = ctx.c(al1, 3, 1) or ctx.c(al1, 3, 2)
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance", "id": resource_id(ctx.document_id, "AllergyIntolerance", key),
        "code": allergen, "patient": ref(ctx.patient_id),
    }
    if category := ALLERGY_CATEGORY.get(ctx.c(al1, 2).upper()):
        resource["category"] = [category]
    reaction: dict[str, Any] = {}
    if ctx.t(al1, 5):
        reaction["manifestation"] = [{"text": ctx.t(al1, 5)}]
        if severity := ALLERGY_SEVERITY.get(ctx.c(al1, 4).upper()):
            reaction["severity"] = severity
        resource["reaction"] = [reaction]
    return resource


def procedure(ctx: Context, pr1: Segment) -> dict[str, Any]:
    """A procedure of the episode, one per code and time."""
    performed = fhir_datetime(ctx.c(pr1, 5))
    resource: dict[str, Any] = {
        "resourceType": "Procedure",
        "id": resource_id(ctx.document_id, "Procedure", ctx.c(pr1, 3), performed or ""),
        "status": "completed", "code": ctx.coded(pr1, 3),
        "subject": ref(ctx.patient_id), "encounter": ref(ctx.encounter_id),
    }
    if performed:
        resource["performedDateTime"] = performed
    return resource


def _value(ctx: Context, obx: Segment) -> dict[str, Any]:
    kind = ctx.c(obx, 2).upper()
    first = ctx.c(obx, 5)
    number = quantity_number(kind, obx.field(5), ctx.c(obx, 6), ctx.msg.delimiters)
    if number is not None:
        quantity: dict[str, Any] = {"value": number.value}
        if number.comparator:
            quantity["comparator"] = number.comparator
        if unit := ctx.c(obx, 6):
            quantity.update(unit=unit, system=systems.UCUM, code=unit)
        return {"valueQuantity": quantity}
    if kind in ("CWE", "CE", "CNE") and first:
        return {"valueCodeableConcept": ctx.coded(obx, 5)}
    text = "\n".join(ctx.rt(raw, 1) for raw in ctx.reps(obx, 5))
    return {"valueString": text} if text else {}


def observation(ctx: Context, obx: Segment, category: str, group: str, effective: str) -> dict[str, Any]:
    """One result; its id comes from the order, the code and the time, so a repeat replaces, not adds."""
    code = ctx.c(obx, 3)
    when = fhir_datetime(ctx.c(obx, 14)) or effective
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id(ctx.document_id, "Observation", group, code, ctx.c(obx, 4), when),
        "status": OBX_STATUS.get(ctx.c(obx, 11).upper(), "final"),
        "category": [codeable(systems.OBS_CATEGORY, category)],
        "code": ctx.coded(obx, 3), "subject": ref(ctx.patient_id), "encounter": ref(ctx.encounter_id),
        "effectiveDateTime": when, **_value(ctx, obx),
    }
    if ctx.t(obx, 7):
        resource["referenceRange"] = [{"text": ctx.t(obx, 7)}]
    if ctx.c(obx, 8):
        resource["interpretation"] = [codeable(systems.OBS_INTERPRETATION, ctx.c(obx, 8).upper())]
    if who := practitioner_ref(ctx, obx, 16):
        resource["performer"] = [who]
    return resource


def diagnostic_report(ctx: Context, obr: Segment, results: list[dict[str, Any]], conclusion: str,
                      category: str, health_class: int | None = None) -> dict[str, Any]:
    """The order (OBR) grouping its results; the conclusion carries a health check's verdict."""
    filler = ctx.c(obr, 3) or ctx.c(obr, 2)
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": resource_id(ctx.document_id, "DiagnosticReport", filler),
        "status": OBX_STATUS.get(ctx.c(obr, 25).upper(), "final"),
        "category": [codeable(systems.OBS_CATEGORY, category)],
        "code": ctx.coded(obr, 4), "subject": ref(ctx.patient_id), "encounter": ref(ctx.encounter_id),
        "result": [ref(r["id"]) for r in results],
    }
    if filler:
        resource["identifier"] = [{"system": systems.local("order", ctx.facility_id), "value": filler}]
    if effective := fhir_datetime(ctx.c(obr, 7)):
        resource["effectiveDateTime"] = effective
    issued = fhir_datetime(ctx.c(obr, 22))
    if issued and "T" in issued:
        resource["issued"] = issued
    if doctor := practitioner_ref(ctx, obr, 16):
        resource["resultsInterpreter"] = [doctor]
    if conclusion:
        resource["conclusion"] = conclusion
    if health_class is not None:
        resource["conclusionCode"] = [codeable(systems.HEALTH_CLASS, str(health_class), f"Loại {health_class}")]
    return resource


def summary(ctx: Context, txa: Segment, obxs: list[Segment]) -> dict[str, Any]:
    """A clinical note (MDM^T02) as a DocumentReference holding the text; TXA-2 says which (DS summary, PR course)."""
    text = "\n".join(ctx.rt(raw, 1) for obx in obxs for raw in ctx.reps(obx, 5))
    number = ctx.c(txa, 12) or ctx.c(txa, 2)
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference", "id": resource_id(ctx.document_id, "DocumentReference", number),
        "status": "current", "docStatus": "final" if ctx.c(txa, 17).upper() in ("AU", "LA", "") else "preliminary",
        "type": ctx.coded(obxs[0], 3), "subject": ref(ctx.patient_id),
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode(),
                                    "title": ctx.t(obxs[0], 3, 2) or "Tóm tắt hồ sơ bệnh án"}}],
        "context": {"encounter": [ref(ctx.encounter_id)]},
    }
    if number:
        resource["identifier"] = [{"system": systems.local("document", ctx.facility_id), "value": number}]
    if ctx.c(txa, 2):
        resource["category"] = [codeable(systems.V2_0270, ctx.c(txa, 2).upper())]
    date = fhir_datetime(ctx.c(txa, 4))
    if date and "T" in date:
        resource["date"] = date
    if author := practitioner_ref(ctx, txa, 5):
        resource["author"] = [author]
    return resource


def immunization(ctx: Context, rxa: Segment) -> dict[str, Any]:
    """One vaccine dose (RXA) for the immunization section."""
    given = fhir_datetime(ctx.c(rxa, 3)) or ctx.event_time
    resource: dict[str, Any] = {
        "resourceType": "Immunization", "id": resource_id(ctx.document_id, "Immunization", ctx.c(rxa, 5), given),
        "status": "not-done" if ctx.c(rxa, 20).upper() in ("RE", "NA") else "completed",
        "vaccineCode": ctx.coded(rxa, 5), "patient": ref(ctx.patient_id), "occurrenceDateTime": given,
        "primarySource": ctx.c(rxa, 9) in ("", "00"),
    }
    amount = ctx.c(rxa, 6)
    if NUMBER.fullmatch(amount) and amount not in ("999", "0"):
        unit = ctx.c(rxa, 7)
        resource["doseQuantity"] = {"value": float(amount) if "." in amount else int(amount),
                                    **({"unit": unit, "system": systems.UCUM, "code": unit} if unit else {})}
    if ctx.c(rxa, 15):
        resource["lotNumber"] = ctx.c(rxa, 15)
    if nurse := practitioner_ref(ctx, rxa, 10):
        resource["performer"] = [{"actor": nurse}]
    return resource
