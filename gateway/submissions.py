"""Turn a health-book document into the signed body each national channel sends (see PORTAL_API.md).

Each builder takes the document, the version it builds on and its channel's settings, and returns the signed
body, or None when the channel has nothing to send for this version; gateway.channels names which builder
serves which channel.
"""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.signing import Signer
from mappings import checkup1551, xml130
from mappings.model import Document, FacilityInfo
from mappings.xml130 import checkin
from mappings.xml130.lifecycle import claim_ready


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


class Withdrawal:
    """A builder's answer meaning: nothing to send, and the older unsent versions must not go either."""


WITHDRAW = Withdrawal()


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


def bhxh_body(document: Document, previous: Document | None, settings: BhxhChannelSettings,
              facility: FacilityInfo, signer: Signer, now: datetime) -> bytes | Withdrawal | None:
    """An episode as a signed XML 130 envelope, once it is finished (unless `send_files` says every version);
    None for other kinds, an open episode and a cancelled one (A11); WITHDRAW when a finished episode is
    reopened (A13) or cancelled, so that its files still held for late charges do not go."""
    if document.kind != "episode":
        return None
    if settings.send_files == "finished" and not claim_ready(document):
        if previous is not None and previous.bundle.get("entry") and claim_ready(previous):
            return WITHDRAW
        return None  # the claim is not complete yet (or was cancelled): its files wait
    tables = xml130.build_tables(document, facility)
    if not tables:  # a cancelled episode (A11): nothing more to send for it
        return None
    return signer.sign_xml_envelope(xml130.build_envelope(tables, facility, now))


def xml0_checkin_body(document: Document, previous: Document | None, settings: BhxhChannelSettings,
                      facility: FacilityInfo, signer: Signer, _now: datetime) -> bytes | None:
    """The signed XML0 check-in this version makes due (the first cost of the visit, or of the inpatient
    stay, reached since `previous`); None when none is due or check-ins are off."""
    if not settings.checkin_enabled:
        return None
    stages = checkin.due_stages(previous, document, facility)
    if not stages:
        return None
    return signer.sign_xml_envelope(checkin.build_checkin(document, facility, stages[-1]))


def hub_body(document: Document, _previous: Document | None, settings: HubChannelSettings, facility: FacilityInfo,
             signer: Signer, now: datetime) -> bytes | None:
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
