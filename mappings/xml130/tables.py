"""The XML 130 tables of an episode (XML1-XML5, XML7, XML8) from the canonical document and the site mappings."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mappings import canonical
from mappings.canonical import (
    DocumentView,
    concept_text,
    first_coding,
    icd10_code,
    xml_datetime,
)
from mappings.model import Document, FacilityInfo, Issue
from mappings.vn import codes, systems
from mappings.xml130 import clinical
from mappings.xml130.claims import Claim
from mappings.xml130.clinical import joined
from mappings.xml130.layout import XML_DECLARATION, layouts, render, table_issues
from mappings.xml130.money import decimal, sum_issues, totals, written
from mappings.xml130.site import SiteCodes

__all__ = ["XML_DECLARATION", "ClaimResult", "build_claim", "build_tables", "layouts"]

WEIGHT_LOINC = "29463-7"
MAX_SECONDARY_DIAGNOSES = 12
CANCELLED = frozenset({"cancelled", "entered-in-error"})


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The tables of an episode, or why they cannot be signed yet.

    `unmapped`: site codes the settings do not map yet (`ward:NOI-TM`, `item:KB01`, `lab:2345-7`,
    `patient-category:BH`, `price:KB01`): not an error of the message; the document waits for the mapping.
    `issues`: the tables break a type, size, required-element or sum rule: a defect, never signed.
    """

    tables: dict[str, bytes] = field(default_factory=dict)
    unmapped: tuple[str, ...] = ()
    issues: tuple[Issue, ...] = ()

    @property
    def ready(self) -> bool:
        return not self.unmapped and not any(issue.severity == "error" for issue in self.issues)


def _diagnosis_kind(condition: dict[str, Any]) -> str:
    for category in condition.get("category", []):
        for coding in category.get("coding", []):
            if coding.get("system") == systems.V2_0052:
                return str(coding.get("code", ""))
    return "F"


def _diagnoses(view: DocumentView) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Admitting and discharge diagnoses (ICD-10), each in rank order."""
    conditions = view.ranked_conditions()
    admitting = [c for c in conditions if _diagnosis_kind(c) == "A"]
    final = [c for c in conditions if _diagnosis_kind(c) != "A"]
    return admitting, final or admitting


def _local_date(value: str | None) -> date | None:
    stamp = xml_datetime(value)
    try:
        return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))
    except ValueError:
        return None


def _episode_days(encounter: dict[str, Any]) -> str:
    """Inpatient days = discharge date - admission date + 1 (blank until discharge); 0 for a consultation."""
    if encounter.get("class", {}).get("code") != "IMP":
        return "0"
    period = encounter.get("period", {})
    start, end = _local_date(period.get("start")), _local_date(period.get("end"))
    if start is None or end is None:
        return ""
    return str((end - start).days + 1)


def _treatment(view: DocumentView) -> str:
    medications = [concept_text(m.get("medicationCodeableConcept"))
                   for kind in ("MedicationStatement", "MedicationRequest") for m in view.all(kind)]
    procedures = [concept_text(p.get("code")) for p in view.all("Procedure")]
    return joined(list(dict.fromkeys(medications + procedures)))


def _weight(view: DocumentView) -> str:
    """CAN_NANG in kg with two decimals."""
    for observation in view.all("Observation"):
        if first_coding(observation.get("code")).get("code") == WEIGHT_LOINC:
            quantity = observation.get("valueQuantity") or {}
            value = decimal(quantity.get("value"))
            if value is not None and str(quantity.get("code") or quantity.get("unit")) == "g":
                value = value / 1000
            return written(value, 2) if value is not None else ""
    return ""


def _extension_code(resource: dict[str, Any], url: str) -> str:
    for extension in resource.get("extension", []):
        if extension.get("url") == url:
            return str((extension.get("valueCoding") or {}).get("code", ""))
    return ""


def discharge_codes(encounter: dict[str, Any], site: SiteCodes | None = None) -> tuple[str, str]:
    """MA_LOAI_RV and KET_QUA_DTRI.

    The disposition (PV1-36, dischargeDisposition; HL7 0112 or FHIR codes) gives the discharge type and,
    for a death, the result; the stated result (PV2-24, the treatment-result extension) wins. A visit that
    ends without a disposition, as an outpatient visit does, is an ordinary end (1); a result nobody
    stated is 7, not determined.
    """
    disposition = None
    found = [str(c.get("code", "")) for c in ((encounter.get("hospitalization") or {}).get("dischargeDisposition")
                                              or {}).get("coding", []) if c.get("code")]
    for code in found:
        disposition = disposition or codes.discharge(code)
    if disposition is None and found and site is not None:  # a site's own code: its mapping says
        disposition = (site.disposition(found[0]) or "1", "")
    kind, implied = disposition or ("1", "")
    stated = _extension_code(encounter, systems.TREATMENT_RESULT_EXTENSION)
    return kind, stated or implied or str(codes.xml130("DEFAULT_TREATMENT_RESULT"))


def visit_type(encounter: dict[str, Any]) -> str:
    """MA_LOAI_KCB: stated in Encounter.type (visit-type system), else from the encounter class."""
    for concept in encounter.get("type") or []:
        for coding in concept.get("coding", []):
            if coding.get("system") == systems.VISIT_TYPE and coding.get("code") in codes.xml130("MA_LOAI_KCB"):
                return str(coding["code"])
    return str(codes.xml130("MA_LOAI_KCB_BY_CLASS").get(encounter.get("class", {}).get("code", ""), ""))


def _ward_code(encounter: dict[str, Any]) -> str:
    for location in reversed(encounter.get("location") or []):
        value = ((location.get("location") or {}).get("identifier") or {}).get("value")
        if value:
            return str(value)
    return ""


def _card(view: DocumentView) -> dict[str, str]:
    """MA_DKBD (Patient.generalPractitioner, PD1-3) and the card's validity (Coverage.period, IN1-12/13)."""
    registered = ""
    for reference in view.one("Patient").get("generalPractitioner") or []:
        identifier = reference.get("identifier") or {}
        if identifier.get("system") == systems.BHXH_FACILITY:
            registered = str(identifier.get("value", ""))
    period = next((c.get("period") or {} for c in view.all("Coverage") if c.get("status") != "cancelled"), {})
    return {"MA_DKBD": registered, "GT_THE_TU": xml_datetime(period.get("start"))[:8],
            "GT_THE_DEN": xml_datetime(period.get("end"))[:8]}


