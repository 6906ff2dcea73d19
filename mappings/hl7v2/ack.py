"""Acknowledgements: an MSA that echoes the message's control id, and one ERR segment per issue."""
from __future__ import annotations

import re
from datetime import datetime

from mappings.hl7v2.er7 import escape
from mappings.hl7v2.header import DEFAULT_ENCODING, MessageHeader
from mappings.model import Issue

# HL7 table 0357 message error conditions, and the one each Issue code is reported as (ERR-3). 207 (internal
# error) is only for codes not listed here: some interface engines retry on 207 as on a server fault.
SEGMENT_SEQUENCE = ("100", "Segment sequence error")
REQUIRED = ("101", "Required field missing")
DATA_TYPE = ("102", "Data type error")
TABLE_VALUE = ("103", "Table value not found")
UNSUPPORTED_TYPE = ("200", "Unsupported message type")
INTERNAL_ERROR = ("207", "Application internal error")
HL7_ERROR_CODES: dict[str, tuple[str, str]] = {
    "required": REQUIRED, "no-episode": REQUIRED,
    # a value of the wrong form or one that cannot be true: dates, numbers, identifiers, their agreement
    "invalid": DATA_TYPE, "invalid-date": DATA_TYPE, "invalid-number": DATA_TYPE, "implausible-value": DATA_TYPE,
    "discharge-before-admission": DATA_TYPE, "cccd-format": DATA_TYPE, "cccd-birth-mismatch": DATA_TYPE,
    "bhyt-format": DATA_TYPE, "icd10-format": DATA_TYPE, "conflicting-identifiers": DATA_TYPE,
    "facility-code-format": DATA_TYPE, "facility-code-swapped": DATA_TYPE, "facility-id-format": DATA_TYPE,
    "tax-code-format": DATA_TYPE, "tax-code-suffix": DATA_TYPE, "charset-mismatch": DATA_TYPE,
    "message-too-large": DATA_TYPE, "control-character": DATA_TYPE, "field-too-long": DATA_TYPE,
    # the XML 130 checks before signing (never in an ACK: they judge a document, not a message)
    "too-long": DATA_TYPE, "sum-mismatch": DATA_TYPE, "unknown-element": SEGMENT_SEQUENCE, "unlinked-result": REQUIRED,
    # a code that names nothing in its table
    "invalid-code": TABLE_VALUE, "cccd-province": TABLE_VALUE, "sender-not-allowed": TABLE_VALUE,
    "unresolved-reference": TABLE_VALUE,
    # the segments themselves
    "segment-split": SEGMENT_SEQUENCE, "multiple-patients": SEGMENT_SEQUENCE, "hl7apy-parse": SEGMENT_SEQUENCE,
    "msh-invalid": SEGMENT_SEQUENCE, "batch-invalid": SEGMENT_SEQUENCE,
    "unsupported-message-type": UNSUPPORTED_TYPE, "unsupported-resource": UNSUPPORTED_TYPE,
    "unsupported-bundle": UNSUPPORTED_TYPE,
    "unsupported-event": ("201", "Unsupported event code"),
    "unsupported-processing-id": ("202", "Unsupported processing id"),
    "unsupported-version": ("203", "Unsupported version id"),
    "duplicate-control-id": ("205", "Duplicate key identifier"),
}
_LOCATION = re.compile(
    r"^(?P<segment>[A-Z][A-Z0-9]{2})(?:\[(?P<occurrence>[1-9]\d*)\])?(?:-(?P<field>\d+)(?:\.(?P<component>\d+))?)?")


def _error_location(location: str) -> str:
    """ERR-2 (segment^sequence^field^repetition^component) from `PID-3`, `OBX[10]-5` or `PID-3.1`."""
    match = _LOCATION.match(location)
    if not match:
        return ""
    parts = [match["segment"], match["occurrence"] or "1"]
    if match["field"]:
        parts += [match["field"], "1"]
        if match["component"]:
            parts.append(match["component"])
    return "^".join(parts)


