"""Vietnamese identifier rules and code tables."""
from __future__ import annotations

import pytest

from mappings.vn import codes
from mappings.vn.identifiers import (
    bhxh_facility_code_issues,
    bhyt_issues,
    cccd_issues,
    icd10_issues,
    is_valid_bhyt,
    is_valid_cccd,
    moh_facility_id_issues,
    patient_key,
    tax_code_issues,
)

CCCD = "040085012345"  # Nghệ An, male, 1985


@pytest.mark.parametrize(("value", "year", "sex", "expected"), [
    (CCCD, 1985, "M", []),
    ("031196004321", 1996, "F", []),
    ("079226000777", 2026, "M", []),
    ("048190007788", 1990, "F", []),
    ("079301000001", 2001, "F", []),
    (CCCD, None, None, []),
    (CCCD, 1985, "U", []),
    ("04008501234", 1985, "M", ["cccd-format"]),
    ("0400850123456", 1985, "M", ["cccd-format"]),
    ("04008501234A", 1985, "M", ["cccd-format"]),
    ("003085012345", 1985, "M", ["cccd-province"]),
    ("099085012345", 1985, "M", ["cccd-province"]),
    (CCCD, 1985, "F", ["cccd-birth-mismatch"]),
    (CCCD, 2085, "M", ["cccd-birth-mismatch"]),
    (CCCD, 1984, "M", ["cccd-birth-mismatch"]),
    ("040305012399", 1985, "M", ["cccd-birth-mismatch", "cccd-birth-mismatch"]),
])
def test_cccd_rules(value: str, year: int | None, sex: str | None, expected: list[str]) -> None:
    issues = cccd_issues(value, "PID-3", year, sex)
    assert [i.code for i in issues] == expected
    assert all(i.location == "PID-3" and value not in i.message for i in issues)


def test_cccd_mismatch_message_names_fields_not_number() -> None:
    issues = cccd_issues("040305012399", "PID-3", 1985, "M")
    assert issues[0].message == "CCCD century/sex digit does not agree with PID-7/PID-8"


@pytest.mark.parametrize(("value", "ok"), [
    ("GD4404012345678", True), ("DN4484812345678", True), ("TE1790000000001", True),
    ("GD6404012345678", False), ("GD0404012345678", False), ("gd4404012345678", False),
    ("GD440401234567", False), ("GD44040123456789", False), ("G14404012345678", False), ("", False),
])
def test_bhyt_format(value: str, ok: bool) -> None:
    assert is_valid_bhyt(value) is ok
    assert (bhyt_issues(value, "PID-3") == []) is ok


@pytest.mark.parametrize(("value", "code"), [
    ("40001", None), ("01234", None), ("4000A", None), ("4000", "facility-code-format"),
    ("4000a", "facility-code-format"), ("400-1", "facility-code-format"),
    ("4000000000123", "facility-code-swapped"),
])
def test_bhxh_facility_code(value: str, code: str | None) -> None:
    assert [i.code for i in bhxh_facility_code_issues(value, "facility.bhxh_code")] == ([code] if code else [])


@pytest.mark.parametrize(("value", "code"), [
    ("4000000000123", None), ("0100000000123", None), ("400000000012", "facility-id-format"),
    ("40001", "facility-code-swapped"),
])
def test_moh_facility_id(value: str, code: str | None) -> None:
    assert [i.code for i in moh_facility_id_issues(value, "facility.moh_facility_id")] == ([code] if code else [])


@pytest.mark.parametrize(("value", "secondary", "code"), [
    ("0100109106", False, None), ("0100109106-001", True, None), ("0100109106", True, "tax-code-suffix"),
    ("0100109106-001", False, "tax-code-suffix"), ("0100109106-000", True, "tax-code-suffix"),
    ("010010910", False, "tax-code-format"), ("0100109106-01", True, "tax-code-format"),
])
def test_tax_code(value: str, secondary: bool, code: str | None) -> None:
    assert [i.code for i in tax_code_issues(value, "facility.tax_code", secondary)] == ([code] if code else [])


@pytest.mark.parametrize(("code", "ok"), [
    ("I10", True), ("E78.2", True), ("J06.9", True), ("S72.00", True), ("i10", False), ("I1", False),
    ("110", False), ("E78.", False), ("E78.234", False), ("", False),
])
def test_icd10_format(code: str, ok: bool) -> None:
    assert (icd10_issues(code, "DG1-3") == []) is ok


def test_valid_cccd_helper() -> None:
    assert is_valid_cccd(CCCD) and not is_valid_cccd("003085012345")


def test_patient_key_is_one_way_and_stable() -> None:
    key = patient_key("cccd", CCCD)
    assert key == patient_key("cccd", CCCD) and CCCD not in key and len(key) == 64
    assert key != patient_key("bhyt", CCCD)


def test_province_tables() -> None:
    old = codes.cccd_provinces()
    current = codes.province_2025_codes()
    assert len(old) == 63 and len(current) == 34
    assert all(entry["province_2025"] in current for entry in old.values())
    assert codes.cccd_province("040") == {"name": "Nghệ An", "province_2025": "40"}
    assert codes.province_2025("79") == "Thành phố Hồ Chí Minh"


@pytest.mark.parametrize(("code", "name"), [("01", "Kinh"), ("04", "Hoa"), ("54", "Rơ-măm"), ("55", None)])
def test_ethnicity(code: str, name: str | None) -> None:
    assert codes.ethnicity(code) == name


@pytest.mark.parametrize(("value", "expected"), [
    ("II", 2), ("2", 2), ("I", 1), ("V", 5), ("Loại III", 3), ("VI", None), ("0", None), ("", None)])
def test_health_class(value: str, expected: int | None) -> None:
    assert codes.health_class(value) == expected


@pytest.mark.parametrize(("sex", "fhir", "xml"), [("M", "male", "1"), ("F", "female", "2"), ("U", "unknown", "3"),
                                                  ("O", "other", "3")])
def test_sex_codes(sex: str, fhir: str, xml: str) -> None:
    entry = codes.sex(sex)
    assert entry is not None and entry["fhir"] == fhir and entry["xml130"] == xml
    assert codes.sex_from_fhir(fhir) == sex
