"""The checks that decide whether an HL7 v2 message can become a valid record; shared by screen and map."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from mappings.hl7v2.er7 import Er7Message, Segment, component, repetitions
from mappings.hl7v2.events import (EVENTS, FALLBACK_VERSION, HEALTH_CHECK_ORDER_PREFIX, HEALTH_CLASS_CODE,
                                    SUPPORTED_VERSIONS, EventRule, event_key)
from mappings.model import Issue
from mappings.vn import codes
from mappings.vn.identifiers import bhyt_issues, cccd_issues, icd10_issues

DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?")
COMPLETION_STATUSES = frozenset({"", "CP", "PA", "RE", "NA"})
ICD10_SYSTEMS = frozenset({"", "I10", "ICD10", "ICD-10", "I10C"})


@dataclass(frozen=True, slots=True)
class PatientIds:
    """The identifiers found in PID-3, by kind; empty when absent."""

    cccd: str = ""
    bhyt: str = ""
    mrn: str = ""


def dtm_parts(value: str) -> tuple[int, ...] | None:
    """Year, month, day of an HL7 DTM/DT value; None when it is not a real calendar date."""
    match = DTM.fullmatch(value)
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        date(year, month, day)
    except ValueError:
        return None
    hour, minute = int(match[4] or 0), int(match[5] or 0)
    if hour > 23 or minute > 59:
        return None
    return year, month, day


def message_event(msg: Er7Message) -> tuple[str, EventRule | None]:
    """The EVENTS key from MSH-9 and its rule, None when the type is not supported."""
    msh = msg.segments[0]
    raw = msh.field(9)
    key = event_key(component(raw, 1, msg.delimiters), component(raw, 2, msg.delimiters))
    return key, EVENTS.get(key)


def patient_ids(pid: Segment, msg: Er7Message) -> PatientIds:
    """Pick CCCD (authority BCA or type NNVNM), BHYT (type HC) and MRN (type MR) out of PID-3."""
    d = msg.delimiters
    found = {"cccd": "", "bhyt": "", "mrn": ""}
    for rep in repetitions(pid.field(3), d):
        value, authority, kind = component(rep, 1, d), component(rep, 4, d).upper(), component(rep, 5, d).upper()
        slot = "cccd" if kind == "NNVNM" or authority == "BCA" else "bhyt" if kind == "HC" else \
            "mrn" if kind == "MR" else ""
        if slot and value and not found[slot]:
            found[slot] = value
    return PatientIds(**found)


def _version_issues(msg: Er7Message) -> list[Issue]:
    version = component(msg.segments[0].field(12), 1, msg.delimiters)
    if version in SUPPORTED_VERSIONS:
        return []
    return [Issue("MSH-12", "unsupported-version",
                  f"HL7 version is not 2.3-2.8; mapped as {FALLBACK_VERSION}", "warning")]


def _identity_issues(pid: Segment, msg: Er7Message) -> list[Issue]:
    d = msg.delimiters
    issues: list[Issue] = []
    birth_raw = component(pid.field(7), 1, d)
    sex = component(pid.field(8), 1, d).upper()
    birth = dtm_parts(birth_raw) if birth_raw else None
    if not birth_raw:
        issues.append(Issue("PID-7", "required", "PID-7 birth date is required"))
    elif birth is None:
        issues.append(Issue("PID-7", "invalid-date", "PID-7 birth date is not a valid HL7 date"))
    elif birth_raw[:8] > (sent := component(msg.segments[0].field(7), 1, d))[:8] and dtm_parts(sent):
        issues.append(Issue("PID-7", "invalid-date", "PID-7 birth date is after the message time (MSH-7)"))
        birth = None
    if not sex:
        issues.append(Issue("PID-8", "required", "PID-8 administrative sex is required"))
    elif codes.sex(sex) is None:
        issues.append(Issue("PID-8", "invalid-code", "PID-8 administrative sex must be M, F, O or U"))
        sex = ""
    ids = patient_ids(pid, msg)
    if not ids.cccd and not ids.bhyt:
        issues.append(Issue("PID-3", "required",
                            "PID-3 needs a CCCD (authority BCA, type NNVNM) or a BHYT card (type HC); "
                            "a medical record number alone is not enough"))
    if ids.cccd:
        issues.extend(cccd_issues(ids.cccd, "PID-3", birth[0] if birth else None, sex or None))
    if ids.bhyt:
        issues.extend(bhyt_issues(ids.bhyt, "PID-3"))
    return issues


def _episode_issues(msg: Er7Message, key: str, rule: EventRule) -> list[Issue]:
    d = msg.delimiters
    issues: list[Issue] = []
    pv1 = msg.first("PV1")
    visit = component(pv1.field(19), 1, d) if pv1 else ""
    if rule.needs_visit and not visit:
        issues.append(Issue("PV1-19", "required", f"PV1-19 visit number is required for {key}"))
    if key == "ADT^A40":
        mrg = msg.first("MRG")
        if mrg is None or not component(mrg.field(1), 1, d):
            issues.append(Issue("MRG-1", "required", "MRG-1 prior patient identifier is required for a merge"))
        elif not visit and not component(mrg.field(5), 1, d):
            issues.append(Issue("PV1-19", "required", "PV1-19 or MRG-5 must name the visit to merge"))
    if key == "ORU^R01" and msg.first("OBX") is None:
        issues.append(Issue("OBX", "required", "ORU^R01 carries no OBX result"))
    if key == "MDM^T02":
        if msg.first("TXA") is None:
            issues.append(Issue("TXA", "required", "MDM^T02 needs a TXA document header"))
        if msg.first("OBX") is None:
            issues.append(Issue("OBX", "required", "MDM^T02 carries no OBX with the summary text"))
    if key == "VXU^V04":
        rxa = msg.first("RXA")
        if rxa is None:
            issues.append(Issue("RXA", "required", "VXU^V04 needs an RXA administration segment"))
        else:
            if dtm_parts(component(rxa.field(3), 1, d)) is None:
                issues.append(Issue("RXA-3", "required", "RXA-3 administration time is required"))
            if not component(rxa.field(5), 1, d):
                issues.append(Issue("RXA-5", "required", "RXA-5 vaccine code is required"))
            if component(rxa.field(20), 1, d).upper() not in COMPLETION_STATUSES:
                issues.append(Issue("RXA-20", "invalid-code", "RXA-20 completion status is not CP, PA, RE or NA "
                                    "(are the RXA fields shifted?); the dose is recorded as completed", "warning"))
    if key == "ORU^R01" and is_health_check(msg):
        issues.extend(_health_class_issues(msg))
    for dg1 in msg.all("DG1"):
        raw = repetitions(dg1.field(3), d)[:1]
        if raw and component(raw[0], 3, d).upper() in ICD10_SYSTEMS:
            issues.extend(icd10_issues(component(raw[0], 1, d), "DG1-3"))
    return issues


def is_health_check(msg: Er7Message) -> bool:
    """An ORU is a health check when its order is a KSK panel or it carries a health class."""
    d = msg.delimiters
    return any(component(obr.field(4), 1, d).upper().startswith(HEALTH_CHECK_ORDER_PREFIX) for obr in msg.all("OBR")) \
        or any(component(obx.field(3), 1, d).upper() == HEALTH_CLASS_CODE for obx in msg.all("OBX"))


def _health_class_issues(msg: Er7Message) -> list[Issue]:
    d = msg.delimiters
    classes = [obx for obx in msg.all("OBX") if component(obx.field(3), 1, d).upper() == HEALTH_CLASS_CODE]
    if not classes:
        return [Issue("OBX-3", "required", f"a health check needs an OBX {HEALTH_CLASS_CODE} health class")]
    if codes.health_class(component(classes[0].field(5), 1, d)) is None:
        return [Issue("OBX-5", "invalid-code", "health class must be I-V (1-5)")]
    return []


def check(msg: Er7Message) -> list[Issue]:
    """Every issue that stops the message becoming a valid record (plus warnings)."""
    key, rule = message_event(msg)
    if rule is None:
        return [Issue("MSH-9", "unsupported-message-type", f"message type {key} is not supported")]
    issues = _version_issues(msg)
    if dtm_parts(component(msg.segments[0].field(7), 1, msg.delimiters)) is None:
        issues.append(Issue("MSH-7", "required", "MSH-7 message time is required"))
    pid = msg.first("PID")
    if pid is None:
        issues.append(Issue("PID", "required", "a PID segment is required"))
    else:
        issues.extend(_identity_issues(pid, msg))
    issues.extend(_episode_issues(msg, key, rule))
    return issues
