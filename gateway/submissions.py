"""Turn a health-book document into the signed body each national channel sends (see PORTAL_API.md).

Each builder takes the document, the version it builds on, its channel's settings, the facility, the facility
signer, the time and the practitioners' signers (by licence), and returns the signed body, or None when the
channel has nothing to send for this version; gateway.channels names which builder serves which channel.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.portal.base import Submission
from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.hub_message import checkup_message, immunization_message
from gateway.signing import Signer
from mappings import xml130
from mappings.model import Document, FacilityInfo
from mappings.xml130 import checkin
from mappings.xml130.lifecycle import claim_ready


class Withdrawal:
    """A builder's answer meaning: nothing to send, and the older unsent versions must not go either."""


WITHDRAW = Withdrawal()


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


class DocumentParked(Exception):
    """The document waits: the site mappings lack a code (`ward:NOI-TM`), or the episode still lacks a
    required element (`required:XML1.NGAY_VAO`) a later message will bring. Never sent with a blank.
    `ready` holds what the other channels built for the same version (a check-in): those go now."""

    def __init__(self, document: Document, codes: tuple[str, ...], channel: str = "",
                 ready: Sequence[Submission] = ()) -> None:
        super().__init__(f"{document.idempotency_key} waits for: {' '.join(codes)}")
        self.document, self.codes, self.channel, self.ready = document, codes, channel, list(ready)


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


def bhxh_body(document: Document, previous: Document | None, settings: BhxhChannelSettings,
              facility: FacilityInfo, signer: Signer, now: datetime,
              _practitioners: Mapping[str, Signer], site: Mapping[str, Any] | None = None) -> bytes | Withdrawal | None:
    """An episode as a signed XML 130 envelope, once it is finished (unless `send_files` says every version);
    None for other kinds, an open episode and a cancelled one (A11); WITHDRAW when a finished episode is
    reopened (A13) or cancelled, so that its files still held for late charges do not go. An episode the
    site mappings (`site`) cannot code yet raises DocumentParked: it is stored and waits."""
    if document.kind != "episode":
        return None
    if settings.send_files == "finished" and not claim_ready(document):
        if previous is not None and previous.bundle.get("entry") and claim_ready(previous):
            return WITHDRAW
        return None  # the claim is not complete yet (or was cancelled): its files wait
    tables = bhxh_tables(document, facility, site)
    if not tables:  # a cancelled episode (A11): nothing more to send for it
        return None
    return signer.sign_xml_envelope(xml130.build_envelope(tables, facility, now))


def xml0_checkin_body(document: Document, previous: Document | None, settings: BhxhChannelSettings,
                      facility: FacilityInfo, signer: Signer, _now: datetime,
                      _practitioners: Mapping[str, Signer], site: Mapping[str, Any] | None = None) -> bytes | None:
    """The signed XML0 check-in this version makes due (the first cost of the visit, or of the inpatient
    stay, reached since `previous`); None when none is due or check-ins are off."""
    if not settings.checkin_enabled:
        return None
    stages = checkin.due_stages(previous, document, facility, site)
    if not stages:
        return None
    return signer.sign_xml_envelope(checkin.build_checkin(document, facility, stages[-1], site))


def hub_body(document: Document, _previous: Document | None, settings: HubChannelSettings, facility: FacilityInfo,
             signer: Signer, now: datetime, practitioners: Mapping[str, Signer],
             _site: Mapping[str, Any] | None = None) -> bytes | None:
    """A health check or an immunization as a signed hub message; None for other kinds.

    Health checks go as the signed QĐ 1551/2062 XML form (gateway.hub_message), practitioners signing their
    blocks where `practitioners` has their licence. Immunizations have no national form in PORTAL_API.md:
    they go to the hub as the canonical FHIR document under `immunization_txn_type`.
    """
    if document.kind == "health_check":
        return checkup_message(document, facility, signer, practitioners, settings, now)
    if document.kind == "immunization":
        return immunization_message(document, facility, signer, settings, now)
    return None
