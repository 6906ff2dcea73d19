"""Claim resources from HL7 v2: ChargeItem (FT1), MedicationRequest (RXE), MedicationDispense (RXD),
MedicationAdministration (RXA in RAS), Coverage (IN1).

Codes stay the HIS's own (local systems); the national codes, groups and prices come from the site mappings
when the XML 130 tables are built, so a mapping added later applies to documents already stored.
"""
from __future__ import annotations

from typing import Any

from mappings.fhir_common import codeable, fhir_datetime, ref, resource_id
from mappings.hl7v2.build_admin import practitioner_ref
from mappings.hl7v2.context import Context
from mappings.hl7v2.er7 import Segment
from mappings.hl7v2.rules_claim import order_number, preceding_orc
from mappings.hl7v2.values import NUMBER
from mappings.vn import systems
from mappings.vn.identifiers import is_valid_bhyt

CURRENCY = "VND"


def _number(text: str) -> float | int | None:
    if not NUMBER.fullmatch(text):
        return None
    return float(text) if "." in text else int(text)


def _quantity(value: str, unit: str = "") -> dict[str, Any] | None:
    number = _number(value)
    if number is None:
        return None
    return {"value": number, **({"unit": unit} if unit else {})}


def _order_reference(ctx: Context, order: str) -> dict[str, Any]:
    return {"identifier": {"system": systems.local("order", ctx.facility_id), "value": order}}


def _following(ctx: Context, segment: Segment, name: str) -> list[Segment]:
    """The segments named `name` right after `segment` (RXR routes after an RXE, RXD or RXA)."""
    segments = list(ctx.msg.segments)
    out = []
    for candidate in segments[segments.index(segment) + 1:]:
        if candidate.name != name:
            break
        out.append(candidate)
    return out


def _route(ctx: Context, segment: Segment) -> dict[str, Any] | None:
    routes = _following(ctx, segment, "RXR")
    return ctx.coded(routes[0], 1) if routes and ctx.c(routes[0], 1) else None


def charge_item(ctx: Context, ft1: Segment, occurrence: int) -> tuple[dict[str, Any], ...]:
    """One charge line (services, supplies, bed days, or a drug charged directly), plus its procedure.

    A credit (FT1-6 CD) carries the transaction id (FT1-2) of the charge it cancels, so it replaces it.
    Payments and adjustments (PY, AJ) are not claim lines and give nothing.
    """
    kind = ctx.c(ft1, 6).upper()
    if kind in ("PY", "AJ"):
        return ()
    key = ctx.c(ft1, 2) or f"{ctx.c(ft1, 7)}|{ctx.c(ft1, 4)}|{occurrence}"
    resource: dict[str, Any] = {
        "resourceType": "ChargeItem", "id": resource_id(ctx.document_id, "ChargeItem", key),
        "status": "entered-in-error" if kind == "CD" else "billable", "code": ctx.coded(ft1, 7),
        "subject": ref(ctx.patient_id), "context": ref(ctx.encounter_id),
    }
    if ctx.c(ft1, 2):
        resource["identifier"] = [{"system": systems.local("charge", ctx.facility_id), "value": ctx.c(ft1, 2)}]
    start, end = fhir_datetime(ctx.c(ft1, 4, 1)), fhir_datetime(ctx.c(ft1, 4, 2))
    if start:
        resource["occurrencePeriod"] = {"start": start, **({"end": end} if end else {})}
    if quantity := _quantity(ctx.c(ft1, 10)):
        resource["quantity"] = quantity
    if (price := _number(ctx.c(ft1, 12))) is not None:
        resource["priceOverride"] = {"value": price, "currency": CURRENCY}
    if ward := ctx.c(ft1, 13) or ctx.c(ft1, 16):
        resource["costCenter"] = {"identifier": {"system": systems.local("ward", ctx.facility_id), "value": ward}}
    if bed := ctx.c(ft1, 16, 3):
        resource["extension"] = [{"url": systems.BED_EXTENSION, "valueString": bed}]
    if performer := practitioner_ref(ctx, ft1, 20):
        resource["performer"] = [{"actor": performer}]
    if orderer := practitioner_ref(ctx, ft1, 21):
        resource["enterer"] = orderer
    if not ctx.c(ft1, 25):
        return (resource,)
    procedure: dict[str, Any] = {
        "resourceType": "Procedure", "id": resource_id(ctx.document_id, "Procedure", "FT1", key),
        "status": "completed", "code": ctx.coded(ft1, 25), "subject": ref(ctx.patient_id),
        "encounter": ref(ctx.encounter_id), **({"performedDateTime": start} if start else {}),
    }
    resource["service"] = [ref(procedure["id"])]
    return resource, procedure


