"""What every builder needs to know about the message being mapped."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mappings.fhir_common import codeable
from mappings.hl7v2.er7 import Er7Message, Segment, component, repetitions, text
from mappings.vn import systems


@dataclass(frozen=True, slots=True)
class Context:
    """The parsed message plus the ids the document will use for its core resources."""

    msg: Er7Message
    document_id: str
    facility_id: str
    facility_name: str
    event_time: str
    patient_id: str
    organization_id: str
    encounter_id: str

    def c(self, segment: Segment | None, field: int, comp: int = 1) -> str:
        """Component `comp` of the first repetition of `field`, unescaped; "" when absent."""
        if segment is None:
            return ""
        reps = repetitions(segment.field(field), self.msg.delimiters)
        return component(reps[0], comp, self.msg.delimiters) if reps else ""

    def t(self, segment: Segment | None, field: int, comp: int = 1) -> str:
        """Like c(), for free text: a literal '&' (often left unescaped by senders) is kept, not cut."""
        if segment is None:
            return ""
        reps = repetitions(segment.field(field), self.msg.delimiters)
        return text(reps[0], comp, self.msg.delimiters) if reps else ""

    def rt(self, raw: str, comp: int) -> str:
        """Like rc(), for free text."""
        return text(raw, comp, self.msg.delimiters)

    def coded(self, segment: Segment, field: int) -> dict[str, Any]:
        """A CWE/CE field as a CodeableConcept; local codes (L, 99xxx, none) get the facility's own system."""
        code, text, system = self.c(segment, field, 1), self.t(segment, field, 2), self.c(segment, field, 3)
        if not code:
            return {"text": text}
        local = system.upper() in ("", "L", "LOCAL") or system.startswith("99")
        return codeable(systems.local("code", self.facility_id) if local else systems.coding_system(system), code, text)

    def reps(self, segment: Segment, field: int) -> list[str]:
        """The raw repetitions of a field."""
        return repetitions(segment.field(field), self.msg.delimiters)

    def rc(self, raw: str, comp: int) -> str:
        """Component `comp` of one raw repetition, unescaped."""
        return component(raw, comp, self.msg.delimiters)
