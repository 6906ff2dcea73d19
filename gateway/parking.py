"""Documents held back until the site mappings can code them: rebuilt at start-up and by `parked rebuild`.

An episode whose ward, charge item, lab test or patient category the settings do not map yet is stored
and acknowledged like any other, but not sent: the portal would get a blank where a national code
belongs. Once the mapping is added to [site_mappings], a rebuild signs and queues the latest version.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from adapters.portal.base import Submission
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.store import Parked, Store
from gateway.submissions import DocumentParked, SubmissionBuildError
from mappings.model import Document

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild did: queued for the portal, still waiting, or refused (a defect, logged)."""

    queued: list[str]
    waiting: list[Parked]
    refused: list[str]


async def rebuild_parked(store: Store, build: Callable[[Document, Document | None], list[Submission]],
                         metrics: Metrics | None = None) -> RebuildReport:
    """Build every parked document again with the current settings; queue those that are complete now.

    It is built as if nothing had been sent before it: what its other channels built then (a check-in) has
    the same idempotency key as what was queued already, so it is not sent twice.
    """
    report = RebuildReport([], [], [])
    for waiting in await store.parked():
        document = await store.latest_document(waiting.document_id)
        if document is None or document.version != waiting.version or not document.bundle:
            continue  # a newer version was built since (or the bundle was purged): nothing to rebuild here
        try:
            submissions = await asyncio.to_thread(build, document, None)
        except DocumentParked as still:
            await store.release_parked(waiting, document.patient_key, [], still.codes)
            report.waiting.append(Parked(waiting.document_id, waiting.version, waiting.channel, still.codes,
                                         waiting.first_received_at))
            continue
        except SubmissionBuildError as exc:
            log.error("parked_rebuild_refused", document_id=waiting.document_id, reason=str(exc))
            report.refused.append(waiting.document_id)
            continue
        await store.release_parked(waiting, document.patient_key, submissions)
        report.queued.append(waiting.document_id)
        log.info("parked_document_queued", document_id=waiting.document_id, version=waiting.version,
                 submissions=len(submissions))
    if metrics is not None:
        metrics.documents_waiting.set(len(report.waiting) + len(report.refused))
    return report
