"""XML 130 tables (XML1, XML4, XML7, XML8) from the canonical episode document."""
from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from mappings import canonical
from mappings.canonical import DocumentView, concept_text, first_coding, icd10_code, xml_datetime
from mappings.model import Document, FacilityInfo
from mappings.vn import systems

XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
WEIGHT_LOINC = "29463-7"
MAX_SECONDARY_DIAGNOSES = 12
CANCELLED = frozenset({"cancelled", "entered-in-error"})


@cache
def layouts() -> dict[str, Any]:
    """Element order of each table, kept as data (layouts.json)."""
    text = resources.files("mappings.xml130").joinpath("layouts.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def render(table: str, rows: list[dict[str, str]]) -> bytes:
    """One table as UTF-8 XML, every element of the layout present and in order (empty when unknown)."""
    layout = layouts()[table]
    root = ET.Element(layout["root"])
    parent = ET.SubElement(root, layout["list"]) if layout["list"] else root
    for row in rows:
        target = ET.SubElement(parent, layout["row"]) if layout["row"] else parent
        for name in layout["fields"]:
            ET.SubElement(target, name).text = XML_INVALID.sub("", row.get(name, ""))
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return XML_DECLARATION + body


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


def _joined(texts: list[str]) -> str:
    return "; ".join(t for t in texts if t)


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


def _labs(view: DocumentView) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(report, observation) pairs for laboratory results, the report empty when there is none."""
    reported: dict[str, dict[str, Any]] = {}
    for report in view.all("DiagnosticReport"):
        for reference in report.get("result", []):
            reported[str(reference.get("reference", "")).removeprefix("urn:uuid:")] = report
    labs = []
    for observation in view.all("Observation"):
        categories = {c.get("code") for cat in observation.get("category", []) for c in cat.get("coding", [])}
        if "laboratory" in categories:
            labs.append((reported.get(observation["id"], {}), observation))
    return sorted(labs, key=lambda pair: (str(pair[1].get("effectiveDateTime", "")), concept_text(pair[1]["code"])))


def _summary_text(view: DocumentView) -> str:
    texts = []
    for reference in view.all("DocumentReference"):
        for content in reference.get("content", []):
            data = content.get("attachment", {}).get("data")
            if data:
                texts.append(base64.b64decode(data).decode("utf-8"))
    return "\n".join(texts)


def _treatment(view: DocumentView) -> str:
    medications = [concept_text(m.get("medicationCodeableConcept")) for m in view.all("MedicationStatement")]
    procedures = [concept_text(p.get("code")) for p in view.all("Procedure")]
    return _joined(medications + procedures)


def _weight(view: DocumentView) -> str:
    for observation in view.all("Observation"):
        if first_coding(observation.get("code")).get("code") == WEIGHT_LOINC:
            return canonical.value_text(observation)[0]
    return ""


def xml1(view: DocumentView, facility: FacilityInfo) -> dict[str, str]:
    """XML1, the episode summary (tổng hợp)."""
    patient, encounter = view.one("Patient"), view.one("Encounter")
    admitting, final = _diagnoses(view)
    period = encounter.get("period", {})
    disposition = first_coding((encounter.get("hospitalization") or {}).get("dischargeDisposition")).get("code", "")
    codes = layouts()["codes"]
    reason = _joined([concept_text(r) for r in encounter.get("reasonCode", [])])
    return {
        "MA_LK": view.document.document_id, "STT": "1", "MA_BN": view.mrn(), "HO_TEN": canonical.name_text(patient),
        "SO_CCCD": view.identifier(systems.CCCD), "NGAY_SINH": xml_datetime(patient.get("birthDate")),
        "GIOI_TINH": canonical.sex_code(patient), "MA_DANTOC": canonical.ethnicity_code(patient),
        "MA_QUOCTICH": canonical.nationality_code(patient),
        "DIA_CHI": canonical.address_text(patient), "MATINH_CU_TRU": canonical.province_code(patient),
        "DIEN_THOAI": str((patient.get("telecom") or [{}])[0].get("value", "")),
        "MA_THE_BHYT": view.identifier(systems.BHYT), "LY_DO_VV": reason,
        "CHAN_DOAN_VAO": _joined([concept_text(c.get("code")) for c in admitting]) or reason,
        "CHAN_DOAN_RV": _joined([concept_text(c.get("code")) for c in final]),
        "MA_BENH_CHINH": icd10_code(final[0]) if final else "",
        "MA_BENH_KT": ";".join([code for code in map(icd10_code, final[1:]) if code][:MAX_SECONDARY_DIAGNOSES]),
        "NGAY_VAO": xml_datetime(period.get("start")), "NGAY_RA": xml_datetime(period.get("end")),
        "SO_NGAY_DTRI": _episode_days(encounter), "PP_DIEU_TRI": _treatment(view),
        "MA_LOAI_RV": codes["MA_LOAI_RV"].get(disposition, ""),
        "KET_QUA_DTRI": codes["KET_QUA_DTRI"].get(disposition, ""),
        "MA_LOAI_KCB": codes["MA_LOAI_KCB"].get(encounter.get("class", {}).get("code", ""), ""),
        "MA_CSKCB": facility.bhxh_code, "CAN_NANG": _weight(view), "MA_TTDV": facility.head_code,
    }


def xml4(view: DocumentView) -> list[dict[str, str]]:
    """XML4, one row per laboratory result."""
    rows = []
    for number, (report, observation) in enumerate(_labs(view), start=1):
        value, unit = canonical.value_text(observation)
        ranges = _joined([str(r.get("text", "")) for r in observation.get("referenceRange", [])])
        interpretation = _joined([str(first_coding(i).get("code", "")) for i in observation.get("interpretation", [])])
        code = first_coding(observation.get("code"))
        rows.append({
            "MA_LK": view.document.document_id, "STT": str(number),
            "MA_DICH_VU": str(first_coding(report.get("code") if report else observation.get("code")).get("code", "")),
            "MA_CHI_SO": str(code.get("code", "")), "TEN_CHI_SO": concept_text(observation.get("code")),
            "GIA_TRI": value, "DON_VI_DO": unit, "MO_TA": ranges, "KET_LUAN": interpretation,
            "NGAY_KQ": xml_datetime(report.get("issued") or observation.get("effectiveDateTime")),
            "MA_BS_DOC_KQ": canonical.licence((report.get("resultsInterpreter") or [None])[0])[0],
        })
    return rows


def xml7(view: DocumentView, facility: FacilityInfo) -> dict[str, str]:
    """XML7, the discharge paper (giấy ra viện) of a finished inpatient stay."""
    encounter = view.one("Encounter")
    _, final = _diagnoses(view)
    period = encounter.get("period", {})
    doctor, doctor_name = canonical.licence((encounter.get("participant") or [{}])[0].get("individual"))
    return {
        "MA_LK": view.document.document_id, "MA_YTE": view.mrn(),
        "NGAY_VAO": xml_datetime(period.get("start")), "NGAY_RA": xml_datetime(period.get("end")),
        "MA_DINH_CHI_THAI": "0", "CHAN_DOAN_RV": _joined([concept_text(c.get("code")) for c in final]),
        "PP_DIEUTRI": _treatment(view), "MA_BS": doctor, "TEN_BS": doctor_name, "MA_TTDV": facility.head_code,
        "NGAY_CT": xml_datetime(period.get("end")), "MA_THE_TAM": "",
    }


def xml8(view: DocumentView, facility: FacilityInfo) -> dict[str, str]:
    """XML8, the medical-record summary (tóm tắt hồ sơ bệnh án)."""
    encounter = view.one("Encounter")
    admitting, final = _diagnoses(view)
    period = encounter.get("period", {})
    results = [f"{concept_text(o.get('code'))}: {' '.join(p for p in canonical.value_text(o) if p)}"
               for _, o in _labs(view)]
    reason = _joined([concept_text(r) for r in encounter.get("reasonCode", [])])
    return {
        "MA_LK": view.document.document_id,
        "MA_LOAI_KCB": layouts()["codes"]["MA_LOAI_KCB"].get(encounter.get("class", {}).get("code", ""), ""),
        "DON_VI": facility.name, "NGAY_VAO": xml_datetime(period.get("start")),
        "NGAY_RA": xml_datetime(period.get("end")),
        "CHAN_DOAN_VAO": _joined([concept_text(c.get("code")) for c in admitting]) or reason,
        "CHAN_DOAN_RV": _joined([concept_text(c.get("code")) for c in final]),
        "QT_BENHLY": _summary_text(view), "TOMTAT_KQ": _joined(results), "PP_DIEUTRI": _treatment(view),
        "MA_TTDV": facility.head_code,
        "NGAY_CT": xml_datetime(period.get("end") or view.document.bundle.get("timestamp")),
    }


def build_tables(document: Document, facility: FacilityInfo) -> dict[str, bytes]:
    """The XML 130 tables that apply to an episode (XML1 and XML8 always, XML4 with labs, XML7 on discharge).

    A cancelled episode (A11, or a FHIR Encounter cancelled / entered-in-error) gives no tables: nothing
    more is sent for it; withdrawing an earlier submission needs a portal call PORTAL_API.md does not name.
    """
    if document.kind != "episode":
        return {}
    view = DocumentView(document)
    if view.one("Encounter").get("status") in CANCELLED:
        return {}
    tables = {"XML1": render("XML1", [xml1(view, facility)])}
    if labs := xml4(view):
        tables["XML4"] = render("XML4", labs)
    encounter = view.one("Encounter")
    if encounter.get("class", {}).get("code") == "IMP" and encounter.get("status") == "finished" \
            and encounter.get("period", {}).get("end"):
        tables["XML7"] = render("XML7", [xml7(view, facility)])
    tables["XML8"] = render("XML8", [xml8(view, facility)])
    return tables
