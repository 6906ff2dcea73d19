"""The checks that decide whether an HL7 v2 message can become a valid record; shared by screen and map."""
from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.fhir_common import ends_before_start, fhir_datetime
from mappings.hl7v2 import checkup
from mappings.hl7v2.er7 import Delimiters, Er7Message, Segment, component, repetitions
from mappings.hl7v2.events import (
    EVENTS,
    FALLBACK_VERSION,
    HEALTH_CHECK_ORDER_PREFIX,
    HEALTH_CLASS_CODE,
    SUPPORTED_VERSIONS,
    EventRule,
    event_key,
)
from mappings.hl7v2.rules_claim import claim_issues
from mappings.hl7v2.values import NUMBER, NUMERIC_TYPES, Number, quantity_number
from mappings.model import Issue
from mappings.vn import codes, systems
from mappings.vn.identifiers import bhyt_issues, cccd_issues, icd10_issues
from mappings.vn.vitals import implausible, vital_codes

DATE_FIELDS: dict[str, tuple[int, ...]] = {"EVN": (2,), "PV1": (44, 45), "OBR": (7, 22), "OBX": (14,), "DG1": (5,),
                                            "PR1": (5,), "TXA": (4,), "RXA": (3, 4), "FT1": (4, 5), "RXD": (3,),
                                            "ORC": (9,)}
MINUTE_FIELDS = frozenset({("PV1", 44), ("PV1", 45)})  # XML 130 NGAY_VAO / NGAY_RA are yyyyMMddHHmm
CODE_FIELDS = {"OBX": 3, "OBR": 4, "DG1": 3, "AL1": 3, "PR1": 3}
CCCD_TYPES_WITH_BCA = frozenset({"", "NI", "NNVNM"})
SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
LATER_V2 = re.compile(r"2\.\d{1,2}(?:\.\d{1,2})?", re.ASCII)
COMPLETION_STATUSES = frozenset({"", "CP", "PA", "RE", "NA"})
REPEATING_SEGMENTS = frozenset({"OBR", "OBX", "DG1", "AL1", "PR1", "RXA", "ORC", "NTE", "FT1", "RXE", "RXD", "RXR",
                                "IN1"})


@dataclass(frozen=True, slots=True)
class PatientIds:
    """The identifiers found in PID-3, by kind; empty when absent."""

    cccd: str = ""
    bhyt: str = ""
    mrn: str = ""
    conflicting: bool = False


def where(name: str, occurrence: int, field: int = 0) -> str:
    """An issue location: `PID-3` for a segment that occurs once, `OBX[10]-5` (its 1-based occurrence) else."""
    segment = f"{name}[{occurrence}]" if name in REPEATING_SEGMENTS else name
    return f"{segment}-{field}" if field else segment


def valid_dtm(value: str) -> bool:
    """True for a real HL7 DTM/DT value (calendar date, clock time and zone all in range)."""
    return fhir_datetime(value) is not None


def message_event(msg: Er7Message) -> tuple[str, EventRule | None]:
    """The EVENTS key from MSH-9 and its rule, None when the type is not supported."""
    msh = msg.segments[0]
    raw = msh.field(9)
    key = event_key(component(raw, 1, msg.delimiters), component(raw, 2, msg.delimiters))
    return key, EVENTS.get(key)


def patient_ids(pid: Segment, msg: Er7Message) -> PatientIds:
    """Pick CCCD (type NNVNM, or authority BCA typed NI or untyped; not a BCA passport), BHYT (type HC), MRN."""
    d = msg.delimiters
    found = {"cccd": "", "bhyt": "", "mrn": ""}
    conflicting = False
    for rep in repetitions(pid.field(3), d):
        value, authority, kind = component(rep, 1, d), component(rep, 4, d).upper(), component(rep, 5, d).upper()
        slot = "cccd" if kind == "NNVNM" or (authority == "BCA" and kind in CCCD_TYPES_WITH_BCA) else \
            "bhyt" if kind == "HC" else "mrn" if kind == "MR" else ""
        if slot and value:
            conflicting |= slot != "mrn" and found[slot] not in ("", value)
            found[slot] = found[slot] or value
    return PatientIds(**found, conflicting=conflicting)


