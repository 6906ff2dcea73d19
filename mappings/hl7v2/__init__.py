"""HL7 v2: the wire (framing, header, ACK), the fast screen for the ACK path and the full hl7apy mapping.

The mapping is imported on first use, so that the listener's wire modules and the metrics' list of message
types do not load hl7apy.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mappings.hl7v2.screen import screen

if TYPE_CHECKING:
    from mappings.hl7v2.mapper import map_message

__all__ = ["map_message", "screen"]


def __getattr__(name: str) -> Any:
    """`map_message`, imported when first asked for (hl7apy takes a good part of a second to load)."""
    if name != "map_message":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return import_module("mappings.hl7v2.mapper").map_message
