"""The QĐ 1551 health-check document for the Ministry of Health data hub (`data` of sync_checkup)."""
from __future__ import annotations

from typing import Any

from mappings import canonical
from mappings.canonical import DocumentView, concept_text, first_coding, icd10_code, xml_datetime
from mappings.model import Document, FacilityInfo
from mappings.vn import codes, systems

CLASS_CODE = codes.HEALTH_CLASS_CODE
CONCLUSION_CODE = codes.HEALTH_CHECK_CONCLUSION_CODE


def _health_class(view: DocumentView) -> int | None:
    for report in view.all("DiagnosticReport"):
        for concept in report.get("conclusionCode", []):
            coding = first_coding(concept)
            if coding.get("system") == systems.HEALTH_CLASS:
                return int(coding["code"])
    for observation in view.all("Observation"):
        if first_coding(observation.get("code")).get("code") == CLASS_CODE:
            return codes.health_class(str(first_coding(observation.get("valueCodeableConcept")).get("code", "")))
    return None


def _icd10_conclusion(view: DocumentView) -> str:
    """KET_LUAN_BENH: the ICD-10 codes of the check's conditions, separated by ';'."""
    return ";".join(code for code in map(icd10_code, view.ranked_conditions()) if code)


def build_checkup(document: Document, facility: FacilityInfo) -> dict[str, Any]:
    """The health-check record the MoH hub expects within 24 hours, with PHAN_LOAI_SK 1-5.

    Both facility codes appear, each in its own field: MA_CSKCB is the 5-character BHXH code and
    MA_GTIN_CSKCB the 13-digit MoH id, which is also the message sender_id.
    """
    if document.kind != "health_check":
        raise ValueError("only health-check documents have a QĐ 1551 form")
    view = DocumentView(document)
    health_class = _health_class(view)
    if health_class is None:
        raise ValueError("the health-check document has no health class")
    patient, encounter, report = view.one("Patient"), view.one("Encounter"), view.one("DiagnosticReport")
    results = []
    for observation in view.all("Observation"):
        code = first_coding(observation.get("code"))
        if code.get("code") in (CLASS_CODE, CONCLUSION_CODE):
            continue
        value, unit = canonical.value_text(observation)
        results.append({"MA_CHI_SO": str(code.get("code", "")), "TEN_CHI_SO": concept_text(observation.get("code")),
                        "GIA_TRI": value, "DON_VI_DO": unit})
    results.sort(key=lambda row: row["MA_CHI_SO"])
    conclusion = report.get("conclusion") or next(
        (o.get("valueString", "") for o in view.all("Observation")
         if first_coding(o.get("code")).get("code") == CONCLUSION_CODE), "")
    doctor, doctor_name = canonical.licence((report.get("resultsInterpreter") or [None])[0]
                                            or (encounter.get("participant") or [{}])[0].get("individual"))
    return {
        "sender_id": facility.moh_facility_id, "MA_GTIN_CSKCB": facility.moh_facility_id,
        "MA_CSKCB": facility.bhxh_code, "TEN_CSKCB": facility.name,
        "MA_LK": document.document_id, "PHIEN_BAN": document.version,
        "HO_TEN": canonical.name_text(patient), "SO_CCCD": view.identifier(systems.CCCD),
        "MA_THE_BHYT": view.identifier(systems.BHYT), "NGAY_SINH": xml_datetime(patient.get("birthDate"))[:8],
        "GIOI_TINH": canonical.sex_code(patient), "DIA_CHI": canonical.address_text(patient),
        "MATINH_CU_TRU": canonical.province_code(patient),
        "NGAY_KHAM": xml_datetime((encounter.get("period") or {}).get("start") or report.get("effectiveDateTime")),
        "LOAI_KSK": {"MA": str(first_coding(report.get("code")).get("code", "")),
                     "TEN": concept_text(report.get("code"))},
        "KET_QUA": results, "KET_LUAN": conclusion, "KET_LUAN_BENH": _icd10_conclusion(view),
        "PHAN_LOAI_SK": health_class,
        "NGAY_KET_LUAN": xml_datetime(report.get("issued") or document.bundle.get("timestamp")),
        "MA_BS": doctor, "TEN_BS": doctor_name,
    }
