"""Turn a health-book document into signed submissions for the national channels (see PORTAL_API.md)."""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from adapters.portal.base import Submission
from gateway.config import HubChannelSettings, PortalSettings
from gateway.signing import Signer
from mappings import checkup1551, xml130
from mappings.model import Document, FacilityInfo

BHXH_CHANNEL = "bhxh_xml130"
HUB_CHANNEL = "moh_checkup"


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


def hub_submission(document_id: str, version: int, body: bytes) -> Submission:
    """A hub message as a submission keyed by document id and version."""
    return Submission(channel=HUB_CHANNEL, idempotency_key=f"{document_id}:v{version}", document_id=document_id,
                      version=version, body=body, content_type="application/json")


def bhxh_submission(document_id: str, version: int, signed_envelope: bytes) -> Submission:
    """A signed XML 130 envelope as a submission keyed by document id (MA_LK) and version."""
    return Submission(channel=BHXH_CHANNEL, idempotency_key=f"{document_id}:v{version}", document_id=document_id,
                      version=version, body=signed_envelope, content_type="application/xml")


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


class DocumentParked(Exception):
    """The document waits: the site mappings lack a code (`ward:NOI-TM`), or the episode still lacks a
    required element (`required:XML1.NGAY_VAO`) a later message will bring. Never sent with a blank."""

    def __init__(self, document: Document, channel: str, codes: tuple[str, ...]) -> None:
        super().__init__(f"{document.idempotency_key} waits for: {' '.join(codes)}")
        self.document, self.channel, self.codes = document, channel, codes


def _bhxh_tables(document: Document, facility: FacilityInfo, site: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The checked tables of an episode; parks it on a gap, refuses it on a defect."""
    claim = xml130.build_claim(document, facility, site)
    if claim.unmapped:
        raise DocumentParked(document, BHXH_CHANNEL, claim.unmapped)
    errors = [issue for issue in claim.issues if issue.severity == "error"]
    missing = tuple(f"required:{issue.location}" for issue in errors if issue.code == "required")
    if errors and len(missing) == len(errors):
        raise DocumentParked(document, BHXH_CHANNEL, missing)
    if errors:
        raise ValueError("XML 130 checks failed: " + "; ".join(f"{i.location} {i.code}" for i in errors[:10]))
    return claim.tables


def build_submissions(document: Document, facility: FacilityInfo, signer: Signer, portal: PortalSettings,
                      now: datetime | None = None, site: Mapping[str, Any] | None = None) -> list[Submission]:
    """Sign one document for the channel that takes its kind; a disabled channel gets nothing.

    Immunizations have no national form in PORTAL_API.md: they go to the hub as the canonical FHIR
    document under `immunization_txn_type`. A SigningError (certificate expired since start-up) is left
    to propagate: it is retryable. An episode the site mappings cannot code yet raises DocumentParked.
    """
    now = now or datetime.now(timezone.utc)
    try:
        if document.kind == "episode" and portal.bhxh.enabled:
            tables = _bhxh_tables(document, facility, site)
            if not tables:  # a cancelled episode (A11): nothing more to send for it
                return []
            envelope = xml130.build_envelope(tables, facility, now)
            return [bhxh_submission(document.document_id, document.version, signer.sign_xml_envelope(envelope))]
        if document.kind == "health_check" and portal.hub.enabled:
            header = hub_header(portal.hub, facility.moh_facility_id, document.idempotency_key, now)
            body = hub_message(header, checkup1551.build_checkup(document, facility), signer)
            return [hub_submission(document.document_id, document.version, body)]
        if document.kind == "immunization" and portal.hub.enabled:
            header = hub_header(portal.hub, facility.moh_facility_id, document.idempotency_key, now,
                                portal.hub.immunization_txn_type)
            body = hub_message(header, document.bundle, signer)
            return [hub_submission(document.document_id, document.version, body)]
    except ValueError as exc:
        raise SubmissionBuildError(f"{document.kind} document {document.idempotency_key}: {exc}") from None
    return []
