"""XML0, the check-in (bảng trạng thái KCB) BHXH wants at the first cost of a visit and of an inpatient stay.

Rules (QĐ 130 Đ3 k1 as amended by QĐ 4750 Đ2 k2; field list and sources in xml0.json):
- stage "visit": sent right after the first chargeable item of the episode;
- stage "inpatient": sent again after the first chargeable item at or after the inpatient admission
  (one check-in only, with NGAY_VAO_NOI_TRU, when the episode is an inpatient stay from its first cost);
- none for an emergency (MA_DOITUONG_KCB "2", or an emergency encounter while the category is unknown),
  and none for a cancelled episode.
A stage is due when the new version of the episode reaches it and the previous version had not, so each
check-in is built once; its idempotency key names the stage, so a rebuilt one is never sent twice.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from mappings.canonical import DocumentView, concept_text, first_coding, xml_datetime
from mappings.model import Document, FacilityInfo
from mappings.xml130.layout import document_bytes, element, field_elements
from mappings.xml130.site import SiteCodes
from mappings.xml130.tables import CANCELLED, inpatient_admission, patient_category, xml1

VISIT = "visit"
INPATIENT = "inpatient"
_DATE_FIELDS = ("occurrenceDateTime", "performedDateTime", "effectiveDateTime", "authoredOn", "whenHandedOver",
                "whenPrepared", "issued", "dateAsserted")
_PERIOD_FIELDS = ("performedPeriod", "effectivePeriod", "occurrencePeriod")
_CODE_FIELDS = ("code", "medicationCodeableConcept")


@cache
def layout() -> dict[str, Any]:
    """The XML0 layout and sending rules, kept as data (xml0.json) with their sources."""
    text = resources.files("mappings.xml130").joinpath("xml0.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _when(resource: dict[str, Any]) -> str:
    for name in _DATE_FIELDS:
        if resource.get(name):
            return str(resource[name])
    for name in _PERIOD_FIELDS:
        if (resource.get(name) or {}).get("start"):
            return str(resource[name]["start"])
    return ""


def _concept(resource: dict[str, Any]) -> dict[str, Any]:
    for name in _CODE_FIELDS:
        if resource.get(name):
            concept: dict[str, Any] = resource[name]
            return concept
    supplied: dict[str, Any] = (resource.get("suppliedItem") or {}).get("itemCodeableConcept") or {}
    return supplied


def _chargeable(view: DocumentView) -> list[tuple[str, str, dict[str, Any]]]:
    """(local yyyyMMddHHmm, kind, resource) of every item with a cost, earliest first."""
    kinds: dict[str, str] = layout()["chargeable"]
    items = [(xml_datetime(_when(resource)), kinds[resource["resourceType"]], resource)
             for resource in view.resources if resource.get("resourceType") in kinds
             and resource.get("status") not in CANCELLED]
    return sorted(items, key=lambda item: (item[0] or "9" * 12, item[2].get("id", "")))


def _inpatient_since(view: DocumentView, summary: dict[str, str]) -> str:
    encounter = view.one("Encounter")
    if encounter.get("class", {}).get("code") != "IMP":
        return ""
    return summary.get("NGAY_VAO_NOI_TRU") or xml_datetime((encounter.get("period") or {}).get("start"))


def _exempt(view: DocumentView, summary: dict[str, str]) -> bool:
    rules = layout()
    encounter = view.one("Encounter")
    if encounter.get("status") in CANCELLED:
        return True
    category = summary.get("MA_DOITUONG_KCB", "")
    if category:
        return category in rules["exempt_patient_categories"]
    return encounter.get("class", {}).get("code") in rules["emergency_encounter_classes"]


def _reached(view: DocumentView, site: Mapping[str, Any] | None) -> set[str]:
    """The stages this version of the episode has reached (none before its first cost: nothing else is read)."""
    items = _chargeable(view)
    if not items:
        return set()
    encounter = view.one("Encounter")
    summary = {"MA_DOITUONG_KCB": patient_category(encounter, SiteCodes(site)),
               "NGAY_VAO_NOI_TRU": inpatient_admission(encounter)} if encounter else {}
    if _exempt(view, summary):
        return set()
    admitted = _inpatient_since(view, summary)
    if not admitted:
        return {VISIT}
    if any(when and when >= admitted for when, _, _ in items):
        return {VISIT, INPATIENT}
    return {VISIT}


def _summary(view: DocumentView, facility: FacilityInfo, site: Mapping[str, Any] | None) -> dict[str, str]:
    return xml1(view, facility, SiteCodes(site)) if view.one("Encounter") else {}


def due_stages(previous: Document | None, document: Document, facility: FacilityInfo,
               site: Mapping[str, Any] | None = None) -> list[str]:
    """The check-ins this version makes due: the stages it reached that the previous version had not.

    When both are reached at once (an inpatient stay from its first cost) only the inpatient one is due.
    """
    if document.kind != "episode":
        return []
    reached = _reached(DocumentView(document), site)
    if reached and previous is not None and previous.bundle.get("entry"):
        reached -= _reached(DocumentView(previous), site)
    if INPATIENT in reached:
        return [INPATIENT]
    return sorted(reached)


def checkin_row(document: Document, facility: FacilityInfo, stage: str,
                site: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The TRANG_THAI_KCB row: the episode summary's identity and card fields, and the first cost of the stage."""
    view = DocumentView(document)
    summary = _summary(view, facility, site)
    fields: list[str] = layout()["fields"]
    row = {name: summary.get(name, "") for name in fields}
    admitted = _inpatient_since(view, summary) if stage == INPATIENT else ""
    items = [item for item in _chargeable(view) if not admitted or (item[0] and item[0] >= admitted)]
    row.update({"STT": "1", "NGAY_VAO_NOI_TRU": admitted, "MA_CSKCB": facility.bhxh_code})
    if items:
        when, kind, resource = items[0]
        code_field, name_field = layout()["item_fields"][kind]
        concept = _concept(resource)
        row.update({code_field: str(first_coding(concept).get("code", "")), name_field: concept_text(concept),
                    "NGAY_YL": when})
    return row


def build_checkin(document: Document, facility: FacilityInfo, stage: str,
                  site: Mapping[str, Any] | None = None) -> bytes:
    """The unsigned XML0 document of one stage, ending with the empty CHUKYDONVI its signature goes in."""
    rules = layout()
    row = element(rules["row"], field_elements(rules["fields"], checkin_row(document, facility, stage, site)))
    return document_bytes(element(rules["root"], element(rules["list"], row) + element("CHUKYDONVI", "")))
