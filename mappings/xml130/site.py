"""The site mappings a hospital fills before go-live, given by the gateway as a plain dict (settings).

Sections (every key optional):
- `wards`: HIS ward or department code (PV1-3.1, FT1-13, Encounter.location) -> MA_KHOA K-code (QĐ 1804 PL02);
  the key "" is the department of a visit that names none (a clinic with one department).
- `items`: HIS charge or drug code (FT1-7, RXE-2, RXD-2, ChargeItem.code, Medication*.medicationCodeableConcept)
  -> `{"code": national code, "group": MA_NHOM, "name", "unit", "price", "price_bh", "scope", "ratio", and for
  drugs "strength", "route", "form", "registration", "tender"}` (all strings; `price` is the hospital price and
  the drug's tender price, used when the message carries none).
- `lab_tests`: LOINC or local result code (OBX-3, Observation.code) -> `{"service": national MA_DICH_VU of the
  test, "indicator": QĐ 1227 MA_CHI_SO}`.
- `dispositions`: a discharge disposition (PV1-36, dischargeDisposition) that is neither HL7 0112 nor FHIR
  discharge-disposition (a site's own code) -> MA_LOAI_RV 1-5.
- `patient_categories`: financial class (PV1-20, the Encounter patient-category extension) -> MA_DOITUONG_KCB;
  the key "" is the category of a visit that names none. A value already shaped like a national code is used as is.

A code the site has not mapped is not an error of the message: it is collected in `missing` (as
`ward:NOI-TM`, `item:KB01`, `lab:2345-7`, `patient-category:BH`) and the document waits until it is mapped.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mappings.vn import codes


class SiteCodes:
    """Look-ups in the site mappings that remember every code they could not find."""

    def __init__(self, mapping: Mapping[str, Any] | None) -> None:
        self._mapping: Mapping[str, Any] = mapping or {}
        self.missing: set[str] = set()

    def _section(self, name: str) -> Mapping[str, Any]:
        section = self._mapping.get(name)
        return section if isinstance(section, Mapping) else {}

    def ward(self, code: str) -> str:
        """The K-code of a HIS ward; "" (and noted as missing) when unmapped, "" alone when none is named."""
        found = self._section("wards").get(code)
        if not code and not found:
            return ""  # no ward named and no default (""): an incomplete episode (MA_KHOA required), no site gap
        if isinstance(found, str) and found:
            return found
        self.missing.add(f"ward:{code}")
        return ""

    def item(self, code: str) -> dict[str, str]:
        """The national entry of a charge or drug code; {} (and noted as missing) when unmapped."""
        found = self._section("items").get(code)
        if isinstance(found, Mapping) and found.get("code") and found.get("group"):
            return {str(key): str(value) for key, value in found.items()}
        self.missing.add(f"item:{code}")
        return {}

    def lab(self, code: str) -> dict[str, str]:
        """The national service and QĐ 1227 indicator codes of a result code; {} when unmapped."""
        found = self._section("lab_tests").get(code)
        if isinstance(found, Mapping) and found.get("service") and found.get("indicator"):
            return {str(key): str(value) for key, value in found.items()}
        self.missing.add(f"lab:{code}")
        return {}

    def disposition(self, code: str) -> str:
        """MA_LOAI_RV (1-5) for a discharge disposition the national table does not know (PV1-36 is the site's)."""
        found = self._section("dispositions").get(code)
        if isinstance(found, str) and found in ("1", "2", "3", "4", "5"):
            return found
        self.missing.add(f"disposition:{code}")
        return ""

    def patient_category(self, value: str) -> str:
        """MA_DOITUONG_KCB for a financial class; a national-shaped value passes through."""
        found = self._section("patient_categories").get(value)
        if isinstance(found, str) and codes.is_patient_category(found):
            return found
        if value and codes.is_patient_category(value):
            return value
        self.missing.add(f"patient-category:{value}")
        return ""