def _doctor(reference: dict[str, Any] | None) -> tuple[str, str]:
    """Licence and name of a practitioner, the name without the HIS title prefix (BS, ThS.BS, ...)."""
    number, name = canonical.licence(reference)
    words = name.split()
    titles = set(codes.xml130("TITLE_PREFIXES"))
    while words and words[0].upper().rstrip(".") in titles:
        words = words[1:]
    return number, " ".join(words)


def patient_category(encounter: dict[str, Any], site: SiteCodes) -> str:
    """XML1 MA_DOITUONG_KCB: the encounter's patient category through the site mappings."""
    return site.patient_category(_extension_code(encounter, systems.PATIENT_CATEGORY_EXTENSION))


def inpatient_admission(encounter: dict[str, Any]) -> str:
    """XML1 NGAY_VAO_NOI_TRU: when an inpatient stay began; "" for any other encounter."""
    inpatient = encounter.get("class", {}).get("code") == "IMP"
    return xml_datetime(encounter.get("period", {}).get("start")) if inpatient else ""


def xml1(view: DocumentView, facility: FacilityInfo, site: SiteCodes | None = None,
         money: dict[str, str] | None = None) -> dict[str, str]:
    """XML1, the episode summary (tổng hợp); `money` holds the T_* totals (none: left out)."""
    site, money = site or SiteCodes(None), money or {}
    patient, encounter = view.one("Patient"), view.one("Encounter")
    admitting, final = _diagnoses(view)
    period = encounter.get("period", {})
    kind, result = discharge_codes(encounter, site)
    reason = joined([concept_text(r) for r in encounter.get("reasonCode", [])])
    settled = xml_datetime(period.get("end") or view.document.bundle.get("timestamp"))
    procedures = [str(first_coding(p.get("code")).get("code", "")) for p in view.all("Procedure")
                  if first_coding(p.get("code")).get("system") == systems.ICD9CM]
    return {
        "MA_LK": view.document.document_id, "STT": "1", "HO_TEN": canonical.name_text(patient),
        "MA_BN": view.mrn() or view.identifier(systems.CCCD) or view.identifier(systems.BHYT),
        "SO_CCCD": view.identifier(systems.CCCD), "NGAY_SINH": xml_datetime(patient.get("birthDate")),
        "GIOI_TINH": canonical.sex_code(patient), "MA_DANTOC": canonical.ethnicity_code(patient),
        "MA_QUOCTICH": canonical.nationality_code(patient), "MA_NGHE_NGHIEP": str(codes.xml130("MA_NGHE_NGHIEP_NONE")),
        "DIA_CHI": canonical.address_text(patient), "MATINH_CU_TRU": canonical.province_code(patient),
        "DIEN_THOAI": str((patient.get("telecom") or [{}])[0].get("value", "")),
        "MA_THE_BHYT": view.identifier(systems.BHYT), **(_card(view) if view.identifier(systems.BHYT) else {}),
        "LY_DO_VV": reason, "CHAN_DOAN_VAO": joined([concept_text(c.get("code")) for c in admitting]) or reason,
        "CHAN_DOAN_RV": joined([concept_text(c.get("code")) for c in final]),
        "MA_BENH_CHINH": icd10_code(final[0]) if final else "",
        "MA_BENH_KT": ";".join([code for code in map(icd10_code, final[1:]) if code][:MAX_SECONDARY_DIAGNOSES]),
        "MA_PTTT_QT": ";".join(dict.fromkeys(procedures)),
        "MA_DOITUONG_KCB": patient_category(encounter, site),
        "NGAY_VAO": xml_datetime(period.get("start")), "NGAY_RA": xml_datetime(period.get("end")),
        "NGAY_VAO_NOI_TRU": inpatient_admission(encounter),
        "SO_NGAY_DTRI": _episode_days(encounter), "PP_DIEU_TRI": _treatment(view),
        "KET_QUA_DTRI": result, "MA_LOAI_RV": kind, "NGAY_TTOAN": xml_datetime(period.get("end")), **money,
        "NAM_QT": settled[:4], "THANG_QT": settled[4:6].lstrip("0"), "MA_LOAI_KCB": visit_type(encounter),
        "MA_KHOA": site.ward(_ward_code(encounter)), "MA_CSKCB": facility.bhxh_code, "CAN_NANG": _weight(view),
        "MA_TTDV": facility.head_code,
    }


