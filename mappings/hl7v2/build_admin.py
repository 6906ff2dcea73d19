"""Administrative resources from HL7 v2: Patient, Organization, Encounter."""
from __future__ import annotations

from typing import Any

from mappings.fhir_common import codeable, fhir_datetime, ref
from mappings.hl7v2.context import Context
from mappings.hl7v2.er7 import Segment
from mappings.hl7v2.events import EventRule
from mappings.hl7v2.rules import PatientIds
from mappings.vn import codes, systems

TREATMENT_RESULTS = frozenset({"1", "2", "3", "4", "5", "6", "7", "8"})
ENCOUNTER_CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"),
                   "E": ("EMER", "emergency"), "P": ("PRENC", "pre-admission")}


def _identifiers(ctx: Context, pid: Segment, ids: PatientIds) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if ids.cccd:
        out.append({"type": codeable(systems.V2_0203, "NI"), "system": systems.CCCD, "value": ids.cccd})
    if ids.bhyt:
        out.append({"type": codeable(systems.V2_0203, "HC"), "system": systems.BHYT, "value": ids.bhyt})
    for raw in ctx.reps(pid, 3):
        if ctx.rc(raw, 5).upper() == "MR" and ctx.rc(raw, 1):
            out.append({"type": codeable(systems.V2_0203, "MR"),
                        "system": systems.local("mrn", ctx.rc(raw, 4) or ctx.facility_id), "value": ctx.rc(raw, 1)})
    return out


def _name(ctx: Context, pid: Segment) -> list[dict[str, Any]]:
    family, given = ctx.c(pid, 5, 1), [p for p in (ctx.c(pid, 5, 2), ctx.c(pid, 5, 3)) if p]
    if not family and not given:
        return []
    name: dict[str, Any] = {"use": "official", "text": " ".join([family, *given]).strip()}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    return [name]


def _address(ctx: Context, pid: Segment) -> list[dict[str, Any]]:
    out = []
    for raw in ctx.reps(pid, 11):
        address: dict[str, Any] = {}
        lines = [p for p in (ctx.rc(raw, 1), ctx.rc(raw, 2)) if p]
        if lines:
            address["line"] = lines
        for key, comp in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
            if ctx.rc(raw, comp):
                address[key] = ctx.rc(raw, comp)
        if address:
            out.append(address)
    return out


def patient(ctx: Context, pid: Segment, ids: PatientIds) -> dict[str, Any]:
    """The Patient of the administrative section, identified by CCCD/BHYT."""
    resource: dict[str, Any] = {"resourceType": "Patient", "id": ctx.patient_id,
                                "identifier": _identifiers(ctx, pid, ids)}
    if names := _name(ctx, pid):
        resource["name"] = names
    phones = [{"system": "phone", "value": ctx.rc(raw, 1)} for raw in ctx.reps(pid, 13) if ctx.rc(raw, 1)]
    if phones:
        resource["telecom"] = phones
    sex = codes.sex(ctx.c(pid, 8).upper())
    if sex:
        resource["gender"] = sex["fhir"]
    if birth := fhir_datetime(ctx.c(pid, 7)[:8]):
        resource["birthDate"] = birth
    if addresses := _address(ctx, pid):
        resource["address"] = addresses
    extensions = []
    ethnic_code = ctx.c(pid, 22)
    if ethnic_code:
        display = codes.ethnicity(ethnic_code) or ctx.c(pid, 22, 2)
        coding = codeable(systems.ETHNICITY, ethnic_code, display)["coding"][0]
        extensions.append({"url": systems.ETHNICITY_EXTENSION, "valueCoding": coding})
    if country := ctx.c(pid, 26) or ctx.c(pid, 28):  # citizenship, else nationality
        extensions.append({"url": systems.NATIONALITY_EXTENSION, "extension": [
            {"url": "code", "valueCodeableConcept": codeable(systems.ISO_COUNTRY, country.upper())}]})
    if extensions:
        resource["extension"] = extensions
    pd1 = ctx.msg.first("PD1")
    if registered := (ctx.c(pd1, 3, 10) or ctx.c(pd1, 3, 3)) if pd1 else "":
        resource["generalPractitioner"] = [{"identifier": {"system": systems.BHXH_FACILITY, "value": registered}}]
    return resource