def _version_issues(msg: Er7Message) -> list[Issue]:
    """A later or unstated 2.x version is read as 2.5 (v2 is backward compatible); anything else is refused."""
    version = component(msg.segments[0].field(12), 1, msg.delimiters)
    if version in SUPPORTED_VERSIONS:
        return []
    if not version or LATER_V2.fullmatch(version):
        return [Issue("MSH-12", "unsupported-version",
                      f"HL7 version is not 2.3-2.8; mapped as {FALLBACK_VERSION}", "warning")]
    return [Issue("MSH-12", "unsupported-version", "MSH-12 is not an HL7 version 2 release (2.3 to 2.8)")]


def _identity_issues(pid: Segment, msg: Er7Message) -> list[Issue]:
    d = msg.delimiters
    issues: list[Issue] = []
    birth_raw = component(pid.field(7), 1, d)
    sex = component(pid.field(8), 1, d).upper()
    birth_year = int(birth_raw[:4]) if birth_raw and valid_dtm(birth_raw) else None
    if not birth_raw:
        issues.append(Issue("PID-7", "required", "PID-7 birth date is required"))
    elif birth_year is None:
        issues.append(Issue("PID-7", "invalid-date", "PID-7 birth date is not a valid HL7 date"))
    elif birth_raw[:8] > (sent := component(msg.segments[0].field(7), 1, d))[:8] and valid_dtm(sent):
        issues.append(Issue("PID-7", "invalid-date", "PID-7 birth date is after the message time (MSH-7)"))
        birth_year = None
    if not sex:
        issues.append(Issue("PID-8", "required", "PID-8 administrative sex is required"))
    elif codes.sex(sex) is None:
        issues.append(Issue("PID-8", "invalid-code", "PID-8 administrative sex must be M, F, O, U, A or N"))
        sex = ""
    if not component(pid.field(5), 1, d) and not component(pid.field(5), 2, d):
        issues.append(Issue("PID-5", "required", "PID-5 patient name is required"))
    ids = patient_ids(pid, msg)
    if ids.conflicting:
        issues.append(Issue("PID-3", "conflicting-identifiers",
                            "PID-3 carries two different CCCD numbers or two different BHYT cards"))
    if not ids.cccd and not ids.bhyt:
        issues.append(Issue("PID-3", "required",
                            "PID-3 needs a CCCD (authority BCA, type NNVNM) or a BHYT card (type HC); "
                            "a medical record number alone is not enough"))
    if ids.cccd:
        issues.extend(cccd_issues(ids.cccd, "PID-3", birth_year, sex or None))
    if ids.bhyt:
        issues.extend(bhyt_issues(ids.bhyt, "PID-3"))
    return issues


