"""Full HL7 v2 mapping (hl7apy) into health-book fragments; slow, run in a worker process."""
from __future__ import annotations

from typing import Any

from mappings.fhir_common import as_instant, document_id, fhir_datetime, resource_id
from mappings.fhir_shapes import own_resource_issues
from mappings.hl7v2 import build_admin, build_clinical, build_orders, er7, limits, rules
from mappings.hl7v2.context import Context
from mappings.hl7v2.er7 import Er7Message, Segment
from mappings.hl7v2.events import (
    HEALTH_CHECK_CONCLUSION_CODE,
    HEALTH_CLASS_CODE,
    VITAL_SIGN_LOINC,
    EventRule,
)
from mappings.hl7v2.parse import structure_issues
from mappings.hl7v2.rules_claim import CLAIM_SEGMENTS as CLAIM_BUILDERS
from mappings.model import DocumentKind, Fragment, Issue, MappingResult
from mappings.vn import codes, systems
from mappings.vn.identifiers import patient_key


def map_message(message: str) -> MappingResult:
    """Turn one HL7 v2 message into the fragments of the documents it touches, or precise issues."""
    raw = er7.read(message)
    if raw is None:
        return MappingResult(issues=(Issue("MSH", "required", "message does not start with a valid MSH segment"),))
    issues = limits.field_issues(raw) + rules.check(raw)
    if any(issue.severity == "error" for issue in issues):
        return MappingResult(issues=tuple(issues))
    issues += structure_issues(raw)
    key, rule = rules.message_event(raw)
    if rule is None or any(issue.severity == "error" for issue in issues):
        return MappingResult(issues=tuple(issues))
    return _map(raw, key, rule, issues)


def _visit(ctx_msg: Er7Message, key: str) -> str:
    d = ctx_msg.delimiters
    pv1, mrg = ctx_msg.first("PV1"), ctx_msg.first("MRG")
    visit = er7.component(pv1.field(19), 1, d) if pv1 else ""
    if not visit and key == "ADT^A40" and mrg is not None:
        visit = er7.component(mrg.field(5), 1, d)
    return visit


def _document(msg: Er7Message, key: str, rule: EventRule, facility: str) -> tuple[str, DocumentKind]:
    d = msg.delimiters
    if rule.kind == "immunization":
        orc = msg.first("ORC")
        order = (er7.component(orc.field(3), 1, d) or er7.component(orc.field(2), 1, d)) if orc else ""
        return document_id(facility, "TC", order or er7.component(msg.segments[0].field(10), 1, d)), "immunization"
    if key == "ORU^R01" and rules.is_health_check(msg):
        return document_id(facility, "KSK", _visit(msg, key)), "health_check"
    return document_id(facility, _visit(msg, key)), "episode"


def _map(msg: Er7Message, key: str, rule: EventRule, issues: list[Issue]) -> MappingResult:
    d = msg.delimiters
    msh, pid = msg.segments[0], msg.first("PID")
    assert pid is not None  # rules.check refuses a message without PID
    facility = er7.component(msh.field(4), 2, d) or er7.component(msh.field(4), 1, d)
    if not _visit(msg, key) and rule.kind == "episode":
        return MappingResult(issues=(*issues, Issue("PV1-19", "no-episode",
                                                    f"{key} names no visit: no episode document was changed",
                                                    "warning")))
    doc_id, kind = _document(msg, key, rule, facility)
    evn = msg.first("EVN")
    when = fhir_datetime(er7.component(evn.field(2), 1, d)) if evn else None
    event_time = as_instant(when or fhir_datetime(er7.component(msh.field(7), 1, d)) or "")
    ctx = Context(msg, doc_id, facility, er7.component(msh.field(4), 1, d), event_time,
                  resource_id(doc_id, "Patient"), resource_id(doc_id, "Organization"),
                  resource_id(doc_id, "Encounter"))
    ids = rules.patient_ids(pid, msg)
    resources = [build_admin.patient(ctx, pid, ids), build_admin.organization(ctx)]
    if key == "ADT^A40":
        resources[0]["identifier"] += _merged_identifiers(ctx, msg.first("MRG"))
    elif key not in ("ADT^A28", "ADT^A31"):
        resources += _episode_resources(ctx, key, rule, kind)
    bad = own_resource_issues(resources, "MSH")
    if bad:
        return MappingResult(issues=(*issues, *bad))
    fragment = Fragment(doc_id, patient_key("cccd", ids.cccd) if ids.cccd else patient_key("bhyt", ids.bhyt),
                        kind, event_time, tuple(resources), key)
    return MappingResult((fragment,), tuple(issues))


