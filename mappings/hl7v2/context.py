"""What every builder needs to know about the message being mapped."""
from __future__ import annotations

from dataclasses import dataclass

from mappings.hl7v2.er7 import Er7Message, Segment, component, repetitions


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

    def reps(self, segment: Segment, field: int) -> list[str]:
        """The raw repetitions of a field."""
        return repetitions(segment.field(field), self.msg.delimiters)

    def rc(self, raw: str, comp: int) -> str:
        """Component `comp` of one raw repetition, unescaped."""
        return component(raw, comp, self.msg.delimiters)
