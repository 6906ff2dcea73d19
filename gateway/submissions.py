"""Turn a health-book document into signed submissions for the national channels (see PORTAL_API.md)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from adapters.portal.base import Submission
from gateway.config import PortalSettings
from gateway.hub_message import HUB_CHANNEL, checkup_submission, immunization_submission
from gateway.signing import Signer
from mappings import xml130
from mappings.model import Document, FacilityInfo

BHXH_CHANNEL = "bhxh_xml130"
__all__ = ["BHXH_CHANNEL", "HUB_CHANNEL", "SubmissionBuildError", "bhxh_submission", "build_submissions"]


def bhxh_submission(document_id: str, version: int, signed_envelope: bytes) -> Submission:
    """A signed XML 130 envelope as a submission keyed by document id (MA_LK) and version."""
    return Submission(channel=BHXH_CHANNEL, idempotency_key=f"{document_id}:v{version}", document_id=document_id,
                      version=version, body=signed_envelope, content_type="application/xml")


class SubmissionBuildError(ValueError):
    """The document cannot become a portal submission: dead-letter it with this reason, retrying cannot help."""


def build_submissions(document: Document, facility: FacilityInfo, signer: Signer, portal: PortalSettings,
                      now: datetime | None = None, practitioners: Mapping[str, Signer] | None = None
                      ) -> list[Submission]:
    """Sign one document for the channel that takes its kind; a disabled channel gets nothing.

    Health checks go to the hub as the signed QĐ 1551/2062 XML form (gateway.hub_message), practitioners
    signing their blocks where `practitioners` has their licence. Immunizations have no national form in
    PORTAL_API.md: they go to the hub as the canonical FHIR document under `immunization_txn_type`.
    A SigningError (certificate expired since start-up) is left to propagate: it is retryable.
    """
    now = now or datetime.now(timezone.utc)
    try:
        if document.kind == "episode" and portal.bhxh.enabled:
            tables = xml130.build_tables(document, facility)
            if not tables:  # a cancelled episode (A11): nothing more to send for it
                return []
            envelope = xml130.build_envelope(tables, facility, now)
            return [bhxh_submission(document.document_id, document.version, signer.sign_xml_envelope(envelope))]
        if document.kind == "health_check" and portal.hub.enabled:
            return [checkup_submission(document, facility, signer, practitioners or {}, portal.hub, now)]
        if document.kind == "immunization" and portal.hub.enabled:
            return [immunization_submission(document, facility, signer, portal.hub, now)]
    except ValueError as exc:
        raise SubmissionBuildError(f"{document.kind} document {document.idempotency_key}: {exc}") from None
    return []
