"""Vietnamese code tables, kept as data files in mappings/vn/data and loaded once."""
from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

ICD10_PATTERN = re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Z]{1,2})?")


@cache
def _table(name: str) -> dict[str, Any]:
    text = resources.files("mappings.vn").joinpath("data", f"{name}.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def cccd_province(code: str) -> dict[str, str] | None:
    """The pre-2025 province a CCCD number was issued for; CCCD numbers keep the 63-province codes."""
    entry: dict[str, str] | None = _table("cccd_provinces")["codes"].get(code)
    return entry


def cccd_provinces() -> dict[str, dict[str, str]]:
    """All 63 former provinces by CCCD code, each with its name and the current province it joined."""
    return dict(_table("cccd_provinces")["codes"])


def province_2025(code: str) -> str | None:
    """Name of one of the 34 provinces in force for addresses since 2025-07-01."""
    name: str | None = _table("provinces_2025")["provinces"].get(code)
    return name


def province_2025_codes() -> dict[str, str]:
    """All 34 current provinces, code to name, for address validation and display."""
    return dict(_table("provinces_2025")["provinces"])


def nationality_xml130(country: str) -> str:
    """XML 130 MA_QUOCTICH for an ISO 3166 country code; "" when the BHXH code is not in the table."""
    code: str = _table("nationality")["xml130"].get(country.upper(), "")
    return code


def ethnicity(code: str) -> str | None:
    """Name of one of the 54 ethnic groups (codes 01-54), None when the code is unknown."""
    name: str | None = _table("ethnicity")["codes"].get(code)
    return name


def sex(code: str) -> dict[str, Any] | None:
    """The FHIR gender, XML 130 code and CCCD parity for an HL7 administrative sex code."""
    entry: dict[str, Any] | None = _table("sex")["codes"].get(code)
    return entry


def sex_from_fhir(gender: str) -> str | None:
    """The HL7 sex code for a FHIR gender, so both inputs share one rule set."""
    for code, entry in _table("sex")["codes"].items():
        if entry["fhir"] == gender:
            return str(code)
    return None


def icd10_display(code: str) -> str | None:
    """Vietnamese display name for common ICD-10 codes; unknown valid codes return None."""
    name: str | None = _table("icd10_common")["codes"].get(code)
    return name


def is_icd10(code: str) -> bool:
    """True when the code has ICD-10 shape (letter, two digits, optional dot and one or two more)."""
    return ICD10_PATTERN.fullmatch(code) is not None


HEALTH_CLASS_CODE = "KSK-PL"
HEALTH_CHECK_CONCLUSION_CODE = "KSK-KL"
HEALTH_CLASSES = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5}


def health_class(value: str) -> int | None:
    """QĐ 1551 health class 1-5 from "II", "2", "Loại II"; None when it is none of those."""
    text = value.strip().upper().removeprefix("LOẠI").strip()
    return HEALTH_CLASSES.get(text)


def xml130(table: str) -> Any:
    """One XML 130 code list or rule from xml130_codes.json (KET_QUA_DTRI, MA_LOAI_RV, DISCHARGE, ...)."""
    return _table("xml130_codes")[table]


def discharge(code: str) -> tuple[str, str] | None:
    """MA_LOAI_RV and (when the disposition implies it) KET_QUA_DTRI for a PV1-36 / FHIR disposition code."""
    entry = _table("xml130_codes")["DISCHARGE"].get(code)
    return (str(entry[0]), str(entry[1])) if isinstance(entry, list) else None


def benefit_level(card: str) -> str:
    """MUC_HUONG (percent) from character 3 of a 15-character BHYT card; "" when it is not one."""
    if len(card) != 15:
        return ""
    level: str = _table("xml130_codes")["MUC_HUONG_BY_CARD_LEVEL"].get(card[2], "")
    return level


def is_patient_category(code: str) -> bool:
    """True when a value has the form of a national MA_DOITUONG_KCB (QĐ 3276): 1.1, 2, 3.12, ..."""
    return re.fullmatch(_table("xml130_codes")["MA_DOITUONG_KCB_FORMAT"], code) is not None