def xml7(view: DocumentView, facility: FacilityInfo, ward: str) -> dict[str, str]:
    """XML7, the discharge paper (giấy ra viện) of a finished inpatient stay."""
    encounter = view.one("Encounter")
    _, final = _diagnoses(view)
    period = encounter.get("period", {})
    doctor, doctor_name = _doctor((encounter.get("participant") or [{}])[0].get("individual"))
    return {
        "MA_LK": view.document.document_id, "MA_YTE": view.mrn(), "MA_KHOA_RV": ward,
        "NGAY_VAO": xml_datetime(period.get("start")), "NGAY_RA": xml_datetime(period.get("end")),
        "MA_DINH_CHI_THAI": "0", "CHAN_DOAN_RV": joined([concept_text(c.get("code")) for c in final]),
        "PP_DIEUTRI": _treatment(view), "MA_BS": doctor, "TEN_BS": doctor_name, "MA_TTDV": facility.head_code,
        "NGAY_CT": xml_datetime(period.get("end"))[:8],
    }


def xml8(view: DocumentView, facility: FacilityInfo, result: str) -> dict[str, str]:
    """XML8, the medical-record summary (tóm tắt hồ sơ bệnh án)."""
    encounter = view.one("Encounter")
    admitting, final = _diagnoses(view)
    period = encounter.get("period", {})
    results = [f"{concept_text(o.get('code'))}: {' '.join(p for p in canonical.value_text(o) if p)}"
               for _, o in clinical.labs(view)]
    reason = joined([concept_text(r) for r in encounter.get("reasonCode", [])])
    summaries = [clinical.note_text(r) for r in view.all("DocumentReference") if clinical.note_kind(r) == "summary"]
    return {
        "MA_LK": view.document.document_id, "MA_LOAI_KCB": visit_type(encounter), "DON_VI": facility.name,
        "NGAY_VAO": xml_datetime(period.get("start")), "NGAY_RA": xml_datetime(period.get("end")),
        "CHAN_DOAN_VAO": joined([concept_text(c.get("code")) for c in admitting]) or reason,
        "CHAN_DOAN_RV": joined([concept_text(c.get("code")) for c in final]),
        "QT_BENHLY": "\n".join(t for t in summaries if t), "TOMTAT_KQ": joined(results),
        "PP_DIEUTRI": _treatment(view), "KET_QUA_DTRI": result, "MA_TTDV": facility.head_code,
        "NGAY_CT": xml_datetime(period.get("end") or view.document.bundle.get("timestamp"))[:8],
    }


