"""The mapping stage: claimed messages are mapped, assembled and signed in order, and committed as one batch.

Steps of one batch, each with an explicit result per message:
1. map (worker processes, mapping_workers.py): payload -> MappingResult, side by side;
2. assemble and sign (signing processes, signing_stage.py): each message's fragments onto the newest
   version of their documents (committed, or built earlier in the batch by a message of the same group),
   the signed submissions, each new bundle encoded as stored -> Prepared;
3. commit (the store): every message's outcome in one transaction -> MappingOutcome.
Batches are pipelined: while one batch is assembled, signed and committed, the next is already mapped, so
the mapping workers, the signing workers and the gateway process work at the same time. The next batch is
only ever assembled after the one before it is committed, so order is what it was one batch at a time.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass

from gateway.config import PipelineSettings
from gateway.logs import correlation, get_logger, loggable
from gateway.mapping_workers import MappingWorkers, MapResult
from gateway.metrics import Metrics
from gateway.retry import backoff_delay
from gateway.signing import SigningError
from gateway.signing_stage import Prepared, SigningStage
from gateway.store import ClaimedMessage, MappingOutcome, Parked, Store, StoreError
from gateway.submissions import SubmissionBuildError
from mappings.model import MappingResult

log = get_logger(__name__)

MAPPING_BATCH = 32
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


@dataclass
class Batch:
    """Claimed messages and the mapping of them, under way in the workers."""

    messages: list[ClaimedMessage]
    mapped: asyncio.Task[list[MapResult]]


@dataclass
class BatchEnd:
    """How a batch ended: which messages were charged a failure, and how soon to go on."""

    charged: int | None = None  # the message whose own failure stopped the batch
    surroundings: bool = False  # a failure of the surroundings stopped it: no message is charged
    at_once: bool = False  # stopped to re-assemble the rest, not after a failure: no pause


def _summarise(result: MappingResult) -> str:
    return "; ".join(f"{issue.location} {issue.code}: {issue.message}"
                     for issue in result.issues if issue.severity == "error")


class MappingStage:
    """Claims messages in acknowledgement order and turns them into committed documents and submissions."""

    def __init__(self, store: Store, metrics: Metrics, settings: PipelineSettings, mapping: MappingWorkers,
                 signing: SigningStage, stopping: asyncio.Event) -> None:
        self._store = store
        self._metrics = metrics
        self._settings = settings
        self._mapping = mapping
        self._signing = signing
        self._stopping = stopping
        self._pause = 0.0
        self._surrounding_failures = 0

    async def run(self) -> None:
        """Until stopped: claim, map ahead, apply in order; after a failure everything claimed is given back."""
        ahead: Batch | None = None
        caught_up = False  # the last batch was not full: let the next one gather (pipeline.mapping_linger_seconds)
        while not self._stopping.is_set():
            try:
                if ahead is None and caught_up and self._settings.mapping_linger_seconds and not self._mapping.isolating:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._settings.mapping_linger_seconds)
                batch, ahead = ahead or await self._claim(), None
                if batch is None:
                    await self._wait()
                    continue
                caught_up = len(batch.messages) < MAPPING_BATCH
                try:
                    results = await batch.mapped
                except BrokenExecutor:  # no worker could be started: charged to no message
                    await self._release(batch.messages, BatchEnd(surroundings=True))
                    raise
                if not self._mapping.isolating and not any(isinstance(r, BrokenExecutor) for r in results):
                    ahead = await self._claim(batch)  # mapped while this batch is assembled, signed and committed
                if not await self._apply(batch.messages, results) and ahead is not None:
                    await self._give_back(ahead)
                    ahead = None
            except Exception:
                log.exception("mapping_stage_error")
                if ahead is not None:
                    await self._give_back(ahead)
                    ahead = None
                await asyncio.sleep(self._settings.poll_interval_seconds)
            if self._pause:  # messages were released after a failure: back off before trying again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._pause)
                self._pause = 0.0
        if ahead is not None:
            await self._give_back(ahead)

    async def _wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._store.inbox_ready.wait(), self._settings.poll_interval_seconds)
        self._store.inbox_ready.clear()

    async def _claim(self, under_way: Batch | None = None) -> Batch | None:
        """The next messages to map; never one of the batch `under_way`, even once its leases ran out."""
        excluding = [message.id for message in under_way.messages] if under_way else []
        messages = await self._store.claim_messages(1 if self._mapping.isolating else MAPPING_BATCH,
                                                    excluding=excluding)
        if not messages:
            return None
        return Batch(messages, asyncio.create_task(self._mapping.map_all(messages), name="mapping-batch"))

    async def _give_back(self, batch: Batch) -> None:
        """A batch claimed ahead, released unmapped and uncharged, to be claimed again in order."""
        await asyncio.gather(batch.mapped, return_exceptions=True)
        try:
            await self._store.release_messages([message.id for message in batch.messages])
        except Exception:  # their leases run out instead
            log.exception("mapping_release_failed", messages=len(batch.messages))

    # ---- one batch -----------------------------------------------------------------------------

    async def _apply(self, messages: Sequence[ClaimedMessage], results: Sequence[MapResult]) -> bool:
        """Assemble, sign and commit a mapped batch; True when every message of it was finished.

        A failure stops the batch: what came before it is committed, and the rest is released to be claimed
        again first, after a backoff in which nothing else is mapped, so messages are applied in the order
        they were acknowledged. Only the message whose own processing failed is charged the attempt (it is
        parked after MAX_MAPPING_ATTEMPTS); the others get their claim back. A failure of the surroundings
        (the signing certificate or token, the store, a dead worker with several messages in flight)
        charges no message: the stage backs off longer each time until it passes.
        """
        outcomes: list[MappingOutcome] = []
        end = BatchEnd()
        try:
            prepared = await self._prepare(results)
            for index, message in enumerate(messages):
                with correlation(message.correlation_id, source=message.source):
                    try:
                        outcome = self._outcome(message, results[index], prepared[index], alone=len(messages) == 1)
                    except ENVIRONMENT_ERRORS:
                        raise
                    except Exception as exc:
                        if message.attempts < MAX_MAPPING_ATTEMPTS:
                            end.charged = message.id
                            raise
                        outcome = self._poisoned(message, exc, "failed")
                outcomes.append(outcome)
                if outcome.dead_reason is not None and _builds_on(prepared[index], prepared[index + 1:]):
                    end.at_once = True  # a later message was assembled on documents that will not exist
                    break
        except ENVIRONMENT_ERRORS:
            end.surroundings = True
            raise
        finally:
            finished, unsaved = await self._finish({message.id: message for message in messages}, outcomes)
            unfinished = [message for message in messages if message.id not in finished]
            if unsaved is not None:
                end.charged, end.at_once = unsaved, False
            await self._release(unfinished, end)
        return not unfinished

    async def _prepare(self, results: Sequence[MapResult]) -> list[Prepared]:
        """Each mapped message's fragments assembled, signed and encoded in the signing stage, on the committed
        version of each document (read here in one query) or on what an earlier message of the batch built."""
        batch = [result.fragments if isinstance(result, MappingResult) and result.ok else () for result in results]
        committed = await self._store.latest_documents(
            [fragment.document_id for fragments in batch for fragment in fragments])
        return await self._signing.sign(batch, committed)

    def _outcome(self, message: ClaimedMessage, result: MapResult, prepared: Prepared, alone: bool) -> MappingOutcome:
        """What to commit for one message; raises its own failure, or the surroundings'."""
        if isinstance(result, BrokenExecutor):
            if alone:  # the worker died mapping this message and nothing else: charged to it
                raise MappingWorkerDied(f"the mapping worker died mapping this message ({result})") from result
            raise result  # several were in flight: no message is charged yet (see MappingWorkers.map_all)
        if isinstance(result, BaseException):
            log.error("mapping_crashed", message_id=message.id, error=type(result).__name__)
            self._metrics.mapping_errors.labels(message.source, "internal-error").inc()
            return MappingOutcome(message.id, dead_reason=f"internal mapping error: {type(result).__name__}")
        if not result.ok:
            for issue in result.issues:
                self._metrics.mapping_errors.labels(message.source, issue.code).inc()
            log.warning("mapping_refused", message_id=message.id,
                        problems=[f"{loggable(i.location)} {i.code}" for i in result.issues if i.severity == "error"])
            return MappingOutcome(message.id, dead_reason=_summarise(result))
        signed = prepared.result
        if isinstance(signed, SubmissionBuildError):  # the document cannot be encoded: retrying cannot help
            self._metrics.mapping_errors.labels(message.source, "encoding-failed").inc()
            log.error("submission_build_failed", message_id=message.id, reason=str(signed))
            return MappingOutcome(message.id, dead_reason=str(signed))
        if isinstance(signed, BaseException):  # its assembly or signing failed: its own failure, or the surroundings'
            raise signed
        for waiting in signed.parked:
            record_parked(self._metrics, waiting)
        return MappingOutcome(message.id, signed.documents, signed.submissions, parked=signed.parked)

    def _poisoned(self, message: ClaimedMessage, exc: Exception, what: str) -> MappingOutcome:
        """The dead letter for a message that `what` MAX_MAPPING_ATTEMPTS times inside the gateway."""
        with correlation(message.correlation_id, source=message.source):
            log.error("message_poisoned", message_id=message.id, attempts=message.attempts,
                      error=type(exc).__name__, exc_info=exc)
        self._metrics.mapping_errors.labels(message.source, "internal-error").inc()
        return MappingOutcome(message.id, dead_reason=(
            f"{what} {message.attempts} times inside the gateway ({type(exc).__name__});"
            f" see the logs for correlation id {message.correlation_id}"))

    async def _release(self, unfinished: list[ClaimedMessage], end: BatchEnd) -> None:
        """Give the unfinished messages back, oldest first after the pause, the claim of all but the charged."""
        self._surrounding_failures = self._surrounding_failures + 1 if end.surroundings else 0
        if end.surroundings:
            self._pause = backoff_delay(self._surrounding_failures, self._settings)
        elif unfinished and not end.at_once:
            failed = next((m for m in unfinished if m.id == end.charged), unfinished[0])
            self._pause = backoff_delay(failed.attempts, self._settings)
        if not unfinished:
            return
        try:
            await self._store.release_messages([m.id for m in unfinished], charged=end.charged)
        except Exception:  # their leases run out instead
            log.exception("mapping_release_failed", messages=len(unfinished))

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
                except Exception as exc:  # noqa: BLE001 - any failure to save it: parked once it has failed often
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

    async def _park_unsaveable(self, message: ClaimedMessage, exc: Exception) -> bool:
        """A message whose result the store refused MAX_MAPPING_ATTEMPTS times goes to the dead letters;
        False when even that could not be saved."""
        try:
            await self._store.finish_messages([self._poisoned(message, exc, "could not be saved")])
        except Exception:
            log.exception("message_park_failed", message_id=message.id)
            return False
        return True


def _builds_on(failed: Prepared, later: Sequence[Prepared]) -> bool:
    """Whether a later message of the batch was assembled on a document of one that ends without it."""
    return any(failed.built & item.built for item in later)
