"""Health checks and immunizations as signed messages for the Ministry of Health hub (QĐ 1551 PL02 §4.2).

A health check becomes its QĐ 1551/2062 XML form (mappings.checkup), signed inside: each CKS_NGUOI_KHAM
and CKS_NGUOI_KET_LUAN by the practitioner when the site configured a signing source for that licence
(left empty otherwise, as the QĐ allows), then CKS_BENH_VIEN by the facility, in document order. The
message is `{header, data, signature}` with `data` the Base64 of the signed XML (`data_type` xml/base64)
and `signature` the RSA/SHA-256 checksum over header and data (adapters.portal.wire).
"""
from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from lxml import etree

from gateway.config import HubChannelSettings
from gateway.signing import Signer
from mappings.checkup.build import FormOptions, SignatureSlot, build_form
from mappings.checkup.envelope import build_envelope
from mappings.model import Document, FacilityInfo

VIETNAM = timezone(timedelta(hours=7))
FACILITY_SLOTS = frozenset({"CKS_BENH_VIEN", "CHUKYDONVI"})


def msg_id(sender_id: str, document: Document) -> str:
    """sender_id + YYMMDD + 32 hex (a UUIDv4 without dashes), the same for every retry of one document version.

    The date is the version's own time (Vietnam) and the UUID is drawn from a hash of document id and
    version, so a rebuilt or replayed message is recognised by the hub as the one it already has.
    """
    stamp = str(document.bundle.get("timestamp") or "")
    try:
        day = datetime.fromisoformat(stamp).astimezone(VIETNAM)
    except ValueError:
        day = datetime(2000, 1, 1, tzinfo=VIETNAM)
    digest = hashlib.sha256(f"{sender_id}|{document.document_id}|v{document.version}".encode()).digest()
    return f"{sender_id}{day:%y%m%d}{uuid.UUID(bytes=digest[:16], version=4).hex}"


def hub_header(settings: HubChannelSettings, sender_id: str, message_id: str, sent_at: datetime,
               txn_type: str | None = None, data_type: str = "xml/base64") -> dict[str, Any]:
    """The push header in QĐ 1551 PL02 §4.2 order; send_datetime is Unix time in milliseconds."""
    return {
        "version": settings.message_version,
        "sender_id": sender_id,
        "receiver_id": settings.receiver_id,
        "txn_type": txn_type or settings.txn_type,
        "msg_id": message_id,
        "msg_type": settings.msg_type,
        "data_type": data_type,
        "send_datetime": int(sent_at.timestamp() * 1000),
    }


def hub_message(header: dict[str, Any], payload: bytes, signer: Signer, settings: HubChannelSettings) -> bytes:
    """The body `{header, data, signature}`: data is Base64 of the payload (or {"file_content": it})."""
    text = base64.b64encode(payload).decode("ascii")
    data: str | dict[str, Any] = text if settings.data_shape == "base64" else {"file_content": text}
    signature = signer.sign_hub_message(header, data, settings.checksum_key_order == "sorted")
    return json.dumps({"header": header, "data": data, "signature": signature},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign_form(xml: bytes, slots: tuple[SignatureSlot, ...], facility: Signer,
              practitioners: Mapping[str, Signer]) -> bytes:
    """Sign the CKS_* slots (and an envelope's CHUKYDONVI) in document order: configured practitioners, the
    facility for CKS_BENH_VIEN and CHUKYDONVI; each signature covers every one made before it."""
    who = {(slot.element, slot.group): slot.practitioner for slot in slots}
    elements = {slot.element for slot in slots} | FACILITY_SLOTS
    order = [(str(node.tag), str(parent.tag)) for node in etree.fromstring(xml).iter()
             if node.tag in elements and (parent := node.getparent()) is not None]
    seen: dict[str, int] = {}
    for element, group in order:
        index = seen[element] = seen.get(element, -1) + 1
        signer = facility if element in FACILITY_SLOTS else practitioners.get(who.get((element, group), ""))
        if signer is not None:
            xml = signer.sign_into(xml, index, element)
    return xml


def checkup_message(document: Document, facility: FacilityInfo, signer: Signer,
                    practitioners: Mapping[str, Signer], settings: HubChannelSettings, now: datetime) -> bytes:
    """A health check as its signed form in a signed hub message; ValueError names what the form lacks."""
    form = build_form(document, facility, FormOptions(settings.default_doi_tuong, settings.default_nguon_kinh_phi))
    if form.issues:
        raise ValueError("; ".join(f"{issue.location} {issue.code}" for issue in form.issues))
    header = hub_header(settings, facility.moh_facility_id, msg_id(facility.moh_facility_id, document), now)
    xml = form.xml if settings.packaging == "form" else \
        build_envelope(form.xml, facility.moh_facility_id, now.astimezone(VIETNAM).date())
    return hub_message(header, sign_form(xml, form.slots, signer, practitioners), signer, settings)


def immunization_message(document: Document, facility: FacilityInfo, signer: Signer,
                         settings: HubChannelSettings, now: datetime) -> bytes:
    """An immunization as the canonical FHIR document (json/base64) under `immunization_txn_type`."""
    header = hub_header(settings, facility.moh_facility_id, msg_id(facility.moh_facility_id, document), now,
                        settings.immunization_txn_type, "json/base64")
    payload = json.dumps(document.bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hub_message(header, payload, signer, settings)