def _episode_issues(msg: Er7Message, key: str, rule: EventRule) -> list[Issue]:
    d = msg.delimiters
    issues: list[Issue] = []
    pv1 = msg.first("PV1")
    visit = component(pv1.field(19), 1, d) if pv1 else ""
    if rule.needs_visit and not visit:
        issues.append(Issue("PV1-19", "required", f"PV1-19 visit number is required for {key}" + (
            " (HL7 makes PV1 optional in a result message, but the health book files every result under its visit)"
            if key == "ORU^R01" else "")))
    if pv1 is not None and not rule.cancels_discharge:
        start, end = fhir_datetime(component(pv1.field(44), 1, d)), fhir_datetime(component(pv1.field(45), 1, d))
        if start and end and ends_before_start(start, end):
            issues.append(Issue("PV1-45", "discharge-before-admission",
                                "PV1-45 discharge time is before PV1-44 admission time"))
    if key == "ADT^A40":
        mrg = msg.first("MRG")
        if mrg is None or not component(mrg.field(1), 1, d):
            issues.append(Issue("MRG-1", "required", "MRG-1 prior patient identifier is required for a merge"))
    if key == "ORU^R01" and msg.first("OBX") is None:
        issues.append(Issue("OBX", "required", "ORU^R01 carries no OBX result"))
    if key == "MDM^T02":
        if msg.first("TXA") is None:
            issues.append(Issue("TXA", "required", "MDM^T02 needs a TXA document header"))
        if msg.first("OBX") is None:
            issues.append(Issue("OBX", "required", "MDM^T02 carries no OBX with the summary text"))
        elif not any(obx.field(5).strip(d.repetition) for obx in msg.all("OBX")):
            issues.append(Issue("OBX-5", "required", "MDM^T02 summary text (OBX-5) is empty"))
    if key == "VXU^V04":
        rxa = msg.first("RXA")
        if rxa is None:
            issues.append(Issue("RXA", "required", "VXU^V04 needs an RXA administration segment"))
        else:
            if not component(rxa.field(3), 1, d):
                issues.append(Issue(where("RXA", 1, 3), "required", "RXA-3 administration time is required"))
            if not component(rxa.field(5), 1, d):
                issues.append(Issue(where("RXA", 1, 5), "required", "RXA-5 vaccine code is required"))
            if component(rxa.field(20), 1, d).upper() not in COMPLETION_STATUSES:
                issues.append(Issue(where("RXA", 1, 20), "invalid-code",
                                    "RXA-20 completion status is not CP, PA, RE or NA "
                                    "(are the RXA fields shifted?); the dose is recorded as completed", "warning"))
    if key == "ORU^R01" and is_health_check(msg):
        pid = msg.first("PID")
        form, missing = checkup.form_issues(msg, patient_ids(pid, msg).cccd if pid is not None else "")
        if form != "DUOI_6":  # the under-6 form has no health class (QĐ 1551 PL01 mẫu 13)
            issues.extend(_health_class_issues(msg))
        issues.extend(missing)
    issues.extend(claim_issues(msg, key))
    issues.extend(_content_issues(msg))
    for occurrence, dg1 in enumerate(msg.all("DG1"), start=1):
        raw = repetitions(dg1.field(3), d)[:1]
        if raw and component(raw[0], 3, d).upper() in systems.HL7_ICD10_NAMES:
            issues.extend(icd10_issues(component(raw[0], 1, d), where("DG1", occurrence, 3)))
    return issues


def _content_issues(msg: Er7Message) -> list[Issue]:
    """Coded fields that must name something, and times that must be real, wherever they occur."""
    d = msg.delimiters
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for segment in msg.segments:
        occurrence = seen[segment.name] = seen.get(segment.name, 0) + 1
        for number in DATE_FIELDS.get(segment.name, ()):
            value = component(segment.field(number), 1, d)
            if value and not valid_dtm(value):
                location = where(segment.name, occurrence, number)
                issues.append(Issue(location, "invalid-date", f"{location} is not a valid HL7 date/time"))
            elif value and (segment.name, number) in MINUTE_FIELDS and len(value.split("+")[0].split("-")[0]) < 12:
                location = where(segment.name, occurrence, number)
                issues.append(Issue(location, "invalid-date", f"{location} needs a time to the minute (yyyyMMddHHmm)"))
        if segment.name == "OBX":
            issues.extend(_result_value_issues(segment, occurrence, d))
        number = CODE_FIELDS.get(segment.name, 0)
        if number and not (component(segment.field(number), 1, d) or component(segment.field(number), 2, d)):
            location = where(segment.name, occurrence, number)
            issues.append(Issue(location, "required", f"{location} needs a code or a text"))
    return issues


