"""Plausible ranges of vital signs (data in vn/data/vital_ranges.json), shared by the HL7 v2 and FHIR rules."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def ranges() -> dict[str, dict[str, Any]]:
    """The vital-sign ranges by LOINC code."""
    text = resources.files("mappings.vn").joinpath("data", "vital_ranges.json").read_text(encoding="utf-8")
    table: dict[str, dict[str, Any]] = json.loads(text)["vitals"]
    return table


@cache
def vital_codes() -> frozenset[str]:
    """The LOINC codes that have a range, for a quick test before any arithmetic."""
    return frozenset(ranges())


def implausible(loinc: str, value: float, unit: str) -> str | None:
    """Why a vital-sign value cannot be real ("body weight is outside ..."), never echoing it; None when fine.

    Codes not in the table and units it does not list are not judged; no unit means the table's unit.
    """
    entry = ranges().get(loinc)
    if entry is None:
        return None
    factor = entry["units"].get(unit.strip().lower()) if unit.strip() else [1, 0]
    if factor is None:
        return None
    number = value * factor[0] + factor[1]
    low, high = entry["low"], entry["high"]
    if number > high or number < low or (entry["above_low"] and number == low):
        return f"{entry['name']} is outside the plausible range {low}-{high} {entry['unit']}"
    return None
