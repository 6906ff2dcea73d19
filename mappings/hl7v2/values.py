"""Numbers in OBX-5 (NM and SN), read the same way by the screen and by the mapping."""
from __future__ import annotations

import re
from dataclasses import dataclass

from mappings.hl7v2.er7 import Delimiters, component

# At most 15 digits each side of the point (HL7 NM is 16 characters long), so int() and float() stay exact
# and bounded: a 5000-digit "number" is refused, not turned into an exception or an infinity.
DIGITS = r"[+-]?(?:\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})"
NUMBER = re.compile(DIGITS, re.ASCII)
NM_WITH_COMPARATOR = re.compile(rf"(<=|>=|<|>)?\s*({DIGITS})", re.ASCII)
SN_COMPARATORS = {"": "", "=": "", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
NUMERIC_TYPES = frozenset({"NM", "SN"})


@dataclass(frozen=True, slots=True)
class Number:
    """A result number as written (`text`), with the FHIR Quantity comparator ("" for an exact value)."""

    comparator: str
    text: str

    @property
    def value(self) -> float | int:
        return float(self.text) if "." in self.text else int(self.text)


def read_number(kind: str, raw: str, d: Delimiters) -> Number | None:
    """The number of an NM or SN OBX-5 (first repetition); None when it is not one the mapping can send.

    NM: a number, optionally after a comparator (`<5.2`, `>=100`). SN: comparator^number, or a plain
    number in the first component. SN ranges and ratios (`2^-^5`, `^1^:^128`) have no FHIR Quantity form.
    """
    first = component(raw, 1, d)
    if kind == "NM":
        match = NM_WITH_COMPARATOR.fullmatch(first)
        return Number(match[1] or "", match[2]) if match else None
    if NUMBER.fullmatch(first) and not component(raw, 2, d):
        return Number("", first)
    number, rest = component(raw, 2, d), component(raw, 3, d) + component(raw, 4, d)
    if first in SN_COMPARATORS and NUMBER.fullmatch(number) and not rest:
        return Number(SN_COMPARATORS[first], number)
    return None


def quantity_number(kind: str, raw: str, unit: str, d: Delimiters) -> Number | None:
    """The number the mapping sends as a valueQuantity: an NM/SN value, or a plain number with a unit."""
    if kind in NUMERIC_TYPES:
        return read_number(kind, raw, d)
    first = component(raw, 1, d)
    return Number("", first) if unit and NUMBER.fullmatch(first) else None
