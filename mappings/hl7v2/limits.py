"""What no field may carry: control characters, and more characters than the national format allows.

A NUL or other control character in a field is never data: it breaks the logs, the XML sent on and the
sender's own ACK parsing, so the message is refused naming the field. Field lengths are the national
formats' (mappings/vn/data/field_lengths.json, with their sources): a 1 MB patient name is refused at the
ACK instead of by the portal a day later.
"""
from __future__ import annotations

import re

from mappings.hl7v2.er7 import Er7Message, unescape
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


def field_issues(msg: Er7Message) -> list[Issue]:
    """One issue per field holding a control character or longer than its national length; first 20 only."""
    issues: list[Issue] = []
    lengths = hl7_field_lengths()
    d = msg.delimiters
    seen: dict[str, int] = {}
    for segment in msg.segments:
        occurrence = seen[segment.name] = seen.get(segment.name, 0) + 1
        line_has_control = any(CONTROL.search(value) for value in segment.fields)
        for number, raw in enumerate(segment.fields):
            if number == 0:
                continue
            raw_control = line_has_control and CONTROL.search(raw)
            if raw_control or (d.escape in raw and "X" in raw and CONTROL.search(unescape(raw, d))):
                issues.append(_control_issue(where(segment.name, occurrence, number)))
            limit = lengths.get(f"{segment.name}-{number}")
            if limit is not None and len(raw) > limit and any(len(rep) > limit for rep in raw.split(d.repetition)):
                location = where(segment.name, occurrence, number)
                issues.append(Issue(location, "field-too-long",
                                    f"{location} is longer than the {limit} characters the national format allows"))
            if len(issues) >= 20:
                return issues
    return issues
