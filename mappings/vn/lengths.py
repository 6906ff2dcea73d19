"""The national formats' field lengths (data/field_lengths.json), by the HL7 v2 field or FHIR element filling each."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _data() -> dict[str, Any]:
    text = resources.files("mappings.vn").joinpath("data", "field_lengths.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def hl7_field_lengths() -> dict[str, int]:
    """Longest value per HL7 v2 field (`PID-5`: 255), so the screen refuses what the portal would."""
    national = _data()["national"]
    return {field: int(national[target]) for field, target in _data()["hl7v2"].items()}


def fhir_element_lengths() -> dict[str, int]:
    """Longest text per FHIR element (`Patient.name`: 255), so the FHIR API refuses what the portal would."""
    national = _data()["national"]
    return {element: int(national[target]) for element, target in _data()["fhir"].items()}
