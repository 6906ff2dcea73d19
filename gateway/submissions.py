"""Turn a health-book document into the signed body each national channel sends (see PORTAL_API.md).

Each builder takes the document and its channel's settings and returns the signed body, or None when the
channel does not take that kind of document; gateway.channels names which builder serves which channel.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.signing import Signer
from mappings import checkup1551, xml130
from mappings.model import Document, FacilityInfo


def hub_header(settings: HubChannelSettings, sender_id: str, msg_id: str, sent_at: datetime,
               txn_type: str | None = None) -> dict[str, Any]:
    """The hub message header; msg_id is the idempotency key so the hub recognises a retransmission."""
    return {
        "sender_id": sender_id,
        "receiver_id": settings.receiver_id,
        "txn_type": txn_type or settings.txn_type,
        "msg_id": msg_id,
        "version": settings.message_version,
        "send_date": sent_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def hub_message(header: dict[str, Any], data: dict[str, Any], signer: Signer) -> bytes:
    """The hub body `{header, data: base64(JSON), signature}`, signed by the facility."""
    data_b64 = base64.b64encode(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    data_text = data_b64.decode("ascii")
    message = {"header": header, "data": data_text, "signature": signer.sign_hub_message(header, data_text)}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


class DocumentParked(Exception):
    """The document waits: the site mappings lack a code (`ward:NOI-TM`), or the episode still lacks a
    required element (`required:XML1.NGAY_VAO`) a later message will bring. Never sent with a blank."""

    def __init__(self, document: Document, codes: tuple[str, ...], channel: str = "") -> None:
        super().__init__(f"{document.idempotency_key} waits for: {' '.join(codes)}")
        self.document, self.codes, self.channel = document, codes, channel


def bhxh_tables(document: Document, facility: FacilityInfo, site: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The checked XML 130 tables of an episode; parks it on a gap, refuses it (ValueError) on a defect."""
    claim = xml130.build_claim(document, facility, site)
    if claim.unmapped:
        raise DocumentParked(document, claim.unmapped)
    errors = [issue for issue in claim.issues if issue.severity == "error"]
    missing = tuple(f"required:{issue.location}" for issue in errors if issue.code == "required")
    if errors and len(missing) == len(errors):
        raise DocumentParked(document, missing)
    if errors:
        raise ValueError("XML 130 checks failed: " + "; ".join(f"{i.location} {i.code}" for i in errors[:10]))
    return claim.tables


def bhxh_body(document: Document, _settings: BhxhChannelSettings, facility: FacilityInfo, signer: Signer,
              now: datetime, site: Mapping[str, Any] | None = None) -> bytes | None:
    """An episode as a signed XML 130 envelope; None for other kinds and for a cancelled episode (A11).

    An episode the site mappings cannot code yet raises DocumentParked: it is stored and waits.
    """
    if document.kind != "episode":
        return None
    tables = bhxh_tables(document, facility, site)
    if not tables:  # a cancelled episode (A11): nothing more to send for it
        return None
    return signer.sign_xml_envelope(xml130.build_envelope(tables, facility, now))


def hub_body(document: Document, settings: HubChannelSettings, facility: FacilityInfo, signer: Signer,
             now: datetime, _site: Mapping[str, Any] | None = None) -> bytes | None:
    """A health check or an immunization as a signed hub message; None for other kinds.

    Immunizations have no national form in PORTAL_API.md: they go to the hub as the canonical FHIR
    document under `immunization_txn_type`.
    """
    if document.kind == "health_check":
        header = hub_header(settings, facility.moh_facility_id, document.idempotency_key, now)
        return hub_message(header, checkup1551.build_checkup(document, facility), signer)
    if document.kind == "immunization":
        header = hub_header(settings, facility.moh_facility_id, document.idempotency_key, now,
                            settings.immunization_txn_type)
        return hub_message(header, document.bundle, signer)
    return None
