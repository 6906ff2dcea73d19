"""Amounts of the claim rows and the XML1 totals, in Decimal, and the sum checks the portal makes.

Row formulas (QĐ 130/4750 notes of Bảng 2 and 3, as transcribed by implementers):
THANH_TIEN_BV = SO_LUONG x DON_GIA_BV x TYLE_TT_DV/100 (drugs: no TYLE_TT_DV);
THANH_TIEN_BH = SO_LUONG x DON_GIA_BH x TYLE_TT_DV/100 x TYLE_TT_BH/100 (0 without a BHYT card or outside scope);
T_BHTT = (THANH_TIEN_BH - T_NGUONKHAC) x MUC_HUONG/100; T_BNCCT = THANH_TIEN_BH - T_NGUONKHAC - T_BHTT;
T_BNTT = THANH_TIEN_BV - THANH_TIEN_BH. So per row T_BNTT + T_BNCCT + T_BHTT + T_NGUONKHAC = THANH_TIEN_BV.
Every amount is rounded half up to 2 decimals before it is used in the next, so the written rows add up exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from mappings.model import Issue
from mappings.vn import codes

CENT = Decimal("0.01")
MILLI = Decimal("0.001")
HUNDRED = Decimal(100)
ROW_AMOUNTS = ("THANH_TIEN_BV", "THANH_TIEN_BH", "T_NGUONKHAC", "T_BHTT", "T_BNCCT", "T_BNTT")
TOTALS = ("T_THUOC", "T_VTYT", "T_TONGCHI_BV", "T_TONGCHI_BH", "T_BNTT", "T_BNCCT", "T_BHTT", "T_NGUONKHAC")


def decimal(text: str | float | None) -> Decimal | None:
    """A finite Decimal from a message or settings value ("1500", "1500.5", 2); None when it is not one."""
    try:
        value = Decimal(str(text).strip()) if text is not None and str(text).strip() else None
    except InvalidOperation:
        return None
    return value if value is not None and value.is_finite() else None


def written(value: Decimal, places: int) -> str:
    """A value with exactly `places` decimals, rounded half up ("1500.00"; "0" when places is 0)."""
    quantum = Decimal(1).scaleb(-places)
    return f"{value.quantize(quantum, rounding=ROUND_HALF_UP):f}"


@dataclass(frozen=True, slots=True)
class Line:
    """What one claim row is charged: quantity, prices and the ratios that apply."""

    quantity: Decimal
    price_bv: Decimal
    price_bh: Decimal
    ratio_bh: Decimal  # TYLE_TT_BH, 0 when the patient has no card or the item is outside scope
    benefit: Decimal  # MUC_HUONG
    ratio_dv: Decimal = HUNDRED  # TYLE_TT_DV (services only)

    def amounts(self) -> dict[str, Decimal]:
        """THANH_TIEN_BV/BH and the split between the fund, co-payment and the patient."""
        quantity, dv = self.quantity.quantize(MILLI, ROUND_HALF_UP), self.ratio_dv / HUNDRED
        bv = (quantity * self.price_bv.quantize(MILLI, ROUND_HALF_UP) * dv).quantize(CENT, ROUND_HALF_UP)
        bh = (quantity * self.price_bh.quantize(MILLI, ROUND_HALF_UP) * dv * self.ratio_bh / HUNDRED) \
            .quantize(CENT, ROUND_HALF_UP)
        other = Decimal(0)
        fund = ((bh - other) * self.benefit / HUNDRED).quantize(CENT, ROUND_HALF_UP)
        return {"THANH_TIEN_BV": bv, "THANH_TIEN_BH": bh, "T_NGUONKHAC": other, "T_BHTT": fund,
                "T_BNCCT": bh - other - fund, "T_BNTT": bv - bh}


def benefit_of(card: str) -> Decimal:
    """MUC_HUONG from the card's benefit level; 0 without a card."""
    return decimal(codes.benefit_level(card)) or Decimal(0)


def _read(row: dict[str, str], name: str) -> Decimal:
    return decimal(row.get(name)) or Decimal(0)


def totals(drugs: list[dict[str, str]], services: list[dict[str, str]]) -> dict[str, str]:
    """XML1 T_* as the sums of the written XML2 and XML3 rows (2 decimals)."""
    supplies = set(codes.xml130("MA_NHOM_SUPPLIES"))
    rows = drugs + services
    sums = {
        "T_THUOC": sum((_read(r, "THANH_TIEN_BV") for r in drugs), Decimal(0)),
        "T_VTYT": sum((_read(r, "THANH_TIEN_BV") for r in services if r.get("MA_NHOM") in supplies), Decimal(0)),
        "T_TONGCHI_BV": sum((_read(r, "THANH_TIEN_BV") for r in rows), Decimal(0)),
        "T_TONGCHI_BH": sum((_read(r, "THANH_TIEN_BH") for r in rows), Decimal(0)),
    }
    for name in ("T_BNTT", "T_BNCCT", "T_BHTT", "T_NGUONKHAC"):
        sums[name] = sum((_read(r, name) for r in rows), Decimal(0))
    return {name: written(value, 2) for name, value in sums.items()}


def _row_issues(table: str, rows: list[dict[str, str]]) -> list[Issue]:
    issues = []
    for number, row in enumerate(rows, start=1):
        split = sum((_read(row, name) for name in ("T_BNTT", "T_BNCCT", "T_BHTT", "T_NGUONKHAC")), Decimal(0))
        if split != _read(row, "THANH_TIEN_BV"):
            issues.append(Issue(f"{table}[{number}].THANH_TIEN_BV", "sum-mismatch",
                                "T_BNTT + T_BNCCT + T_BHTT + T_NGUONKHAC differs from THANH_TIEN_BV"))
        if _read(row, "THANH_TIEN_BH") > _read(row, "THANH_TIEN_BV"):
            issues.append(Issue(f"{table}[{number}].THANH_TIEN_BH", "sum-mismatch",
                                "THANH_TIEN_BH is more than THANH_TIEN_BV"))
    return issues


def sum_issues(summary: dict[str, str], drugs: list[dict[str, str]], services: list[dict[str, str]]) -> list[Issue]:
    """The cross-table checks: each row's split adds up, and every XML1 total equals the sum of its rows."""
    issues = _row_issues("XML2", drugs) + _row_issues("XML3", services)
    expected = totals(drugs, services)
    for name in TOTALS:
        if _read(summary, name) != decimal(expected[name]):
            issues.append(Issue(f"XML1.{name}", "sum-mismatch", f"XML1 {name} is not the sum of the XML2/XML3 rows"))
    split = sum((_read(summary, name) for name in ("T_BNTT", "T_BNCCT", "T_BHTT", "T_NGUONKHAC")), Decimal(0))
    if split != _read(summary, "T_TONGCHI_BV"):
        issues.append(Issue("XML1.T_TONGCHI_BV", "sum-mismatch",
                            "T_BNTT + T_BNCCT + T_BHTT + T_NGUONKHAC differs from T_TONGCHI_BV"))
    return issues
