"""The QĐ 1551/2062 health-check forms and input codes, kept as data in forms.json and codes.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

DRIVER_FORM = "LAI_XE"
LOCAL_PREFIX = "HBGW-KSK-"  # codes.json local_prefix: HBGW-KSK-<ELEMENT> fills <ELEMENT>
# Filled by the gateway itself (facility settings, site defaults, the facility signature), never by the sender.
GATEWAY_FILLED = frozenset({"MA_LK", "MA_CSKCB", "MA_GTIN_CSKCB", "DOI_TUONG", "NGUON_KINH_PHI", "CKS_BENH_VIEN"})
SIGNATURE_ELEMENTS = ("CKS_NGUOI_KHAM", "CKS_NGUOI_KET_LUAN", "CKS_BENH_VIEN")


@dataclass(frozen=True, slots=True)
class FormField:
    """One element of a form: name, type (C string, N number), maximum size (None: no limit), PL01 row."""

    name: str
    kind: str
    size: int | None
    row: str


@dataclass(frozen=True, slots=True)
class Group:
    """One group element of a form with its fields in order; `repeat` groups occur once per row (lab results)."""

    element: str
    fields: tuple[FormField, ...]
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    """One health-check form: XML root, public source, required elements and groups in element order."""

    root: str
    title: str
    source: str
    required: tuple[str, ...]
    groups: tuple[Group, ...]

    def field(self, name: str) -> FormField | None:
        """The element called `name`, None when this form has no such element."""
        return _fields_of(self).get(name)

    def group_of(self, name: str) -> str:
        """The group element holding `name` ("" when the form has no such element)."""
        return next((group.element for group in self.groups if any(f.name == name for f in group.fields)), "")


@cache
def _fields_of(form: Form) -> dict[str, FormField]:
    return {f.name: f for group in form.groups for f in group.fields}


@cache
def _data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("mappings.checkup").joinpath(name).read_text(encoding="utf-8"))
    return data


def _group(raw: list[Any]) -> Group:
    fields = tuple(FormField(str(n), str(k), s if s is None else int(s), str(r)) for n, k, s, r in raw[1])
    return Group(str(raw[0]), fields, len(raw) > 2 and raw[2] == "repeat")


@cache
def forms() -> dict[str, Form]:
    """Every form by its root element: DUOI_6, DUOI_18, TREN_18 and LAI_XE."""
    return {root: Form(root, entry["title"], entry["source"], tuple(entry["required"]),
                       tuple(_group(raw) for raw in entry["groups"]))
            for root, entry in _data("forms.json")["forms"].items()}


def codes() -> dict[str, Any]:
    """The input code table (codes.json): LOINC and local codes to form elements, order codes, value tables."""
    return _data("codes.json")


def age_in_years(birth: date, on: date) -> int:
    """Full years of age on a day (a birthday counts from that day)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


@cache
def _age_groups() -> tuple[tuple[str, int, int], ...]:
    groups = _data("forms.json")["age_groups"]
    return tuple((str(root), int(band[0]), int(band[1])) for root, band in groups.items() if not root.startswith("_"))


def form_for(birth: date, exam: date, driver: bool) -> str:
    """The form by age at the exam date (QĐ 2062 groups), or the driver's form for a driving-licence check."""
    if driver:
        return DRIVER_FORM
    age = age_in_years(birth, exam)
    return next((root for root, low, high in _age_groups() if low <= age < high), "TREN_18")


def matches(code: str, patterns: list[str]) -> bool:
    """Whether a code equals one of the patterns, or starts with one that ends in '*'."""
    upper = code.upper()
    return any(upper.startswith(p[:-1]) if p.endswith("*") else upper == p for p in patterns)


def is_driver_order(code: str) -> bool:
    """An order or document type that asks for the driver's form."""
    return matches(code, codes()["driver_orders"]["codes"])


def is_health_check_code(code: str) -> bool:
    """An order, report, Composition or Encounter type that makes the input a health check."""
    return bool(code) and matches(code, codes()["health_check_orders"]["codes"])


@cache
def _code_elements() -> dict[str, tuple[str, ...]]:
    table = codes()
    return {code.upper(): tuple(elements) for part in ("loinc", "local") for code, elements in table[part].items()}


def elements_of_code(code: str) -> tuple[str, ...]:
    """The form elements a result code fills: LOINC, the gateway's KSK-* codes, or HBGW-KSK-<ELEMENT>."""
    upper = code.strip().upper()
    if upper.startswith(LOCAL_PREFIX):
        return (upper[len(LOCAL_PREFIX):],)
    return _code_elements().get(upper, ())


def split_values(value: str, count: int) -> list[str]:
    """One result carrying several elements (KSK-MAT "10/10; 9/10"): its parts, or the value for the first."""
    if count <= 1:
        return [value]
    for separator in codes()["split"]["separators"]:
        if separator in value:
            return [part.strip() for part in value.split(separator)][:count]
    return [value]
