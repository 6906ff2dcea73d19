"""XML2 (drugs) and XML3 (services, supplies, bed days) rows from the episode's medication and charge resources.

Drug rows: one per pharmacy order, the dispense (RXD, MedicationDispense) when there is one, else the order
(RXE, MedicationRequest); an administration (RXA in RAS, MedicationAdministration) gives the row its
NGAY_TH_YL. A ChargeItem (FT1, ChargeItem) whose item the site maps to a drug group is a drug row too; every
other ChargeItem is an XML3 row. National codes, groups and catalogue prices come from the site mappings.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from mappings.canonical import (
    DocumentView,
    concept_text,
    first_coding,
    licence,
    xml_datetime,
)
from mappings.vn import codes, systems
from mappings.xml130.money import HUNDRED, Line, decimal, written
from mappings.xml130.site import SiteCodes

DONE = frozenset({"cancelled", "entered-in-error", "stopped", "declined", "not-done", "aborted"})


def _order(reference: dict[str, Any] | None) -> str:
    return str(((reference or {}).get("identifier") or {}).get("value", ""))


def _own_order(resource: dict[str, Any]) -> str:
    return str(((resource.get("identifier") or [{}])[0]).get("value", ""))


def _quantity(quantity: dict[str, Any] | None) -> tuple[Decimal | None, str]:
    return decimal((quantity or {}).get("value")), str((quantity or {}).get("unit") or "")


def _dosage_text(*sources: dict[str, Any]) -> tuple[str, str]:
    """(LIEU_DUNG, CACH_DUNG): the first dosage that says each, the dispense's before the order's."""
    dose = how = ""
    for source in sources:
        dosage = (source.get("dosageInstruction") or [{}])[0]
        extra = "; ".join(concept_text(a) for a in dosage.get("additionalInstruction") or [])
        dose, how = dose or str(dosage.get("text", "")), how or str(dosage.get("patientInstruction") or extra)
    return dose, how


class Claim:
    """The money rows of one episode, built with the site mappings and the patient's card."""

    def __init__(self, view: DocumentView, site: SiteCodes, ward: str, principal: str) -> None:
        self.view, self.site, self.ward, self.principal = view, site, ward, principal
        self.card = view.identifier(systems.BHYT)
        self.benefit = decimal(codes.benefit_level(self.card)) or Decimal(0)
        self.drug_groups = set(codes.xml130("MA_NHOM_DRUGS"))

    def _shares(self, entry: dict[str, str]) -> tuple[str, str, Decimal]:
        """PHAM_VI, TYLE_TT_BH and its value: nothing from the fund without a card or outside scope."""
        scope = entry.get("scope") or "1"
        ratio = decimal(entry.get("ratio")) if entry.get("ratio") else HUNDRED
        if not self.card or scope != "1" or ratio is None:
            ratio = Decimal(0)
        return scope, written(ratio, 0), ratio

    def _money(self, entry: dict[str, str], quantity: Decimal, price_bv: Decimal, price_bh: Decimal,
               with_dv: bool) -> dict[str, str]:
        scope, ratio_text, ratio = self._shares(entry)
        amounts = Line(quantity, price_bv, price_bh, ratio, self.benefit if ratio else Decimal(0)).amounts()
        row = {name: written(value, 2) for name, value in amounts.items()}
        row.update(PHAM_VI=scope, TYLE_TT_BH=ratio_text, SO_LUONG=written(quantity, 3),
                   MUC_HUONG=written(self.benefit if self.card else Decimal(0), 0), MA_PTTT="1")
        if with_dv:
            row.update(DON_GIA_BV=written(price_bv, 3), DON_GIA_BH=written(price_bh, 3), TYLE_TT_DV="100")
        else:
            row["DON_GIA"] = written(price_bv, 3)
            if self.card and ratio:
                row["NGUON_CTRA"] = "1"
        return row

    def _price(self, code: str, given: Decimal | None, entry: dict[str, str]) -> Decimal | None:
        price = given if given is not None else decimal(entry.get("price"))
        if price is None and entry:
            self.site.missing.add(f"price:{code}")
        return price

    def _department(self, charge: dict[str, Any]) -> str:
        ward = str(((charge.get("costCenter") or {}).get("identifier") or {}).get("value", ""))
        return self.site.ward(ward) if ward else self.ward

    def _drug_row(self, concept: dict[str, Any] | None, quantity: Decimal | None, unit: str, given: Decimal | None,
                  details: dict[str, str]) -> dict[str, str] | None:
        code = str(first_coding(concept).get("code", ""))
        entry = self.site.item(code)
        price = self._price(code, given, entry)
        if not entry or price is None or quantity is None:
            return None
        row = {"MA_THUOC": entry["code"], "MA_NHOM": entry["group"], "TEN_THUOC": entry.get("name") or
               concept_text(concept), "DON_VI_TINH": entry.get("unit") or unit, "HAM_LUONG": entry.get("strength", ""),
               "DUONG_DUNG": entry.get("route", ""), "DANG_BAO_CHE": entry.get("form", ""),
               "SO_DANG_KY": entry.get("registration", ""), "TT_THAU": entry.get("tender", ""), "MA_KHOA": self.ward,
               **details}
        return row | self._money(entry, quantity, price, decimal(entry.get("price_bh")) or price, with_dv=False)

    def _administered(self) -> dict[str, str]:
        """The latest administration time of each order."""
        given: dict[str, str] = {}
        for administration in self.view.all("MedicationAdministration"):
            when = xml_datetime(administration.get("effectiveDateTime"))
            order = _order(administration.get("request"))
            if administration.get("status") not in DONE and order and when > given.get(order, ""):
                given[order] = when
        return given

    def drugs(self) -> list[dict[str, str]]:
        """XML2 rows, in order time, without MA_LK and STT."""
        administered = self._administered()
        requests = {_own_order(r): r for r in self.view.all("MedicationRequest") if r.get("status") not in DONE}
        lines: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
        for dispense in self.view.all("MedicationDispense"):
            if dispense.get("status") not in DONE:
                order = _order((dispense.get("authorizingPrescription") or [None])[0])
                lines.append((dispense, requests.pop(order, None) if order else None))
        lines += [(None, request) for request in requests.values()]
        rows = [row for dispense, request in lines if (row := self._medication(dispense, request, administered))]
        rows += [row for charge in self._charges(drugs=True) if (row := self._charged_drug(charge))]
        return sorted(rows, key=lambda r: (r.get("NGAY_YL", ""), r["MA_THUOC"]))

    def _medication(self, dispense: dict[str, Any] | None, request: dict[str, Any] | None,
                    administered: dict[str, str]) -> dict[str, str] | None:
        source = dispense or request or {}
        request = request or {}
        if dispense:
            quantity, unit = _quantity(dispense.get("quantity"))
        else:
            quantity, unit = _quantity((request.get("dispenseRequest") or {}).get("quantity"))
        dose, how = _dosage_text(source, request)
        order = _own_order(request) or _order(((dispense or {}).get("authorizingPrescription") or [None])[0])
        ordered = xml_datetime(request.get("authoredOn") or (dispense or {}).get("whenPrepared"))
        handed = xml_datetime((dispense or {}).get("whenHandedOver"))
        details = {"LIEU_DUNG": dose, "CACH_DUNG": how,
                   "MA_BAC_SI": licence(request.get("requester"))[0], "NGAY_YL": ordered or handed,
                   "NGAY_TH_YL": administered.get(order) or handed or ordered}
        return self._drug_row(source.get("medicationCodeableConcept"), quantity, unit, None, details)

    def _charges(self, drugs: bool) -> list[dict[str, Any]]:
        """Billable ChargeItems whose site group is (or is not) a drug group; unmapped ones count as services."""
        out = []
        for charge in self.view.all("ChargeItem"):
            if charge.get("status") in DONE:
                continue
            code = str(first_coding(charge.get("code")).get("code", ""))
            group = self.site.item(code).get("group", "")
            if (group in self.drug_groups) == drugs:
                out.append(charge)
        return out

    def _charged_drug(self, charge: dict[str, Any]) -> dict[str, str] | None:
        quantity, unit = _quantity(charge.get("quantity"))
        period = charge.get("occurrencePeriod") or {}
        start = xml_datetime(period.get("start") or charge.get("occurrenceDateTime"))
        details = {"MA_BAC_SI": licence(charge.get("enterer"))[0], "NGAY_YL": start,
                   "NGAY_TH_YL": xml_datetime(period.get("end")) or start}
        row = self._drug_row(charge.get("code"), quantity, unit, decimal((charge.get("priceOverride") or {})
                                                                          .get("value")), details)
        if row is not None:
            row["MA_KHOA"] = self._department(charge)
        return row

    def services(self, results: dict[str, str]) -> list[dict[str, str]]:
        """XML3 rows, in order time; `results` gives NGAY_KQ by national service code (from XML4)."""
        rows = [row for charge in self._charges(drugs=False) if (row := self._service(charge, results))]
        return sorted(rows, key=lambda r: (r.get("NGAY_YL", ""), r.get("MA_DICH_VU") or r.get("MA_VAT_TU", "")))

    def _procedure_code(self, charge: dict[str, Any]) -> str:
        wanted = {str(s.get("reference", "")).removeprefix("urn:uuid:") for s in charge.get("service") or []}
        for procedure in self.view.all("Procedure"):
            if procedure["id"] in wanted:
                coding = first_coding(procedure.get("code"))
                return str(coding.get("code", "")) if coding.get("system") == systems.ICD9CM else ""
        return ""

    def _service(self, charge: dict[str, Any], results: dict[str, str]) -> dict[str, str] | None:
        code = str(first_coding(charge.get("code")).get("code", ""))
        entry = self.site.item(code)
        quantity, unit = _quantity(charge.get("quantity"))
        price = self._price(code, decimal((charge.get("priceOverride") or {}).get("value")), entry)
        if not entry or price is None or quantity is None:
            return None
        group = entry["group"]
        supply = group in codes.xml130("MA_NHOM_SUPPLIES")
        bed = next((str(e.get("valueString", "")) for e in charge.get("extension") or []
                    if e.get("url") == systems.BED_EXTENSION), "")
        period = charge.get("occurrencePeriod") or {}
        start = xml_datetime(period.get("start") or charge.get("occurrenceDateTime"))
        name = entry.get("name") or concept_text(charge.get("code"))
        row = {"MA_DICH_VU": "" if supply else entry["code"], "MA_VAT_TU": entry["code"] if supply else "",
               "TEN_DICH_VU": "" if supply else name, "TEN_VAT_TU": name if supply else "", "MA_NHOM": group,
               "DON_VI_TINH": entry.get("unit") or unit or "Lần",
               "TT_THAU": entry.get("tender", "") if supply else "",
               "MA_KHOA": self._department(charge), "MA_BAC_SI": licence(charge.get("enterer"))[0],
               "NGUOI_THUC_HIEN": licence(((charge.get("performer") or [{}])[0]).get("actor"))[0],
               "MA_GIUONG": bed if group in codes.xml130("MA_NHOM_BEDS") else "", "MA_BENH": self.principal,
               "MA_PTTT_QT": self._procedure_code(charge), "NGAY_YL": start,
               "NGAY_TH_YL": xml_datetime(period.get("end")) or start,
               "NGAY_KQ": results.get(entry["code"], "") if not supply else ""}
        return row | self._money(entry, quantity, price, decimal(entry.get("price_bh")) or price, with_dv=True)