def medication_request(ctx: Context, rxe: Segment) -> dict[str, Any]:
    """A pharmacy order (RDE^O11): what the doctor ordered and how much is to be dispensed (the billed quantity)."""
    orc = preceding_orc(ctx.msg, rxe)
    order = order_number(orc, ctx.msg.delimiters)
    dosage: dict[str, Any] = {}
    if instructions := ctx.t(rxe, 7, 2) or ctx.t(rxe, 7, 1):
        dosage["text"] = instructions
    if special := ctx.t(rxe, 21, 2) or ctx.t(rxe, 21, 1):
        dosage["patientInstruction"] = special
    if route := _route(ctx, rxe):
        dosage["route"] = route
    if dose := _quantity(ctx.c(rxe, 3), ctx.c(rxe, 5)):
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": resource_id(ctx.document_id, "MedicationRequest", order),
        "identifier": [_order_reference(ctx, order)["identifier"]],
        "status": "cancelled" if ctx.c(orc, 1).upper() in ("CA", "OC") else "active", "intent": "order",
        "medicationCodeableConcept": ctx.coded(rxe, 2), "subject": ref(ctx.patient_id),
        "encounter": ref(ctx.encounter_id),
    }
    if authored := fhir_datetime(ctx.c(orc, 9)):
        resource["authoredOn"] = authored
    if requester := practitioner_ref(ctx, orc, 12) if orc else None:
        resource["requester"] = requester
    if dosage:
        resource["dosageInstruction"] = [dosage]
    if amount := _quantity(ctx.c(rxe, 10), ctx.c(rxe, 11, 2) or ctx.c(rxe, 11)):
        resource["dispenseRequest"] = {"quantity": amount}
    return resource


def medication_dispense(ctx: Context, rxd: Segment) -> dict[str, Any]:
    """A dispense (RDS^O13), tied to its order; it replaces the order as the billed drug row."""
    order = order_number(preceding_orc(ctx.msg, rxd), ctx.msg.delimiters)
    handed = fhir_datetime(ctx.c(rxd, 3))
    resource: dict[str, Any] = {
        "resourceType": "MedicationDispense",
        "id": resource_id(ctx.document_id, "MedicationDispense", order, ctx.c(rxd, 1), ctx.c(rxd, 2), handed or ""),
        "status": "completed", "medicationCodeableConcept": ctx.coded(rxd, 2), "subject": ref(ctx.patient_id),
        "context": ref(ctx.encounter_id), "authorizingPrescription": [_order_reference(ctx, order)],
    }
    if amount := _quantity(ctx.c(rxd, 4), ctx.c(rxd, 5, 2) or ctx.c(rxd, 5)):
        resource["quantity"] = amount
    if handed:
        resource["whenHandedOver"] = handed
    dosage: dict[str, Any] = {}
    if notes := ctx.t(rxd, 9):
        dosage["text"] = notes
    if special := ctx.t(rxd, 15, 2) or ctx.t(rxd, 15, 1):
        dosage["patientInstruction"] = special
    if route := _route(ctx, rxd):
        dosage["route"] = route
    if dosage:
        resource["dosageInstruction"] = [dosage]
    if pharmacist := practitioner_ref(ctx, rxd, 10):
        resource["performer"] = [{"actor": pharmacist}]
    return resource


def medication_administration(ctx: Context, rxa: Segment) -> dict[str, Any]:
    """A drug given (RAS^O17), tied to its order: the time the order was carried out (NGAY_TH_YL)."""
    order = order_number(preceding_orc(ctx.msg, rxa), ctx.msg.delimiters)
    given = fhir_datetime(ctx.c(rxa, 3)) or ctx.event_time
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": resource_id(ctx.document_id, "MedicationAdministration", order, ctx.c(rxa, 5), given),
        "status": "not-done" if ctx.c(rxa, 20).upper() in ("RE", "NA") else "completed",
        "medicationCodeableConcept": ctx.coded(rxa, 5), "subject": ref(ctx.patient_id),
        "context": ref(ctx.encounter_id), "effectiveDateTime": given,
        "request": {"identifier": _order_reference(ctx, order)["identifier"]},
    }
    dosage: dict[str, Any] = {}
    if dose := _quantity(ctx.c(rxa, 6), ctx.c(rxa, 7)):
        dosage["dose"] = dose
    if route := _route(ctx, rxa):
        dosage["route"] = route
    if dosage:
        resource["dosage"] = dosage
    if nurse := practitioner_ref(ctx, rxa, 10):
        resource["performer"] = [{"actor": nurse}]
    return resource


def coverage(ctx: Context, in1: Segment, card: str) -> dict[str, Any] | None:
    """The BHYT card (IN1): its validity (IN1-12/13) for GT_THE_TU/GT_THE_DEN; None for another insurer's plan."""
    policy = ctx.c(in1, 36)
    number = policy if is_valid_bhyt(policy) else card if not policy else ""
    if not number:
        return None
    resource: dict[str, Any] = {
        "resourceType": "Coverage", "id": resource_id(ctx.document_id, "Coverage", number),
        "status": "active", "beneficiary": ref(ctx.patient_id),
        "payor": [{"display": ctx.t(in1, 4, 1) or "Bảo hiểm xã hội Việt Nam"}],
        "type": codeable(systems.ACT_CODE, "PUBLICPOL"),
    }
    resource["identifier"] = [{"system": systems.BHYT, "value": number}]
    resource["subscriberId"] = number
    start, end = fhir_datetime(ctx.c(in1, 12)), fhir_datetime(ctx.c(in1, 13))
    if start or end:
        resource["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return resource
