"""What a health check says, as QĐ 1551/2062 element values: read from FHIR resources, then derived.

The same facts serve the FHIR intake (is anything the form needs missing?) and the XML form builder;
the HL7 screen reads the same elements from ER7 text (mappings/hl7v2/checkup.py) and shares `derive`
and `missing`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mappings.canonical import (
    address_text,
    concept_text,
    ethnicity_code,
    first_coding,
    icd10_code,
    licence,
    name_text,
    province_code,
    sex_code,
    xml_datetime,
)
from mappings.checkup import forms
from mappings.vn import codes, systems

CONCLUSION_TEXT = "KET_LUAN_TEXT"  # the free-text verdict, before it is placed in the form's own element
SYSTOLIC, DIASTOLIC = "HA_TAM_THU", "HA_TAM_TRUONG"
ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV", "5": "V"}
# Derived elements and what they come from: when a source is missing, only the source is reported.
DERIVED_FROM = {"TUOI": ("NGAY_SINH", "NGAY_VAO"), "CHI_SO_BMI": ("CHIEU_CAO", "CAN_NANG"),
                "HUYET_AP": (SYSTOLIC, DIASTOLIC), "KET_LUAN_LOAI_SUC_KHOE": ("PHAN_LOAI_SK",)}


@dataclass(slots=True)
class Facts:
    """Element values of one health check, lab rows, and who examined or concluded (licence numbers)."""

    values: dict[str, str] = field(default_factory=dict)
    labs: list[dict[str, str]] = field(default_factory=list)
    performers: dict[str, str] = field(default_factory=dict)  # element -> licence of who recorded it
    concluder: str = ""
    driver: bool = False

    def day(self, element: str) -> date | None:
        """A yyyyMMdd... element as a date, None when absent or not a real day."""
        text = self.values.get(element, "")[:8]
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
        except ValueError:
            return None

    def form(self) -> str:
        """The form this health check needs: driver's form, else by age at the exam date (adult if unknown)."""
        birth, exam = self.day("NGAY_SINH"), self.day("NGAY_VAO")
        if self.driver or birth is None or exam is None:
            return forms.form_for(date(1900, 1, 1), date(2000, 1, 1), self.driver)
        return forms.form_for(birth, exam, False)