def organization(ctx: Context) -> dict[str, Any]:
    """The sending facility (MSH-4), author of the document."""
    resource: dict[str, Any] = {"resourceType": "Organization", "id": ctx.organization_id,
                                "identifier": [{"system": systems.MOH_FACILITY, "value": ctx.facility_id}]}
    if ctx.facility_name:
        resource["name"] = ctx.facility_name
    return resource


def practitioner_ref(ctx: Context, segment: Segment, field: int) -> dict[str, Any] | None:
    """A logical reference to a practitioner by licence number (XCN), with the name as display."""
    licence = ctx.c(segment, field, 1)
    if not licence:
        return None
    display = " ".join(p for p in (ctx.c(segment, field, 6), ctx.c(segment, field, 2), ctx.c(segment, field, 3)) if p)
    out: dict[str, Any] = {"identifier": {"system": systems.PRACTITIONER_LICENCE, "value": licence}}
    if display:
        out["display"] = display
    return out


def _visit_extensions(ctx: Context, pv1: Segment, pv2: Segment | None) -> list[dict[str, Any]]:
    """The financial class (PV1-20, becomes MA_DOITUONG_KCB) and the treatment result (PV2-24, KET_QUA_DTRI)."""
    out = []
    if ctx.c(pv1, 20):
        out.append({"url": systems.PATIENT_CATEGORY_EXTENSION,
                    "valueCoding": {"system": systems.local("financial-class", ctx.facility_id),
                                    "code": ctx.c(pv1, 20)}})
    if ctx.c(pv2, 24) in TREATMENT_RESULTS:  # table 0216 is the site's own: other values are not KET_QUA_DTRI
        out.append({"url": systems.TREATMENT_RESULT_EXTENSION,
                    "valueCoding": {"system": systems.TREATMENT_RESULT, "code": ctx.c(pv2, 24)}})
    return out


def encounter(ctx: Context, pv1: Segment, pv2: Segment | None, rule: EventRule) -> dict[str, Any]:
    """The episode's Encounter; its status follows the event (A11 cancels, A13 reopens, A03 finishes)."""
    start, end = fhir_datetime(ctx.c(pv1, 44)), fhir_datetime(ctx.c(pv1, 45))
    if rule.cancels_discharge:
        end = None
    status = rule.encounter_status or ("finished" if end else "in-progress")
    class_code, class_display = ENCOUNTER_CLASS.get(ctx.c(pv1, 2).upper(), ("AMB", "ambulatory"))
    resource: dict[str, Any] = {
        "resourceType": "Encounter", "id": ctx.encounter_id, "status": status,
        "identifier": [{"system": systems.local("visit", ctx.facility_id), "value": ctx.c(pv1, 19)}],
        "class": {"system": systems.ACT_CODE, "code": class_code, "display": class_display},
        "subject": ref(ctx.patient_id), "serviceProvider": ref(ctx.organization_id),
    }
    period = {k: v for k, v in (("start", start), ("end", end)) if v}
    if period:
        resource["period"] = period
    if doctor := practitioner_ref(ctx, pv1, 7):
        resource["participant"] = [{"individual": doctor}]
    location = " ".join(p for p in (ctx.c(pv1, 3, 1), ctx.c(pv1, 3, 2), ctx.c(pv1, 3, 3)) if p)
    if location:
        place: dict[str, Any] = {"display": location}
        if ctx.c(pv1, 3, 1):
            place["identifier"] = {"system": systems.local("ward", ctx.facility_id), "value": ctx.c(pv1, 3, 1)}
        resource["location"] = [{"location": place}]
    if extensions := _visit_extensions(ctx, pv1, pv2):
        resource["extension"] = extensions
    if ctx.c(pv1, 18) in codes.xml130("MA_LOAI_KCB"):
        resource["type"] = [codeable(systems.VISIT_TYPE, ctx.c(pv1, 18))]
    disposition = ctx.c(pv1, 36)
    if disposition and not rule.cancels_discharge:
        resource["hospitalization"] = {"dischargeDisposition": codeable(systems.V2_0112, disposition)}
    if ctx.c(pv1, 10):
        resource["serviceType"] = {"text": ctx.c(pv1, 10)}
    if pv2 is not None and (ctx.c(pv2, 3) or ctx.t(pv2, 3, 2)):
        resource["reasonCode"] = [ctx.coded(pv2, 3)]
    return resource
