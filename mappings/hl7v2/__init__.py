"""HL7 v2 input: the fast screen for the ACK path and the full hl7apy mapping."""
from mappings.hl7v2.mapper import map_message
from mappings.hl7v2.screen import screen

__all__ = ["map_message", "screen"]
