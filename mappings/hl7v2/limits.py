"""What no field may carry: control characters, and more characters than the national format allows.

A NUL or other control character in a field is never data: it breaks the logs, the XML sent on and the
sender's own ACK parsing, so the message is refused naming the field. Field lengths are the national
formats' (mappings/vn/data/field_lengths.json, with their sources): a 1 MB patient name is refused at the
ACK instead of by the portal a day later.
"""
from __future__ import annotations

import re
from functools import cache

from mappings.hl7v2.er7 import Delimiters, Er7Message, Segment, unescape
from mappings.hl7v2.rules import where
from mappings.model import Issue
from mappings.vn.lengths import hl7_field_lengths

# C0 controls but TAB and LF (\.br\ unescapes to LF), DEL, and C1 controls, which no Vietnamese charset
# decodes to: there they are the sign of a wrong charset (UTF-8 read as 8859/1).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _control_issue(location: str) -> Issue:
    return Issue(location, "control-character",
                 f"{location} holds a control character (such as NUL), which no HL7 field may carry; "
                 "check the sender's character set and field mapping")


@cache
def _limits_by_segment() -> dict[str, tuple[tuple[int, int], ...]]:
    """The national lengths by segment, as (field number, characters): a segment is checked only where limited."""
    limited: dict[str, list[tuple[int, int]]] = {}
    for key, limit in hl7_field_lengths().items():
        name, _, number = key.partition("-")
        limited.setdefault(name, []).append((int(number), limit))
    return {name: tuple(sorted(fields)) for name, fields in limited.items()}


def field_issues(msg: Er7Message) -> list[Issue]:
    """One issue per field holding a control character or longer than its national length; first 20 only."""
    issues: list[Issue] = []
    limits = _limits_by_segment()
    d = msg.delimiters
    seen: dict[str, int] = {}
    for segment in msg.segments:
        occurrence = seen[segment.name] = seen.get(segment.name, 0) + 1
        line = d.field.join(segment.fields)
        if CONTROL.search(line) or (d.escape in line and "X" in line):  # rare: look at each field
            issues += _segment_issues(segment, occurrence, d, line_has_control=CONTROL.search(line) is not None)
        else:  # the common case: only the limited fields can be at fault
            for number, limit in limits.get(segment.name, ()):
                issue = _length_issue(segment, occurrence, number, limit, d)
                if issue is not None:
                    issues.append(issue)
        if len(issues) >= 20:
            return issues[:20]
    return issues


def _segment_issues(segment: Segment, occurrence: int, d: Delimiters, line_has_control: bool) -> list[Issue]:
    """Every field of a segment that may hold a control character, in field order with the length checks."""
    issues: list[Issue] = []
    lengths = dict(_limits_by_segment().get(segment.name, ()))
    for number, raw in enumerate(segment.fields):
        if number == 0:
            continue
        raw_control = line_has_control and CONTROL.search(raw)
        if raw_control or (d.escape in raw and "X" in raw and CONTROL.search(unescape(raw, d))):
            issues.append(_control_issue(where(segment.name, occurrence, number)))
        limit = lengths.get(number)
        issue = _length_issue(segment, occurrence, number, limit, d) if limit is not None else None
        if issue is not None:
            issues.append(issue)
    return issues


def _length_issue(segment: Segment, occurrence: int, number: int, limit: int, d: Delimiters) -> Issue | None:
    raw = segment.field(number)
    if len(raw) <= limit or not any(len(rep) > limit for rep in raw.split(d.repetition)):
        return None
    location = where(segment.name, occurrence, number)
    return Issue(location, "field-too-long", f"{location} is longer than the {limit} characters the national format allows")