def _merged_identifiers(ctx: Context, mrg: Segment | None) -> list[dict[str, Any]]:
    if mrg is None:
        return []
    out = []
    for raw in ctx.reps(mrg, 1):
        if ctx.rc(raw, 1):
            out.append({"use": "old", "system": systems.local("mrn", ctx.rc(raw, 4) or ctx.facility_id),
                        "value": ctx.rc(raw, 1)})
    return out


def _episode_resources(ctx: Context, key: str, rule: EventRule, kind: DocumentKind) -> list[dict[str, Any]]:
    msg = ctx.msg
    out: list[dict[str, Any]] = []
    pv1 = msg.first("PV1")
    if pv1 is not None:
        out.append(build_admin.encounter(ctx, pv1, msg.first("PV2"), rule))
    out += [build_clinical.condition(ctx, dg1) for dg1 in msg.all("DG1")]
    out += [build_clinical.allergy(ctx, al1) for al1 in msg.all("AL1")]
    out += [build_clinical.procedure(ctx, pr1) for pr1 in msg.all("PR1")]
    pid = msg.first("PID")
    card = rules.patient_ids(pid, msg).bhyt if pid is not None else ""
    out += [coverage for in1 in msg.all("IN1") if (coverage := build_orders.coverage(ctx, in1, card))]
    if key in CLAIM_BUILDERS:
        return out + _claim_resources(ctx, key)
    if key == "MDM^T02":
        txa = msg.first("TXA")
        assert txa is not None  # rules.check requires TXA for MDM
        return out + [build_clinical.summary(ctx, txa, msg.all("OBX"))]
    if key == "VXU^V04":
        return out + [build_clinical.immunization(ctx, rxa) for rxa in msg.all("RXA")]
    return out + _results(ctx, kind)


def _claim_resources(ctx: Context, key: str) -> list[dict[str, Any]]:
    """Charges (DFT), pharmacy orders (RDE), dispenses (RDS) and administrations (RAS)."""
    segment = CLAIM_BUILDERS[key]
    if segment == "FT1":
        return [r for n, ft1 in enumerate(ctx.msg.all("FT1"), start=1) for r in build_orders.charge_item(ctx, ft1, n)]
    build = {"RXE": build_orders.medication_request, "RXD": build_orders.medication_dispense,
             "RXA": build_orders.medication_administration}[segment]
    return [build(ctx, item) for item in ctx.msg.all(segment)]


def _results(ctx: Context, kind: DocumentKind) -> list[dict[str, Any]]:
    """OBX results grouped under their OBR; OBX before any OBR (ADT vital signs) stand alone."""
    out: list[dict[str, Any]] = []
    order: Segment | None = None
    group: list[dict[str, Any]] = []
    conclusion = ""
    health_class: int | None = None

    def close() -> None:
        if order is not None:
            category = "exam" if kind == "health_check" else "laboratory"
            out.append(build_clinical.diagnostic_report(ctx, order, group, conclusion, category, health_class))

    for segment in ctx.msg.segments:
        if segment.name == "OBR":
            close()
            order, group, conclusion, health_class = segment, [], "", None
        elif segment.name == "OBX":
            code = ctx.c(segment, 3)
            if kind == "health_check":
                category = "exam"
            elif code in VITAL_SIGN_LOINC:
                category = "vital-signs"
            else:
                category = "laboratory" if order is not None else "exam"
            effective = (fhir_datetime(ctx.c(order, 7)) if order is not None else None) or ctx.event_time
            obs = build_clinical.observation(ctx, segment, category, ctx.c(order, 3) if order else "", effective)
            if code.upper() == HEALTH_CHECK_CONCLUSION_CODE:
                conclusion = obs.get("valueString", "")
            if code.upper() == HEALTH_CLASS_CODE:
                health_class = codes.health_class(ctx.c(segment, 5))
            group.append(obs)
            out.append(obs)
    close()
    return out
