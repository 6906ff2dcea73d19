"""XML4 (laboratory results, with national service and QĐ 1227 indicator codes) and XML5 (clinical course)."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from mappings import canonical
from mappings.canonical import DocumentView, concept_text, first_coding, xml_datetime
from mappings.vn import codes, systems
from mappings.xml130.site import SiteCodes


def joined(texts: list[str]) -> str:
    """Texts joined by "; ", blanks dropped."""
    return "; ".join(t for t in texts if t)


def labs(view: DocumentView) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(report, observation) pairs for laboratory results, the report empty when there is none."""
    reported: dict[str, dict[str, Any]] = {}
    for report in view.all("DiagnosticReport"):
        for reference in report.get("result", []):
            reported[str(reference.get("reference", "")).removeprefix("urn:uuid:")] = report
    found = []
    for observation in view.all("Observation"):
        categories = {c.get("code") for cat in observation.get("category", []) for c in cat.get("coding", [])}
        if "laboratory" in categories and observation.get("status") not in ("cancelled", "entered-in-error"):
            found.append((reported.get(observation["id"], {}), observation))
    return sorted(found, key=lambda pair: (str(pair[1].get("effectiveDateTime", "")), concept_text(pair[1]["code"])))


def _conclusion(report: dict[str, Any], observation: dict[str, Any]) -> str:
    """KET_LUAN as words: the report's conclusion, the result's note, else the interpretation flag in words."""
    notes = joined([str(note.get("text", "")) for note in observation.get("note") or []])
    if notes:
        return notes
    words = codes.xml130("KET_LUAN_BY_INTERPRETATION")
    flags = [str(first_coding(i).get("code", "")).upper() for i in observation.get("interpretation", [])]
    flagged = joined([words.get(flag, "") or concept_text(i) for flag, i in
                      zip(flags, observation.get("interpretation", []), strict=True)])
    return flagged or str(report.get("conclusion", ""))


def xml4(view: DocumentView, site: SiteCodes) -> list[dict[str, str]]:
    """XML4 rows, one per laboratory result, without MA_LK and STT."""
    rows = []
    for report, observation in labs(view):
        value, unit = canonical.value_text(observation)
        national = site.lab(str(first_coding(observation.get("code")).get("code", "")))
        rows.append({
            "MA_DICH_VU": national.get("service", ""), "MA_CHI_SO": national.get("indicator", ""),
            "TEN_CHI_SO": concept_text(observation.get("code")), "GIA_TRI": value, "DON_VI_DO": unit,
            "MO_TA": joined([str(r.get("text", "")) for r in observation.get("referenceRange", [])]),
            "KET_LUAN": _conclusion(report, observation),
            "NGAY_KQ": xml_datetime(report.get("issued") or observation.get("effectiveDateTime")),
            "MA_BS_DOC_KQ": canonical.licence((report.get("resultsInterpreter") or [None])[0])[0],
        })
    return rows


def note_kind(reference: dict[str, Any]) -> str:
    """course, consultation, operation or summary for a DocumentReference (by its HL7 0270 category)."""
    kinds = codes.xml130("NOTE_KINDS")
    for category in reference.get("category") or []:
        for coding in category.get("coding", []):
            if coding.get("system") == systems.V2_0270 and str(coding.get("code", "")).upper() in kinds:
                return str(kinds[str(coding["code"]).upper()])
    return "summary"


def note_text(reference: dict[str, Any]) -> str:
    """The plain text a DocumentReference carries; "" when it holds none that decodes."""
    texts = []
    for content in reference.get("content", []):
        data = content.get("attachment", {}).get("data")
        try:
            texts.append(base64.b64decode(data).decode("utf-8") if data else "")
        except (binascii.Error, UnicodeDecodeError):
            continue
    return "\n".join(t for t in texts if t)


def xml5(view: DocumentView) -> list[dict[str, str]]:
    """XML5 rows: progress, consultation and operation notes (MDM, DocumentReference) and ClinicalImpressions."""
    rows = []
    for reference in view.all("DocumentReference"):
        kind = note_kind(reference)
        if kind == "summary" or reference.get("status") == "entered-in-error":
            continue
        text = note_text(reference)
        rows.append({"DIEN_BIEN_LS": text, "HOI_CHAN": text if kind == "consultation" else "",
                     "PHAU_THUAT": text if kind == "operation" else "",
                     "THOI_DIEM_DBLS": xml_datetime(reference.get("date")),
                     "NGUOI_THUC_HIEN": canonical.licence((reference.get("author") or [None])[0])[0]})
    for impression in view.all("ClinicalImpression"):
        if impression.get("status") == "entered-in-error":
            continue
        rows.append({"DIEN_BIEN_LS": str(impression.get("description") or impression.get("summary") or ""),
                     "GIAI_DOAN_BENH": str(impression.get("summary", "")) if impression.get("description") else "",
                     "THOI_DIEM_DBLS": xml_datetime(impression.get("effectiveDateTime") or impression.get("date")),
                     "NGUOI_THUC_HIEN": canonical.licence(impression.get("assessor"))[0]})
    return sorted(rows, key=lambda r: r["THOI_DIEM_DBLS"])
