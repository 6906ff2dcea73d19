"""Vietnamese identifier rules (CCCD, BHYT, facility codes, tax code) as pure functions returning Issues."""
from __future__ import annotations

import hashlib
import re

from mappings.model import Issue
from mappings.vn import codes

CCCD_PATTERN = re.compile(r"[0-9]{12}")
BHYT_PATTERN = re.compile(r"[A-Z]{2}[1-5][0-9]{12}")
BHXH_FACILITY_PATTERN = re.compile(r"[0-9A-Z]{5}")
MOH_FACILITY_PATTERN = re.compile(r"[0-9]{13}")
TAX_CODE_PATTERN = re.compile(r"[0-9]{10}(-[0-9]{3})?")


def cccd_issues(value: str, location: str, birth_year: int | None = None, sex: str | None = None,
                against: str = "PID-7/PID-8") -> list[Issue]:
    """Check a CCCD number and its agreement with the birth year and sex (`against` names those fields)."""
    if not CCCD_PATTERN.fullmatch(value):
        return [Issue(location, "cccd-format", "CCCD must be exactly 12 digits")]
    issues: list[Issue] = []
    if codes.cccd_province(value[:3]) is None:
        issues.append(Issue(location, "cccd-province", "CCCD province code (digits 1-3) is not a valid province"))
    if birth_year is not None:
        digit = int(value[3])
        sex_entry = codes.sex(sex) if sex else None
        parity = sex_entry["cccd_parity"] if sex_entry else None
        century_ok = digit // 2 == birth_year // 100 - 19
        sex_ok = parity is None or digit % 2 == parity
        if not (century_ok and sex_ok):
            issues.append(Issue(location, "cccd-birth-mismatch",
                                f"CCCD century/sex digit does not agree with {against}"))
        if value[4:6] != f"{birth_year % 100:02d}":
            issues.append(Issue(location, "cccd-birth-mismatch",
                                f"CCCD birth-year digits (5-6) do not agree with {against.split('/')[0]}"))
    return issues


def is_valid_cccd(value: str) -> bool:
    """True when a CCCD number has the right shape and a known province code."""
    return not cccd_issues(value, "")


def bhyt_issues(value: str, location: str) -> list[Issue]:
    """Check a 15-character BHYT card: object code, benefit level 1-5, 12 digits."""
    if BHYT_PATTERN.fullmatch(value):
        return []
    return [Issue(location, "bhyt-format",
                  "BHYT card must be 2 letters, a benefit level 1-5 and 12 digits (15 characters)")]


def is_valid_bhyt(value: str) -> bool:
    """True when a BHYT card number has the 15-character shape."""
    return BHYT_PATTERN.fullmatch(value) is not None


def bhxh_facility_code_issues(value: str, location: str) -> list[Issue]:
    """The 5-character BHXH facility code (MACSKCB); a 13-digit MoH id here means the two were swapped."""
    if BHXH_FACILITY_PATTERN.fullmatch(value):
        return []
    if MOH_FACILITY_PATTERN.fullmatch(value):
        return [Issue(location, "facility-code-swapped",
                      "a 13-digit MoH facility id was given where the 5-digit BHXH facility code belongs")]
    return [Issue(location, "facility-code-format", "BHXH facility code must be 5 characters (digits, capitals)")]


def moh_facility_id_issues(value: str, location: str) -> list[Issue]:
    """The 13-digit MoH facility id; a 5-digit BHXH code here means the two were swapped."""
    if MOH_FACILITY_PATTERN.fullmatch(value):
        return []
    if BHXH_FACILITY_PATTERN.fullmatch(value):
        return [Issue(location, "facility-code-swapped",
                      "a 5-character BHXH facility code was given where the 13-digit MoH facility id belongs")]
    return [Issue(location, "facility-id-format", "MoH facility id must be 13 digits")]


def tax_code_issues(value: str, location: str, secondary_site: bool = False) -> list[Issue]:
    """A 10-digit tax code; secondary sites (branches) must carry the -NNN suffix, the main site must not."""
    if not TAX_CODE_PATTERN.fullmatch(value):
        return [Issue(location, "tax-code-format", "tax code must be 10 digits, optionally followed by -NNN")]
    has_suffix = "-" in value
    if secondary_site and not has_suffix:
        return [Issue(location, "tax-code-suffix", "a secondary site's tax code needs the -NNN suffix")]
    if not secondary_site and has_suffix:
        return [Issue(location, "tax-code-suffix", "the main site's tax code has no -NNN suffix")]
    if has_suffix and value.endswith("-000"):
        return [Issue(location, "tax-code-suffix", "the -NNN suffix of a secondary site starts at 001")]
    return []


def icd10_issues(code: str, location: str) -> list[Issue]:
    """An ICD-10 code of valid shape; the national portals reject anything else."""
    if codes.is_icd10(code):
        return []
    return [Issue(location, "icd10-format", "diagnosis code is not a valid ICD-10 code")]


def patient_key(kind: str, value: str) -> str:
    """One-way key of a patient identity (kind "cccd" or "bhyt"), used only to order documents."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()