# Versions whose ERR is the one field ERR-1 (ELD: segment^sequence^field^code&text&table), repeating in one
# ERR segment; from 2.5 ERR-2 is the location, ERR-3 the condition, ERR-4 the severity, one ERR per problem.
ELD_VERSIONS = frozenset({"2.1", "2.2", "2.3", "2.3.1", "2.4"})
# Versions whose MSH-9 has no third component (message structure came with 2.3.1).
TWO_PART_MSH9_VERSIONS = frozenset({"2.1", "2.2", "2.3"})
# MSH-15 values (HL7 table 0155) and whether a commit ACK is sent for an accepted / a refused message.
ACCEPT_ACK_TYPES: dict[str, tuple[bool, bool]] = {"AL": (True, True), "NE": (False, False),
                                                  "ER": (False, True), "SU": (True, False)}


def commit_ack_wanted(header: MessageHeader | None, code: str) -> bool:
    """Whether MSH-15 asks for this commit ACK: always in original mode and for AL or empty, never for NE,
    only refusals for ER, only acceptances for SU (HL7 v2.5 2.9.2, table 0155)."""
    if header is None or not header.enhanced_mode:
        return True
    accepted, refused = ACCEPT_ACK_TYPES.get(header.accept_ack_type, (True, True))
    return accepted if code in ("AA", "CA") else refused


def _err_segments(issues: tuple[Issue, ...], version: str, sep: str, enc: str) -> list[str]:
    """The ERR segments in the layout of the message's version."""
    if not issues:
        return []
    if version in ELD_VERSIONS:
        component, repetition, subcomponent = enc[0], enc[1], (enc + "&")[3]
        repeats = []
        for issue in issues:
            hl7_code, hl7_text = HL7_ERROR_CODES.get(issue.code, INTERNAL_ERROR)
            where = (_error_location(issue.location).split("^") + ["", "", ""])[:3]
            repeats.append(component.join([*where, subcomponent.join([hl7_code, hl7_text, "HL70357"])]))
        return [sep.join(["ERR", repetition.join(repeats)])]
    segments = []
    for issue in issues:
        hl7_code, hl7_text = HL7_ERROR_CODES.get(issue.code, INTERNAL_ERROR)
        severity = "W" if issue.severity == "warning" else "E"
        segments.append(sep.join([
            "ERR", "", _error_location(issue.location), f"{hl7_code}^{hl7_text}^HL70357", severity,
            f"{escape(issue.code, enc)}^{escape(issue.message, enc)}^HBGW", "", "", escape(
                f"{issue.location}: {issue.message}", enc),
        ]))
    return segments


def build_ack(header: MessageHeader | None, code: str, *, control_id: str, now: datetime, text: str = "",
              issues: tuple[Issue, ...] = ()) -> str:
    """An ACK whose MSA echoes the message's control id and whose ERR segments name each failing field.

    `control_id` (MSH-10) and `now` (MSH-7) are the ACK's own, given by the caller so that this stays pure;
    `header` is None for a message without a readable MSH. MSH-9 and ERR follow the message's version.
    """
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    enc = header.encoding_characters if header else DEFAULT_ENCODING
    sep = header.field_separator if header else "|"
    version = header.version if header and header.version else "2.5"
    event = header.message_type.split("^")[1] if header and "^" in header.message_type else ""
    msh9 = ("ACK^" + event if version in TWO_PART_MSH9_VERSIONS else f"ACK^{event}^ACK") if event else "ACK"
    msh = [
        "MSH", enc,
        header.receiving_application if header else "HBGW", header.receiving_facility if header else "",
        header.sending_application if header else "", header.sending_facility if header else "",
        stamp, "", msh9, control_id, header.processing_id if header else "P", version,
        "", "", "", "", "", header.charset if header else "",
    ]
    segments = [sep.join(msh).rstrip(sep),
                sep.join(["MSA", code, header.control_id if header else "", escape(text, enc)]).rstrip(sep),
                *_err_segments(issues, version, sep, enc)]
    return "\r".join(segments) + "\r"
