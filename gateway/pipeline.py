"""Pipeline workers: inbox -> mapped documents -> signed outbox -> national portal -> stored receipt.

The mapping stage applies messages in the order they were acknowledged (so a patient's documents are
built in the order produced); mapping itself runs in a worker process, off the event loop, because
full HL7 parsing is slow. The submission stage makes one attempt per claim; the store's leases make a
crash at any point re-queue the work, and the idempotency key makes a repeated attempt harmless.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

from adapters.portal.base import PermanentPortalError, PortalChannel, Submission, TransientPortalError
from gateway.config import PipelineSettings
from gateway.logs import correlation, get_logger
from gateway.metrics import Metrics
from gateway.signing import SigningError
from gateway.store import ClaimedMessage, ClaimedSubmission, MappingOutcome, Parked, Store, StoreError
from gateway.submissions import DocumentParked, SubmissionBuildError
from mappings.document import assemble
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import Document, MappingResult

log = get_logger(__name__)

BuildSubmissions = Callable[[Document, Document | None], list[Submission]]  # (new version, the one it builds on)
MAPPING_BATCH = 32
MAPPING_NICENESS = 5
MAX_MAPPING_ATTEMPTS = 5  # a message that crashes the mapping stage this often is parked, not retried forever
ENVIRONMENT_ERRORS = (SigningError, StoreError, BrokenExecutor)  # failures of the surroundings, not a message


def record_parked(metrics: Metrics, waiting: Parked) -> None:
    """Count a document's wait by kind of gap and log the codes (hospital codes, no personal data)."""
    for kind in sorted({code.split(":", 1)[0] for code in waiting.codes}):
        metrics.documents_parked.labels(kind).inc()
    log.warning("document_parked", document_id=waiting.document_id, version=waiting.version,
                channel=waiting.channel, codes=list(waiting.codes))


class MappingWorkerDied(RuntimeError):
    """A mapping worker died with only this message in flight: the message is the likely cause."""


def map_payload(source: str, payload: bytes) -> MappingResult:
    """Map one stored payload; a top-level function so a worker process can run it."""
    if source == "fhir":
        return map_fhir(json.loads(payload))
    return map_message(payload.decode("utf-8"))


def _exit_with_parent(parent_pid: int) -> None:
    """Worker start-up: leave when the gateway is gone (kill -9 included), instead of lingering as an orphan.

    The worker also yields the CPU to the gateway process (nice +5): when both are busy, a sender waiting for
    its acknowledgement comes before mapping a message that is already safe on disk.
    """
    try:
        os.nice(MAPPING_NICENESS)
    except OSError:  # a sandbox that forbids setpriority: map at the gateway's priority rather than not at all
        pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def mapping_executor(processes: int) -> Executor:
    """Worker processes for mapping, direct children of the gateway (spawn: the gateway has threads,
    so plain fork is unsafe) that exit on their own if the gateway dies."""
    if processes <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mapping")
    return ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def backoff_delay(attempts: int, settings: PipelineSettings) -> float:
    """Exponential backoff with equal jitter, capped, so a portal outage is not hammered in lock-step."""
    ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _summarise(result: MappingResult) -> str:
    return "; ".join(f"{issue.location} {issue.code}: {issue.message}"
                     for issue in result.issues if issue.severity == "error")


