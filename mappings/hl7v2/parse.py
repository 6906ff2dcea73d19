"""Structural parsing with hl7apy, reported as warnings: screen has already accepted the message (AA).

Values are then read from the exact ER7 text (er7.py), not from hl7apy's re-encoding: hl7apy's
`to_er7()` re-escapes sequences it does not know (`\\.br\\` becomes `\\E\\.br\\E\\`), moves the withdrawn
XTN-1 in v2.6+, and loses the names of withdrawn fields in v2.8, any of which would garble a record.
"""
from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from mappings.hl7v2.er7 import Er7Message
from mappings.hl7v2.events import FALLBACK_VERSION, SUPPORTED_VERSIONS
from mappings.model import Issue


def _normalised(msg: Er7Message) -> str:
    d = msg.delimiters
    lines = []
    for segment in msg.segments:
        fields = list(segment.fields)
        if segment.name == "MSH":
            fields += [""] * (13 - len(fields))
            if fields[12].split(d.component)[0] not in SUPPORTED_VERSIONS:
                fields[12] = FALLBACK_VERSION
            fields.pop(1)
        lines.append(d.field.join(fields))
    return "\r".join(lines)


def structure_issues(msg: Er7Message) -> list[Issue]:
    """Parse with hl7apy (tolerant; unsupported versions read as 2.5) and warn where it disagrees.

    Only warnings: what makes a record invalid is decided by rules.check, the same for screen and map,
    so a message acknowledged with AA is never refused later for a reason screen could not see.
    """
    try:
        parsed = parse_message(_normalised(msg), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except (HL7apyException, ValueError, IndexError, KeyError, AttributeError) as exc:
        return [Issue("MSH", "hl7apy-parse", f"hl7apy cannot parse the message ({type(exc).__name__}); "
                                             "mapped from the raw segments", "warning")]
    names = [segment.name for segment in parsed.children]
    if names != [segment.name for segment in msg.segments]:
        return [Issue("MSH", "hl7apy-parse", "hl7apy did not recognise every segment", "warning")]
    return []