def number_text(value: Any) -> str:
    """A JSON number as the form writes it: 158, 52.5 (no exponent, no trailing zeros)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(value, "f").rstrip("0").rstrip(".")
    return str(value)


def _value(part: dict[str, Any]) -> str:
    if "valueQuantity" in part:
        quantity = part["valueQuantity"]
        return f"{quantity.get('comparator', '')}{number_text(quantity.get('value', ''))}"
    if "valueCodeableConcept" in part:
        coding = first_coding(part["valueCodeableConcept"])
        return str(coding.get("code") or concept_text(part["valueCodeableConcept"]))
    for name in ("valueString", "valueInteger", "valueBoolean", "valueDateTime"):
        if name in part:
            return number_text(part[name])
    return ""


def _codes(concept: dict[str, Any] | None) -> list[str]:
    return [str(c.get("code", "")) for c in (concept or {}).get("coding", []) if c.get("code")]


def _performer(resource: dict[str, Any]) -> str:
    return licence((resource.get("performer") or [None])[0])[0]


def _put(facts: Facts, elements: tuple[str, ...], value: str, who: str) -> None:
    for element, part in zip(elements, forms.split_values(value, len(elements)), strict=False):
        if part and not facts.values.get(element):
            facts.values[element] = part
            if who:
                facts.performers[element] = who


def _observation(facts: Facts, observation: dict[str, Any], order: str) -> None:
    who = _performer(observation)
    parts = [observation, *[c for c in observation.get("component") or [] if isinstance(c, dict)]]
    for part in parts:
        value = _value(part)
        codes_here = _codes(part.get("code"))
        elements = next((found for code in codes_here if (found := forms.elements_of_code(code))), ())
        if elements == ("PHAN_LOAI_SK",):
            value = str(codes.health_class(value) or "")
        if elements:
            _put(facts, elements, value, who)
        elif value and part is observation and codes_here:
            unit = str((observation.get("valueQuantity") or {}).get("unit") or "")
            facts.labs.append({"MA_DICH_VU": order, "MA_CHI_SO": codes_here[0], "GIA_TRI": value, "DON_VI_DO": unit,
                               "MO_TA": concept_text(observation.get("code")),
                               "KET_LUAN": concept_text((observation.get("interpretation") or [None])[0])})


def _health_class(report: dict[str, Any]) -> str:
    for concept in report.get("conclusionCode", []):
        coding = first_coding(concept)
        if coding.get("system") == systems.HEALTH_CLASS:
            return str(coding.get("code", ""))
    return ""


def _conditions(resources: list[dict[str, Any]]) -> str:
    found = [icd10_code(r) for r in resources if r["resourceType"] == "Condition"]
    return ";".join(dict.fromkeys(code for code in found if code))


def read(resources: list[dict[str, Any]], timestamp: str = "") -> Facts:
    """The elements a health check's FHIR resources give (without the gateway-filled ones), not yet derived."""
    facts = Facts()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    patient = (by_type.get("Patient") or [{}])[0]
    encounter = (by_type.get("Encounter") or [{}])[0]
    reports = by_type.get("DiagnosticReport") or []
    report = reports[0] if reports else {}
    order_codes = [code for r in [*reports, *by_type.get("Composition", [])]
                   for code in _codes(r.get("code") or r.get("type"))]
    facts.driver = any(forms.is_driver_order(code) for code in order_codes)
    cccd = next((str(i.get("value", "")) for i in patient.get("identifier", [])
                 if i.get("system") == systems.CCCD and i.get("use") != "old"), "")
    phone = str((patient.get("telecom") or [{}])[0].get("value", ""))
    exam = (encounter.get("period") or {}).get("start") or report.get("effectiveDateTime") or next(
        (str(o["effectiveDateTime"]) for o in by_type.get("Observation", []) if o.get("effectiveDateTime")), "")
    given = {"HO_TEN": name_text(patient) if patient.get("name") else "", "GIOI_TINH": sex_code(patient)
             if patient.get("gender") else "", "NGAY_SINH": xml_datetime(patient.get("birthDate")),
             "MA_DAN_TOC": ethnicity_code(patient), "SO_CCCD": cccd, "DIA_CHI": address_text(patient),
             "MATINH_CU_TRU": province_code(patient), "DIEN_THOAI": phone, "NGAY_VAO": xml_datetime(exam),
             "PHAN_LOAI_SK": _health_class(report), CONCLUSION_TEXT: str(report.get("conclusion", "")),
             "KET_LUAN_BENH": _conditions(resources),
             "NGAY_KET_LUAN": xml_datetime(report.get("issued") or timestamp or None)}
    facts.values = {k: v for k, v in given.items() if v}
    order = _codes(report.get("code"))[0] if report else ""
    for observation in by_type.get("Observation", []):
        _observation(facts, observation, order)
    facts.concluder = licence((report.get("resultsInterpreter") or [None])[0])[0] or \
        licence(((encounter.get("participant") or [{}])[0]).get("individual"))[0]
    return facts


def _bmi(height: str, weight: str) -> str:
    try:
        metres, kilograms = float(height) / 100, float(weight)
    except ValueError:
        return ""
    return f"{kilograms / (metres * metres):.1f}" if metres > 0 and kilograms > 0 else ""


def derive(facts: Facts, form: str) -> None:
    """Fill what the form computes: TUOI, CHI_SO_BMI, HUYET_AP "sys/dia", the verdict text."""
    values = facts.values
    birth, exam = facts.day("NGAY_SINH"), facts.day("NGAY_VAO")
    if birth and exam and not values.get("TUOI"):
        values["TUOI"] = str(forms.age_in_years(birth, exam))
    if values.get("CHIEU_CAO") and values.get("CAN_NANG"):
        values["CHI_SO_BMI"] = _bmi(values["CHIEU_CAO"], values["CAN_NANG"]) or values.get("CHI_SO_BMI", "")
    if values.get(SYSTOLIC) and values.get(DIASTOLIC) and not values.get("HUYET_AP"):
        values["HUYET_AP"] = f"{values[SYSTOLIC]}/{values[DIASTOLIC]}"
    text = values.get(CONCLUSION_TEXT, "")
    grade = values.get("PHAN_LOAI_SK", "")
    if not values.get("KET_LUAN_LOAI_SUC_KHOE") and (text or grade in ROMAN):
        values["KET_LUAN_LOAI_SUC_KHOE"] = f"Loại {ROMAN[grade]}" if grade in ROMAN else text
    target = forms.codes()["conclusion_text"].get(form, "")
    if text and target and not values.get(target):
        values[target] = text


def missing(form: str, values: dict[str, str], sender_only: bool) -> list[str]:
    """Required elements of the form that have no value; sender_only leaves out what the gateway fills."""
    required = forms.forms()[form].required
    absent = [name for name in required if not values.get(name)
              and not (sender_only and name in forms.GATEWAY_FILLED)]
    return [name for name in absent if not any(source in absent for source in DERIVED_FROM.get(name, ()))]
