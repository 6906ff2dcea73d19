"""Turn a health-book document into signed submissions for the national channels (see PORTAL_API.md)."""
from __future__ import annotations

import base64
import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

from adapters.portal.base import Submission
from gateway.config import HubChannelSettings, PortalSettings
from gateway.signing import Signer
from mappings import checkup1551, xml130
from mappings.model import Document, FacilityInfo
from mappings.xml130 import checkin
from mappings.xml130.lifecycle import claim_ready

BHXH_CHANNEL = "bhxh_xml130"
BHXH_CHECKIN_CHANNEL = "bhxh_checkin"  # XML0 check-ins: the BHXH client too, queued apart from the files
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


def checkin_submission(document: Document, stage: str, signed_checkin: bytes) -> Submission:
    """A signed XML0 check-in as a submission of its own, on the check-in channel (the same portal client):
    a newer version of the episode's files never supersedes it, and its key names the episode (MA_LK) and
    the stage, so a rebuilt one is never sent twice. A newer stage supersedes an older one still unsent."""
    return Submission(channel=BHXH_CHECKIN_CHANNEL, idempotency_key=f"{document.document_id}:XML0-{stage}",
                      document_id=document.document_id, version=document.version, body=signed_checkin,
                      content_type="application/xml")


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


def _checkins(document: Document, previous: Document | None, facility: FacilityInfo, signer: Signer,
              portal: PortalSettings) -> list[Submission]:
    """The XML0 check-ins this version of the episode makes due, signed, each a submission of its own."""
    if not portal.bhxh.checkin_enabled:
        return []
    return [checkin_submission(document, stage,
                               signer.sign_xml_envelope(checkin.build_checkin(document, facility, stage)))
            for stage in checkin.due_stages(previous, document, facility)]


def build_submissions(document: Document, facility: FacilityInfo, signer: Signer, portal: PortalSettings,
                      now: datetime | None = None, previous: Document | None = None) -> list[Submission]:
    """Sign one document for the channel that takes its kind; a disabled channel gets nothing.

    An episode gives the check-ins it makes due (compared with `previous`, the version it builds on)
    before its files: the outbox sends one patient's submissions in order, so BHXH hears of the visit
    before it gets the claim. Its files come only once it is finished (unless `send_files` says every
    version), held `claim_delay_seconds` for late charges; each later version is a correction.

    Immunizations have no national form in PORTAL_API.md: they go to the hub as the canonical FHIR
    document under `immunization_txn_type`. A SigningError (certificate expired since start-up) is left
    to propagate: it is retryable.
    """
    now = now or datetime.now(timezone.utc)
    try:
        if document.kind == "episode" and portal.bhxh.enabled:
            checkins = _checkins(document, previous, facility, signer, portal)
            if portal.bhxh.send_files == "finished" and not claim_ready(document):
                return checkins  # the claim is not complete yet (or was cancelled): its files wait
            tables = xml130.build_tables(document, facility)
            if not tables:  # a cancelled episode (A11): nothing more to send for it
                return checkins
            envelope = xml130.build_envelope(tables, facility, now)
            files = bhxh_submission(document.document_id, document.version, signer.sign_xml_envelope(envelope))
            held = now.timestamp() + portal.bhxh.claim_delay_seconds  # late charges may still come
            return checkins + [dataclasses.replace(files, not_before=held)]
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
