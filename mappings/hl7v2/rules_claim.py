"""The checks for claim content (charges, pharmacy, insurance card, discharge codes); called by rules.check.

What a claim needs from the message itself is refused here with the field named; what the site has not
mapped yet (wards, items, lab codes, financial classes) is not checked here: the XML 130 mapping reports it.
"""
from __future__ import annotations

import re

from mappings.fhir_common import ends_before_start, fhir_datetime
from mappings.hl7v2.er7 import Delimiters, Er7Message, Segment, component
from mappings.hl7v2.values import NUMBER
from mappings.model import Issue
from mappings.vn.identifiers import bhxh_facility_code_issues, bhyt_issues

# the segment each claim message type must carry
CLAIM_SEGMENTS = {"DFT^P03": "FT1", "RDE^O11": "RXE", "RDS^O13": "RXD", "RAS^O17": "RXA"}
CHARGE_TYPES = frozenset({"", "CG", "CD", "PY", "AJ"})  # HL7 0017: charge, credit, payment, adjustment
BHYT_SHAPE = re.compile(r"[A-Z]{2}[0-9]")


def looks_like_bhyt(value: str) -> bool:
    """An IN1-36 that starts like a BHYT card (object letters, benefit digit) is checked as one."""
    return BHYT_SHAPE.match(value) is not None


def _at(name: str, occurrence: int, field: int) -> str:
    return f"{name}[{occurrence}]-{field}"


def order_number(orc: Segment | None, d: Delimiters) -> str:
    """The order that ties an order, its dispenses and its administrations together: ORC-2, else ORC-3."""
    if orc is None:
        return ""
    return component(orc.field(2), 1, d) or component(orc.field(3), 1, d)


def preceding_orc(msg: Er7Message, segment: Segment) -> Segment | None:
    """The ORC of the order group a pharmacy segment belongs to (the nearest one before it)."""
    found = None
    for candidate in msg.segments:
        if candidate is segment:
            return found
        if candidate.name == "ORC":
            found = candidate
    return found


def _number_issue(segment: Segment, occurrence: int, field: int, d: Delimiters, what: str,
                  positive: bool = True) -> list[Issue]:
    value, where = component(segment.field(field), 1, d), _at(segment.name, occurrence, field)
    if not value:
        return [Issue(where, "required", f"{where} {what} is required")]
    if not NUMBER.fullmatch(value) or (positive and float(value) <= 0):
        return [Issue(where, "invalid-number", f"{where} {what} must be a {'positive ' if positive else ''}number")]
    return []


def _required(segment: Segment, occurrence: int, field: int, d: Delimiters, what: str) -> list[Issue]:
    where = _at(segment.name, occurrence, field)
    return [] if component(segment.field(field), 1, d) else [Issue(where, "required", f"{where} {what} is required")]


def _charge_issues(ft1: Segment, n: int, d: Delimiters) -> list[Issue]:
    kind = component(ft1.field(6), 1, d).upper()
    if kind not in CHARGE_TYPES:
        return [Issue(_at("FT1", n, 6), "invalid-code", "FT1-6 transaction type must be CG, CD, PY or AJ")]
    if kind in ("PY", "AJ"):
        return []  # payments and adjustments are not claim lines
    issues = _required(ft1, n, 7, d, "transaction (item) code") + _required(ft1, n, 4, d, "transaction date")
    issues += _number_issue(ft1, n, 10, d, "quantity")
    if component(ft1.field(12), 1, d):
        issues += _number_issue(ft1, n, 12, d, "unit amount", positive=False)
    if kind == "CD":
        issues += _required(ft1, n, 2, d, "transaction id (the charge a credit cancels)")
    return issues


def _pharmacy_issues(msg: Er7Message, key: str, d: Delimiters) -> list[Issue]:
    name = CLAIM_SEGMENTS[key]
    segments = msg.all(name)
    if not segments:
        return [Issue(name, "required", f"{key} carries no {name} segment")]
    issues: list[Issue] = []
    for n, segment in enumerate(segments, start=1):
        if name == "FT1":
            issues += _charge_issues(segment, n, d)
            continue
        if not order_number(preceding_orc(msg, segment), d):
            issues.append(Issue("ORC-2", "required", f"ORC-2 (or ORC-3) order number is required before {name}[{n}]: "
                                                     "it links the order, its dispenses and administrations"))
        code_field = {"RXE": 2, "RXD": 2, "RXA": 5}[name]
        issues += _required(segment, n, code_field, d, "drug code")
        if name == "RXE":
            issues += _number_issue(segment, n, 10, d, "dispense amount")
        elif name == "RXD":
            issues += _number_issue(segment, n, 4, d, "actual dispense amount")
            issues += _required(segment, n, 3, d, "dispense time")
        else:
            issues += _required(segment, n, 3, d, "administration time")
    return issues


def _coverage_issues(msg: Er7Message, d: Delimiters) -> list[Issue]:
    issues: list[Issue] = []
    for n, in1 in enumerate(msg.all("IN1"), start=1):
        start, end = component(in1.field(12), 1, d), component(in1.field(13), 1, d)
        for field, value in ((12, start), (13, end)):
            if value and fhir_datetime(value) is None:
                issues.append(Issue(_at("IN1", n, field), "invalid-date", f"IN1-{field} is not a valid HL7 date"))
        if start and end and fhir_datetime(start) and fhir_datetime(end) \
                and ends_before_start(str(fhir_datetime(start)), str(fhir_datetime(end))):
            issues.append(Issue(_at("IN1", n, 13), "invalid-date", "IN1-13 card expiry is before IN1-12"))
        if looks_like_bhyt(card := component(in1.field(36), 1, d)):  # another insurer's policy is not checked
            issues += bhyt_issues(card, _at("IN1", n, 36))
    pd1 = msg.first("PD1")
    registered = (component(pd1.field(3), 10, d) or component(pd1.field(3), 3, d)) if pd1 else ""
    return issues + (bhxh_facility_code_issues(registered, "PD1-3") if registered else [])


def claim_issues(msg: Er7Message, key: str) -> list[Issue]:
    """Issues in the claim content of any message: charges and pharmacy segments, card, discharge codes."""
    d = msg.delimiters
    issues = _pharmacy_issues(msg, key, d) if key in CLAIM_SEGMENTS else []
    return issues + _coverage_issues(msg, d)