def _result_value_issues(obx: Segment, occurrence: int, d: Delimiters) -> list[Issue]:
    """A numeric result (OBX-2 NM or SN) must hold a number, and a vital sign a physically possible one."""
    kind, raw, unit_field = component(obx.field(2), 1, d).upper(), obx.field(5), obx.field(6)
    if kind not in NUMERIC_TYPES and not unit_field:
        return []  # neither typed numeric nor with a unit: the mapping sends no Quantity
    if kind == "NM" and NUMBER.fullmatch(raw):
        number: Number | None = Number("", raw)  # the common case, without splitting the field
    elif not raw.strip(d.repetition + d.component + " "):
        return []
    else:
        number = quantity_number(kind, raw, component(unit_field, 1, d), d)
    if number is None:
        if kind not in NUMERIC_TYPES:
            return []
        location = where("OBX", occurrence, 5)
        return [Issue(location, "invalid-number", f"{location} is not a number as OBX-2 {kind} requires "
                                                  "(digits with an optional sign, decimal point and comparator)")]
    code = component(obx.field(3), 1, d)
    why = implausible(code, number.value, component(unit_field, 1, d)) if code in vital_codes() else None
    if why is None:
        return []
    location = where("OBX", occurrence, 5)
    return [Issue(location, "implausible-value", f"{location} {why}")]


def _segment_name_issues(msg: Er7Message) -> list[Issue]:
    """A segment without a valid name is usually a stray terminator that cut the previous segment in two."""
    seen: dict[str, int] = {}
    for previous, segment in zip(msg.segments, msg.segments[1:], strict=False):
        seen[previous.name] = seen.get(previous.name, 0) + 1
        if not SEGMENT_NAME.fullmatch(segment.name):
            owner = where(previous.name, seen[previous.name]) if SEGMENT_NAME.fullmatch(previous.name) else "MSH"
            return [Issue(owner, "segment-split",
                          "a segment terminator inside this segment leaves a piece with no valid segment name")]
    return []


def is_health_check(msg: Er7Message) -> bool:
    """An ORU is a health check when its order is a KSK panel or it carries a health class."""
    d = msg.delimiters
    return any(component(obr.field(4), 1, d).upper().startswith(HEALTH_CHECK_ORDER_PREFIX) for obr in msg.all("OBR")) \
        or any(component(obx.field(3), 1, d).upper() == HEALTH_CLASS_CODE for obx in msg.all("OBX"))


def _health_class_issues(msg: Er7Message) -> list[Issue]:
    d = msg.delimiters
    classes = [(occurrence, obx) for occurrence, obx in enumerate(msg.all("OBX"), start=1)
               if component(obx.field(3), 1, d).upper() == HEALTH_CLASS_CODE]
    if not classes:
        return [Issue("OBX-3", "required", f"a health check needs an OBX {HEALTH_CLASS_CODE} health class")]
    occurrence, obx = classes[0]
    if codes.health_class(component(obx.field(5), 1, d)) is None:
        return [Issue(where("OBX", occurrence, 5), "invalid-code", "health class must be I-V (1-5)")]
    return []


def check(msg: Er7Message) -> list[Issue]:
    """Every issue that stops the message becoming a valid record (plus warnings)."""
    key, rule = message_event(msg)
    if rule is None:
        return [Issue("MSH-9", "unsupported-message-type", "MSH-9 is not a supported message type "
                      "(ADT A01-A05 A08 A11 A13 A28 A31 A40, ORU^R01, MDM^T02, VXU^V04, "
                      "DFT^P03, RDE^O11, RDS^O13, RAS^O17)")]
    issues = _version_issues(msg) + _segment_name_issues(msg)
    if not valid_dtm(component(msg.segments[0].field(7), 1, msg.delimiters)):
        issues.append(Issue("MSH-7", "required", "MSH-7 message time is required"))
    msh4 = msg.segments[0].field(4)
    if not component(msh4, 1, msg.delimiters) and not component(msh4, 2, msg.delimiters):
        issues.append(Issue("MSH-4", "required", "MSH-4 sending facility is required (it scopes the visit number)"))
    pids = msg.all("PID")
    if not pids:
        issues.append(Issue("PID", "required", "a PID segment is required"))
    elif len(pids) > 1 or len(msg.all("PV1")) > 1:
        issues.append(Issue("PID", "multiple-patients",
                            "one message must carry one patient and one visit (one PID, at most one PV1)"))
    else:
        issues.extend(_identity_issues(pids[0], msg))
    issues.extend(_episode_issues(msg, key, rule))
    return issues
