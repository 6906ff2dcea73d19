"""Structural checks with hl7apy, reported as warnings: screen has already accepted the message (AA).

hl7apy is asked what a full parse would decide (header, version, encoding characters, which segments it
knows) without building every field: its full tolerant parse cost 10-20 ms a message, ten times the rest
of the mapping, and only ever produced these warnings. Values are then read from the exact ER7 text
(er7.py), not from hl7apy's re-encoding: hl7apy's `to_er7()` re-escapes sequences it does not know
(`\\.br\\` becomes `\\E\\.br\\E\\`), moves the withdrawn XTN-1 in v2.6+, and loses the names of
withdrawn fields in v2.8, any of which would garble a record.
"""
from __future__ import annotations

from functools import lru_cache

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message, Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import get_message_info

from mappings.hl7v2.er7 import Er7Message
from mappings.hl7v2.events import FALLBACK_VERSION, SUPPORTED_VERSIONS
from mappings.model import Issue


def _normalised(msg: Er7Message) -> list[str]:
    """The segments as hl7apy would be given them: MSH-2 dropped, an unsupported version read as 2.5."""
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
    return lines


@lru_cache(maxsize=256)
def _header_accepted(encoding_characters: tuple[tuple[str, str], ...], version: str | None) -> str:
    """Why hl7apy refuses a message with these encoding characters and version ('' when it accepts it);
    building its Message costs a millisecond, so each combination is asked once."""
    try:
        Message(version=version, validation_level=VALIDATION_LEVEL.TOLERANT, encoding_chars=dict(encoding_characters))
    except (HL7apyException, ValueError, IndexError, KeyError, AttributeError) as exc:
        return type(exc).__name__
    return ""


@lru_cache(maxsize=1024)
def _segment_known(name: str, version: str) -> bool:
    """Whether hl7apy's tolerant parse accepts a segment of this name (its own definitions, or a Z segment)."""
    try:
        Segment(name, version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    except (HL7apyException, ValueError, IndexError, KeyError, AttributeError):  # IndexError: QRD in 2.7+
        return False
    return True


def structure_issues(msg: Er7Message) -> list[Issue]:
    """Ask hl7apy (tolerant; unsupported versions read as 2.5) about the structure and warn where it disagrees.

    Only warnings: what makes a record invalid is decided by rules.check, the same for screen and map,
    so a message acknowledged with AA is never refused later for a reason screen could not see.
    """
    lines = _normalised(msg)
    try:
        encoding_characters, _, version = get_message_info(lines[0])
        refused = _header_accepted(tuple(sorted(encoding_characters.items())), version)
    except (HL7apyException, ValueError, IndexError, KeyError, AttributeError) as exc:
        refused = type(exc).__name__
    if refused:
        return [Issue("MSH", "hl7apy-parse", f"hl7apy cannot parse the message ({refused}); "
                                             "mapped from the raw segments", "warning")]
    names = [line.strip()[:3] for line in lines]
    if names != [segment.name for segment in msg.segments] or not all(_segment_known(n, version) for n in names):
        return [Issue("MSH", "hl7apy-parse", "hl7apy did not recognise every segment", "warning")]
    return []
