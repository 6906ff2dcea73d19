"""The QĐ 1551/2062 health-check form as XML (UPPER_SNAKE elements), unsigned, from a canonical document.

`build_form` never raises: a health check its form cannot carry gives issues naming the element
(`TREN_18/KHAM_THE_LUC/CHIEU_CAO`). The XML keeps every element of the form in order, empty when
unknown, and every CKS_* element empty for the signer; `slots` says who signs each one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from mappings.canonical import DocumentView, xml_datetime
from mappings.checkup import facts as reading
from mappings.checkup import forms
from mappings.model import Document, FacilityInfo, Issue
from mappings.vn import codes

SIGNATURE_SLOTS = frozenset(forms.SIGNATURE_ELEMENTS)
NUMBER = re.compile(r"[<>]?=?-?\d+(\.\d+)?")
TWELVE_DIGITS = re.compile(r"\d{12}")
BLOOD_PRESSURE = re.compile(r"\d{2,3}/\d{2,3}")


@dataclass(frozen=True, slots=True)
class FormOptions:
    """Site choices the form needs: the defaults for DOI_TUONG and NGUON_KINH_PHI when the HIS sends none."""

    default_doi_tuong: str = ""
    default_nguon_kinh_phi: str = ""


@dataclass(frozen=True, slots=True)
class SignatureSlot:
    """One CKS_* element, in document order: who signs it (a practitioner licence; "" for none or the facility)."""

    element: str
    group: str
    practitioner: str


@dataclass(frozen=True, slots=True)
class CheckupForm:
    """An unsigned form, or the issues that stop the health check becoming one (then `xml` is empty)."""

    form: str
    xml: bytes
    slots: tuple[SignatureSlot, ...]
    issues: tuple[Issue, ...]


def value_issues(form: forms.Form, values: dict[str, str]) -> list[Issue]:
    """Values that do not fit their element: size, number type, code tables, dates, ICD-10 and facility codes."""
    issues: list[Issue] = []
    tables = forms.codes()["codes"]
    for name, value in values.items():
        spec = form.field(name)
        if spec is None or not value or name in SIGNATURE_SLOTS:
            continue
        where = f"{form.root}/{form.group_of(name)}/{name}"
        if spec.size is not None and len(value) > spec.size:
            issues.append(Issue(where, "invalid", f"{name} holds at most {spec.size} characters"))
        if spec.kind == "N" and not NUMBER.fullmatch(value):
            issues.append(Issue(where, "invalid-number", f"{name} must be a number"))
        if name in tables and value not in tables[name]:
            issues.append(Issue(where, "invalid-code", f"{name} is not one of its QĐ 1551 codes"))
        if name in ("NGAY_SINH", "NGAY_VAO", "NGAY_KET_LUAN") and not TWELVE_DIGITS.fullmatch(value):
            issues.append(Issue(where, "invalid-date", f"{name} must be yyyyMMddHHmm (12 digits)"))
        if name == "HUYET_AP" and not BLOOD_PRESSURE.fullmatch(value):
            issues.append(Issue(where, "invalid", "HUYET_AP must be systolic/diastolic, e.g. 120/80"))
        if name == "KET_LUAN_BENH" and not all(codes.is_icd10(code) for code in value.split(";")):
            issues.append(Issue(where, "invalid-code", "KET_LUAN_BENH must be ICD-10 codes separated by ';'"))
    return issues


def _facility_issues(form: forms.Form, values: dict[str, str]) -> list[Issue]:
    issues = []
    if len(values.get("MA_CSKCB", "")) != 5:
        issues.append(Issue(f"{form.root}/{form.group_of('MA_CSKCB')}/MA_CSKCB", "invalid",
                            "MA_CSKCB must be the 5-character facility code"))
    if not re.fullmatch(r"\d{13}", values.get("MA_GTIN_CSKCB", "")):
        issues.append(Issue(f"{form.root}/{form.group_of('MA_GTIN_CSKCB')}/MA_GTIN_CSKCB", "invalid",
                            "MA_GTIN_CSKCB must be the 13-digit facility id"))
    return issues


def _xml(form: forms.Form, values: dict[str, str], labs: list[dict[str, str]],
         signers: dict[str, str], concluder: str) -> tuple[bytes, tuple[SignatureSlot, ...]]:
    root = etree.Element(form.root)
    slots: list[SignatureSlot] = []
    for group in form.groups:
        rows = labs if group.repeat else [values]
        for row in rows:
            node = etree.SubElement(root, group.element)
            for spec in group.fields:
                element = etree.SubElement(node, spec.name)
                if spec.name in SIGNATURE_SLOTS:
                    who = {"CKS_NGUOI_KHAM": signers.get(group.element, ""), "CKS_NGUOI_KET_LUAN": concluder}
                    slots.append(SignatureSlot(spec.name, group.element, who.get(spec.name, "")))
                elif row.get(spec.name):
                    element.text = row[spec.name]
    return etree.tostring(root, xml_declaration=True, encoding="utf-8"), tuple(slots)


def build_form(document: Document, facility: FacilityInfo, options: FormOptions) -> CheckupForm:
    """The health check's form (chosen by age at the exam date, or the driver's form), or issues naming fields."""
    if document.kind != "health_check":
        return CheckupForm("", b"", (), (Issue("kind", "invalid", "only health-check documents have a form"),))
    view = DocumentView(document)
    found = reading.read(view.resources, str(document.bundle.get("timestamp", "")))
    name = found.form()
    form = forms.forms()[name]
    values = found.values
    values.update({"MA_LK": document.document_id, "MA_CSKCB": facility.bhxh_code,
                   "MA_GTIN_CSKCB": facility.moh_facility_id})
    values.setdefault("DOI_TUONG", options.default_doi_tuong)
    values.setdefault("NGUON_KINH_PHI", options.default_nguon_kinh_phi)
    values.setdefault("NGAY_KET_LUAN", xml_datetime(str(document.bundle.get("timestamp", "")) or None))
    reading.derive(found, name)
    labs = [] if name == forms.DRIVER_FORM else found.labs
    if name == forms.DRIVER_FORM and found.labs and not values.get("KET_QUA_XN_KHAC"):
        values["KET_QUA_XN_KHAC"] = "; ".join(f"{row['MO_TA'] or row['MA_CHI_SO']}: {row['GIA_TRI']} "
                                              f"{row['DON_VI_DO']}".strip() for row in found.labs)
    issues = [Issue(f"{name}/{form.group_of(element)}/{element}", "required", f"the {name} form requires {element}")
              for element in reading.missing(name, values, sender_only=False) if element != "CKS_BENH_VIEN"]
    issues += _facility_issues(form, values) + value_issues(form, values)
    for row in labs:
        issues += value_issues(form, row)
    if issues:
        return CheckupForm(name, b"", (), tuple(issues))
    signers: dict[str, str] = {}
    for element, who in found.performers.items():
        signers.setdefault(form.group_of(element), who)
    xml, slots = _xml(form, values, labs, signers, found.concluder)
    return CheckupForm(name, xml, slots, ())