class Pipeline:
    """The workers behind the listeners; start() and stop() are the whole lifecycle."""

    def __init__(self, store: Store, metrics: Metrics, settings: PipelineSettings,
                 build_submissions: BuildSubmissions, channels: dict[str, PortalChannel],
                 new_executor: Callable[[], Executor]) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._build_submissions = build_submissions
        self._channels = channels
        self._new_executor = new_executor
        self._executor = new_executor()
        self._isolate_through = 0  # after a mapping worker died: map one message at a time up to this id
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._mapping_pause = 0.0
        self._surrounding_failures = 0

    async def start(self) -> None:
        self._executor.submit(os.getpid)  # start the mapping workers now, not when the first message waits on them
        self._tasks.append(asyncio.create_task(self._mapping_loop(), name="pipeline-mapping"))
        for number in range(self._settings.workers):
            self._tasks.append(asyncio.create_task(self._submission_loop(), name=f"pipeline-submit-{number}"))

    async def stop(self) -> None:
        """Finish the steps in progress, then stop; unfinished work stays leased and is re-queued."""
        self._stopping.set()
        self._store.inbox_ready.set()
        self._store.outbox_ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _wait(self, event: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(event.wait(), self._settings.poll_interval_seconds)
        except TimeoutError:
            pass
        event.clear()

    # ---- mapping -------------------------------------------------------------------------------

    async def _mapping_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = await self._store.claim_messages(1 if self._isolate_through else MAPPING_BATCH)
                if not messages:
                    await self._wait(self._store.inbox_ready)
                    continue
                await self._map_batch(messages)
            except Exception:
                log.exception("mapping_stage_error")
                await asyncio.sleep(self._settings.poll_interval_seconds)
            if self._mapping_pause:  # messages were released after a failure: back off before trying again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._mapping_pause)
                self._mapping_pause = 0.0

    async def _map_batch(self, messages: Sequence[ClaimedMessage]) -> None:
        """Map a batch in the worker, build and sign its documents in order, and finish it in one transaction.

        Documents built earlier in the batch are the base of later fragments of the same episode. A failure
        stops the batch: what came before it is committed, and the rest is released to be claimed again
        first, after a backoff in which nothing else is mapped, so messages are applied in the order they
        were acknowledged. Only the message whose own processing failed is charged the attempt (it is parked
        after MAX_MAPPING_ATTEMPTS); the others get their claim back. A failure of the surroundings (the
        signing certificate or token, the store, a dead mapping worker with several messages in flight)
        charges no message: the stage backs off longer each time until it passes.
        """
        outcomes: list[MappingOutcome] = []
        built: dict[str, Document] = {}  # this batch's newest version of each document, not yet committed
        charged: int | None = None  # the message whose own failure stopped the batch
        surroundings = False
        try:
            results = await self._map_all(messages)
            for message, result in zip(messages, results):
                with correlation(message.correlation_id, source=message.source):
                    try:
                        outcomes.append(await self._apply(message, result, built, alone=len(messages) == 1))
                    except ENVIRONMENT_ERRORS:
                        raise
                    except Exception as exc:
                        if message.attempts < MAX_MAPPING_ATTEMPTS:
                            charged = message.id
                            raise
                        outcomes.append(self._poisoned(message, exc, "failed"))
        except ENVIRONMENT_ERRORS:
            surroundings = True
            raise
        finally:
            finished, unsaved = await self._finish({message.id: message for message in messages}, outcomes)
            await self._release([m for m in messages if m.id not in finished], charged or unsaved, surroundings)

    async def _release(self, unfinished: list[ClaimedMessage], charged: int | None, surroundings: bool) -> None:
        """Give the unfinished messages back, oldest first after the pause, the claim of all but `charged`."""
        self._surrounding_failures = self._surrounding_failures + 1 if surroundings else 0
        if surroundings:
            self._mapping_pause = backoff_delay(self._surrounding_failures, self._settings)
        elif unfinished:
            failed = next((m for m in unfinished if m.id == charged), unfinished[0])
            self._mapping_pause = backoff_delay(failed.attempts, self._settings)
        if not unfinished:
            return
        try:
            await self._store.release_messages([m.id for m in unfinished], charged=charged)
        except Exception:  # their leases run out instead
            log.exception("mapping_release_failed", messages=len(unfinished))

    async def _map_all(self, messages: Sequence[ClaimedMessage]) -> list[MappingResult | BaseException]:
        """Map the batch in the worker processes. A worker that died (the OOM killer, say) breaks the pool:
        it is replaced, its messages count a failed attempt instead of being parked, and they are mapped one
        at a time until past the batch, so a message that kills the worker is found and parked on its own."""
        loop = asyncio.get_running_loop()
        for _ in range(2):
            futures: list[asyncio.Future[MappingResult]] = []
            try:
                for message in messages:
                    futures.append(loop.run_in_executor(self._executor, map_payload, message.source, message.payload))
            except BrokenExecutor:  # it broke while idle: a fresh pool, and submit again
                await asyncio.gather(*futures, return_exceptions=True)
                self._replace_executor(messages)
                continue
            results = await asyncio.gather(*futures, return_exceptions=True)
            if any(isinstance(result, BrokenExecutor) for result in results):
                self._replace_executor(messages)
            elif len(messages) == 1 and messages[0].id >= self._isolate_through:
                self._isolate_through = 0
            return results
        raise BrokenExecutor("the mapping workers could not be started")

    def _replace_executor(self, messages: Sequence[ClaimedMessage]) -> None:
        log.error("mapping_worker_died", messages=len(messages))
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        self._isolate_through = max(self._isolate_through, max(message.id for message in messages))

    async def _finish(self, messages: dict[int, ClaimedMessage],
                      outcomes: list[MappingOutcome]) -> tuple[set[int], int | None]:
        """Commit the batch's outcomes in one transaction; if that fails, one by one up to the first that
        cannot be saved. That one is parked once it has failed MAX_MAPPING_ATTEMPTS times; the ones after it
        are mapped again from what is committed (they may have built on its documents). Returns the ids of
        the messages that are finished (mapped or parked) and the one that could not be saved, if any."""
        parked: int | None = None
        unsaved: int | None = None
        try:
            await self._store.finish_messages(outcomes)
            finished = outcomes
        except Exception:
            log.exception("mapping_commit_failed", messages=len(outcomes))
            finished = []
            for outcome in outcomes:
                message = messages[outcome.message_id]
                try:
                    await self._store.finish_messages([outcome])
                except Exception as exc:
                    if message.attempts >= MAX_MAPPING_ATTEMPTS and await self._park_unsaveable(message, exc):
                        parked = message.id
                    else:
                        unsaved = message.id
                    break
                finished.append(outcome)
        for outcome in finished:
            if outcome.dead_reason is None:
                for document in outcome.documents:
                    self._metrics.documents_built.labels(document.kind).inc()
                with correlation(messages[outcome.message_id].correlation_id):
                    log.info("message_mapped", message_id=outcome.message_id, submissions=len(outcome.submissions),
                             documents=[document.idempotency_key for document in outcome.documents])
        return {outcome.message_id for outcome in finished} | ({parked} if parked is not None else set()), unsaved

    def _poisoned(self, message: ClaimedMessage, exc: Exception, what: str) -> MappingOutcome:
        """The dead letter for a message that `what` MAX_MAPPING_ATTEMPTS times inside the gateway."""
        with correlation(message.correlation_id, source=message.source):
            log.error("message_poisoned", message_id=message.id, attempts=message.attempts,
                      error=type(exc).__name__, exc_info=exc)
        self._metrics.mapping_errors.labels(message.source, "internal-error").inc()
        return MappingOutcome(message.id, dead_reason=(
            f"{what} {message.attempts} times inside the gateway ({type(exc).__name__});"
            f" see the logs for correlation id {message.correlation_id}"))

    async def _park_unsaveable(self, message: ClaimedMessage, exc: Exception) -> bool:
        """A message whose result the store refused MAX_MAPPING_ATTEMPTS times goes to the dead letters;
        False when even that could not be saved."""
        try:
            await self._store.finish_messages([self._poisoned(message, exc, "could not be saved")])
        except Exception:
            log.exception("message_park_failed", message_id=message.id)
            return False
        return True

    async def _apply(self, message: ClaimedMessage, result: MappingResult | BaseException,
                     built: dict[str, Document], alone: bool) -> MappingOutcome:
        """What to commit for one message; `built` gains the documents it creates."""
        if isinstance(result, BrokenExecutor):
            if alone:  # the worker died mapping this message and nothing else: charged to it
                raise MappingWorkerDied(f"the mapping worker died mapping this message ({result})") from result
            raise result  # several were in flight: no message is charged yet (see _map_all)
        if isinstance(result, BaseException):
            log.error("mapping_crashed", message_id=message.id, error=type(result).__name__)
            self._metrics.mapping_errors.labels(message.source, "internal-error").inc()
            return MappingOutcome(message.id, dead_reason=f"internal mapping error: {type(result).__name__}")
        if not result.ok:
            for issue in result.issues:
                self._metrics.mapping_errors.labels(message.source, issue.code).inc()
            log.warning("mapping_refused", message_id=message.id,
                        problems=[f"{i.location} {i.code}" for i in result.issues if i.severity == "error"])
            return MappingOutcome(message.id, dead_reason=_summarise(result))
        documents: dict[str, Document] = {}
        before: dict[str, Document | None] = {}  # each document as it was before this message
        for fragment in result.fragments:
            previous = documents.get(fragment.document_id) or built.get(fragment.document_id) \
                or await self._store.latest_document(fragment.document_id)
            before.setdefault(fragment.document_id, previous)
            documents[fragment.document_id] = assemble(previous, fragment)
        try:  # signing is CPU work (and a hardware token is slow): keep it off the event loop
            submissions, parked = await asyncio.to_thread(
                self._build_all, [(document, before[document.document_id]) for document in documents.values()])
        except SubmissionBuildError as exc:  # the document cannot be encoded: retrying cannot help
            self._metrics.mapping_errors.labels(message.source, "encoding-failed").inc()
            log.error("submission_build_failed", message_id=message.id, reason=str(exc))
            return MappingOutcome(message.id, dead_reason=str(exc))
        for waiting in parked:
            record_parked(self._metrics, waiting)
        built.update(documents)
        return MappingOutcome(message.id, list(documents.values()), submissions, parked=parked)

    def _build_all(self, documents: list[tuple[Document, Document | None]]) -> tuple[list[Submission], list[Parked]]:
        """Each document's submissions (built on the version before it); a document whose files wait (site
        mapping, missing element) is parked, what its other channels built still goes."""
        submissions: list[Submission] = []
        parked: list[Parked] = []
        for document, previous in documents:
            try:
                submissions += self._build_submissions(document, previous)
            except DocumentParked as wait:
                submissions += wait.ready
                parked.append(Parked(document.document_id, document.version, wait.channel, wait.codes))
        return submissions, parked

    # ---- submission ----------------------------------------------------------------------------

    async def _submission_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self._store.claim_submissions(1)
                if not claimed:
                    await self._wait(self._store.outbox_ready)
                    continue
                await self._deliver(claimed[0])
            except Exception:
                log.exception("submission_stage_error")
                await asyncio.sleep(self._settings.poll_interval_seconds)

    async def _deliver(self, item: ClaimedSubmission) -> None:
        submission = item.submission
        channel = self._channels.get(submission.channel)
        with correlation(submission.idempotency_key, channel=submission.channel):
            if channel is None:
                await self._retry(item, None, "channel_disabled", f"channel {submission.channel} is disabled")
                return
            try:
                receipt = await channel.submit(submission)
            except TransientPortalError as exc:
                await self._retry(item, exc.retry_after, _reason(exc), exc.reason)
            except PermanentPortalError as exc:
                self._metrics.failed_syncs.labels(submission.channel, _reason(exc)).inc()
                log.error("submission_dead_lettered", outbox_id=item.id, status=exc.status, reason=exc.reason)
                await self._store.dead_letter_submission(item.id, exc.reason)
            except Exception as exc:  # an unexpected client failure must not lose the document
                log.exception("submission_unexpected_error", outbox_id=item.id)
                await self._retry(item, None, "client_error", f"unexpected {type(exc).__name__}")
            else:
                await self._store.mark_delivered(item.id, receipt)
                self._metrics.submissions.labels(submission.channel).inc()
                self._metrics.last_success.labels(submission.channel).set(time.time())
                log.info("submission_delivered", outbox_id=item.id, transaction_id=receipt.transaction_id,
                         attempts=item.attempts)
            self._store.outbox_ready.set()

    async def _retry(self, item: ClaimedSubmission, retry_after: float | None, label: str, detail: str) -> None:
        """Schedule another attempt: the portal's Retry-After when it gave one, else backoff with jitter."""
        delay = retry_after if retry_after is not None else backoff_delay(item.attempts, self._settings)
        self._metrics.submit_retries.labels(item.submission.channel, label).inc()
        log.warning("submission_retry", outbox_id=item.id, attempts=item.attempts, delay_seconds=round(delay, 2),
                    reason=label)
        await self._store.schedule_retry(item.id, delay, detail)


def _reason(exc: Exception) -> str:
    """A bounded label for a portal failure: the portal's result code, else the HTTP status, never free text."""
    result_code = re.sub(r"[^0-9A-Za-z]", "", getattr(exc, "result_code", ""))[:12]
    if result_code:
        return f"result_{result_code}"
    status = getattr(exc, "status", None)
    if status:
        return f"http_{status}"
    return "no_answer" if isinstance(exc, TransientPortalError) else "rejected"
