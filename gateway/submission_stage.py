"""The submission stage: signed submissions go to their portal, several at once, each with an explicit end.

Up to `pipeline.workers` submissions are in flight together, across channels and patients; the store never
hands out a patient's next submission while an earlier one is pending or in flight, so a patient's
documents still arrive in order. Each attempt ends one of three ways: delivered (the receipt archived),
retry later (transient: the portal's Retry-After or backoff), or dead-lettered (refused for good). The
store's leases make a crash at any point re-queue the work, and the idempotency key makes a repeated
attempt harmless.
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass

from adapters.portal.base import PermanentPortalError, PortalChannel, Receipt, TransientPortalError
from gateway.config import PipelineSettings
from gateway.logs import correlation, get_logger
from gateway.metrics import Metrics
from gateway.retry import backoff_delay
from gateway.store import ClaimedSubmission, Store

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivered:
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class RetryLater:
    retry_after: float | None  # the portal's Retry-After, if it gave one
    label: str  # bounded metric label
    detail: str  # kept for operators


@dataclass(frozen=True, slots=True)
class Refused:
    label: str
    reason: str  # the portal's own words
    status: int | None


Attempt = Delivered | RetryLater | Refused


def reason_label(exc: Exception) -> str:
    """A bounded label for a portal failure: the portal's result code, else the HTTP status, never free text."""
    result_code = re.sub(r"[^0-9A-Za-z]", "", getattr(exc, "result_code", ""))[:12]
    if result_code:
        return f"result_{result_code}"
    status = getattr(exc, "status", None)
    if status:
        return f"http_{status}"
    return "no_answer" if isinstance(exc, TransientPortalError) else "rejected"


async def attempt(channel: PortalChannel | None, item: ClaimedSubmission) -> Attempt:
    """One attempt at the portal, its end as a value; never raises for what the portal or client did."""
    submission = item.submission
    if channel is None:
        return RetryLater(None, "channel_disabled", f"channel {submission.channel} is disabled")
    try:
        return Delivered(await channel.submit(submission))
    except TransientPortalError as exc:
        return RetryLater(exc.retry_after, reason_label(exc), exc.reason)
    except PermanentPortalError as exc:
        return Refused(reason_label(exc), exc.reason, exc.status)
    except Exception as exc:  # an unexpected client failure must not lose the document
        log.exception("submission_unexpected_error", outbox_id=item.id)
        return RetryLater(None, "client_error", f"unexpected {type(exc).__name__}")


class SubmissionStage:
    """Claims due submissions as slots free up and records how each attempt ended."""

    def __init__(self, store: Store, metrics: Metrics, settings: PipelineSettings,
                 channels: dict[str, PortalChannel], stopping: asyncio.Event) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._channels = channels
        self._stopping = stopping
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until stopped: fill free slots with due submissions; on stop, finish the attempts under way."""
        while not self._stopping.is_set():
            free = self._settings.workers - len(self._in_flight)
            claimed: list[ClaimedSubmission] = []
            if free > 0:
                try:
                    claimed = await self._store.claim_submissions(free)
                except Exception:
                    log.exception("submission_stage_error")
                    await asyncio.sleep(self._settings.poll_interval_seconds)
                    continue
            for item in claimed:
                task = asyncio.create_task(self._deliver(item), name=f"submit-{item.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if not claimed:
                await self._wait()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _wait(self) -> None:
        """Until new submissions are queued, an attempt ends, or the poll interval passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._store.outbox_ready.wait(), self._settings.poll_interval_seconds)
        self._store.outbox_ready.clear()

    async def _deliver(self, item: ClaimedSubmission) -> None:
        submission = item.submission
        with correlation(submission.idempotency_key, channel=submission.channel):
            try:
                await self._record(item, await attempt(self._channels.get(submission.channel), item))
            except Exception:  # the store failed: the lease runs out and the attempt is made again
                log.exception("submission_stage_error", outbox_id=item.id)
            finally:
                self._store.outbox_ready.set()  # a slot is free, and the patient's next may be due

    async def _record(self, item: ClaimedSubmission, end: Attempt) -> None:
        """Keep how the attempt ended, in the store, the metrics and the log."""
        channel = item.submission.channel
        if isinstance(end, Delivered):
            await self._store.mark_delivered(item.id, end.receipt)
            self._metrics.submissions.labels(channel).inc()
            self._metrics.last_success.labels(channel).set(time.time())
            log.info("submission_delivered", outbox_id=item.id, transaction_id=end.receipt.transaction_id,
                     attempts=item.attempts)
        elif isinstance(end, Refused):
            self._metrics.failed_syncs.labels(channel, end.label).inc()
            log.error("submission_dead_lettered", outbox_id=item.id, status=end.status, reason=end.reason)
            await self._store.dead_letter_submission(item.id, end.reason)
        else:
            delay = end.retry_after if end.retry_after is not None else backoff_delay(item.attempts, self._settings)
            self._metrics.submit_retries.labels(channel, end.label).inc()
            log.warning("submission_retry", outbox_id=item.id, attempts=item.attempts,
                        delay_seconds=round(delay, 2), reason=end.label)
            await self._store.schedule_retry(item.id, delay, end.detail)