def _numbered(rows: list[dict[str, str]], ma_lk: str) -> list[dict[str, str]]:
    return [{"MA_LK": ma_lk, "STT": str(number), **row} for number, row in enumerate(rows, start=1)]


def _link_issues(lab_rows: list[dict[str, str]], service_rows: list[dict[str, str]]) -> list[Issue]:
    """Each XML4 row points at its XML3 service row through MA_DICH_VU (a warning: the charge may come later)."""
    charged = {row.get("MA_DICH_VU") for row in service_rows}
    return [Issue(f"XML4[{n}].MA_DICH_VU", "unlinked-result", "no XML3 row charges this result's service yet",
                  "warning") for n, row in enumerate(lab_rows, start=1) if row["MA_DICH_VU"] not in charged]


def build_claim(document: Document, facility: FacilityInfo, site: Mapping[str, Any] | None = None) -> ClaimResult:
    """Every XML 130 table of an episode, checked (types, sizes, required elements, sums) before signing.

    XML1 and XML8 always; XML2/XML3 with drugs or charges; XML4 with lab results; XML5 with clinical-course
    notes; XML7 for a finished inpatient stay. A cancelled episode (A11, FHIR cancelled / entered-in-error)
    gives no tables: nothing more is sent for it.
    """
    if document.kind != "episode":
        return ClaimResult()
    view = DocumentView(document)
    encounter = view.one("Encounter")
    if encounter.get("status") in CANCELLED:
        return ClaimResult()
    codes_ = SiteCodes(site)
    ward = codes_.ward(_ward_code(encounter))
    _, final = _diagnoses(view)
    claim, ma_lk = Claim(view, codes_, ward, icd10_code(final[0]) if final else ""), document.document_id
    labs = _numbered(clinical.xml4(view, codes_), ma_lk)
    results: dict[str, str] = {}
    for row in labs:
        results[row["MA_DICH_VU"]] = max(results.get(row["MA_DICH_VU"], ""), row["NGAY_KQ"])
    drugs, services = _numbered(claim.drugs(), ma_lk), _numbered(claim.services(results), ma_lk)
    summary = xml1(view, facility, codes_, totals(drugs, services))
    rows: dict[str, list[dict[str, str]]] = {"XML1": [summary], "XML2": drugs, "XML3": services, "XML4": labs,
                                             "XML5": _numbered(clinical.xml5(view), ma_lk)}
    if encounter.get("class", {}).get("code") == "IMP" and encounter.get("status") == "finished" \
            and encounter.get("period", {}).get("end"):
        rows["XML7"] = [xml7(view, facility, ward)]
    rows["XML8"] = [xml8(view, facility, summary["KET_QUA_DTRI"])]
    present = {name: table for name, table in rows.items() if table}
    rendered = {name: render(name, table) for name, table in present.items()}
    if codes_.missing:  # blanks where the site has not mapped yet: nothing to check until it has
        return ClaimResult(rendered, tuple(sorted(codes_.missing)))
    issues = [issue for name, table in present.items() for issue in table_issues(name, table)]
    issues += sum_issues(summary, drugs, services) + _link_issues(labs, services)
    return ClaimResult(rendered, (), tuple(issues))


def build_tables(document: Document, facility: FacilityInfo,
                 site: Mapping[str, Any] | None = None) -> dict[str, bytes]:
    """The tables alone (see build_claim), whether or not they are ready to sign."""
    return build_claim(document, facility, site).tables
