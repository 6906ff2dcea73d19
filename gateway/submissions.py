"""Turn a health-book document into the signed body each national channel sends (see PORTAL_API.md).

Each builder takes the document, its channel's settings, the facility, the facility signer, the time and the
practitioners' signers (by licence), and returns the signed body, or None when the channel does not take
that kind of document; gateway.channels names which builder serves which channel.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.config import BhxhChannelSettings, HubChannelSettings
from gateway.hub_message import checkup_message, immunization_message
from gateway.signing import Signer
from mappings import xml130
from mappings.model import Document, FacilityInfo


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


def bhxh_body(document: Document, _settings: BhxhChannelSettings, facility: FacilityInfo, signer: Signer,
              now: datetime, _practitioners: Mapping[str, Signer]) -> bytes | None:
    """An episode as a signed XML 130 envelope; None for other kinds and for a cancelled episode (A11)."""
    if document.kind != "episode":
        return None
    tables = xml130.build_tables(document, facility)
    if not tables:  # a cancelled episode (A11): nothing more to send for it
        return None
    return signer.sign_xml_envelope(xml130.build_envelope(tables, facility, now))


def hub_body(document: Document, settings: HubChannelSettings, facility: FacilityInfo, signer: Signer,
             now: datetime, practitioners: Mapping[str, Signer]) -> bytes | None:
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
