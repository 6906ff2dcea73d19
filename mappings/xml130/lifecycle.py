"""When an episode's XML 130 files are complete enough to send to BHXH.

TT 48/2017 Đ6 k1: the data go "right after the end of the visit, of the outpatient course or of the inpatient
stay" (nguyen2887/vn-healthcare research/deep/BHYT-DATA.md R05). An episode is finished when its Encounter
is `finished` (HL7 A03; a FHIR Encounter the HIS closed) or has an end time; a cancelled one (A11, FHIR
cancelled / entered-in-error) never is, and a reopened one (A13) is not until it is finished again.
Corrections after that (a late charge, the discharge summary, NGAY_TTOAN once paid: R06) are new versions
of the same MA_LK and are sent again; the portal keeps the newest file of an MA_LK.
"""
from __future__ import annotations

from mappings.canonical import DocumentView
from mappings.model import Document
from mappings.xml130.tables import CANCELLED


def claim_ready(document: Document) -> bool:
    """Whether this version of an episode is finished, so its files may go to BHXH."""
    if document.kind != "episode":
        return False
    encounter = DocumentView(document).one("Encounter")
    status = encounter.get("status")
    if status in CANCELLED:
        return False
    ended = bool((encounter.get("period") or {}).get("end"))
    return status == "finished" or (ended and status != "in-progress")
