"""The fast acknowledgement-path check: pure string splitting, no hl7apy."""
from __future__ import annotations

from mappings.hl7v2 import er7, limits, rules
from mappings.model import Issue


def screen(message: str) -> list[Issue]:
    """Decide before the MLLP ACK whether a message can become a valid record, in well under a millisecond."""
    msg = er7.read(message)
    if msg is None:
        return [Issue("MSH", "required", "message does not start with a valid MSH segment")]
    return limits.field_issues(msg) + rules.check(msg)
