"""Pipeline workers on a real store (both backends) and real mappings, with a scripted channel for a portal."""
from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sqlite3
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import ClassVar

import asyncpg
import pytest

from adapters.portal.base import (
    PermanentPortalError,
    Receipt,
    Submission,
    TransientPortalError,
)
from gateway.config import PipelineSettings
from gateway.encryption import PayloadCipher
from gateway.metrics import Metrics
from gateway.pipeline import MAX_MAPPING_ATTEMPTS, Pipeline, backoff_delay, mapping_executor, reason_label
from gateway.signing import SigningError
from gateway.store import EncodedDocument, Inbound, MappingOutcome, PostgresStore, SqliteStore, Store
from gateway.store.admin import ItemRef, QueueAdmin
from gateway.submissions import SubmissionBuildError
from mappings.model import Document
from tests.conftest import corpus_hl7
from tests.e2e.harness import mapping_workers, wait_until
from tests.store_backends import KEY, StoreBackend


class ScriptedChannel:
    """Answers each submit with the next scripted outcome (an exception to raise, or accept)."""

    name = "bhxh_xml130"

    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = outcomes
        self.calls: list[str] = []
        self.bodies: list[bytes] = []

    async def submit(self, submission: Submission) -> Receipt:
        self.calls.append(submission.idempotency_key)
        self.bodies.append(submission.body)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Receipt(f"TX{len(self.calls)}", "202603120830", "000")

    async def close(self) -> None:
        return None


def plain_submissions(document, previous=None) -> list[Submission]:
    return [Submission("bhxh_xml130", document.idempotency_key, document.document_id, document.version,
                       b"<signed/>", "application/xml")]


SETTINGS = PipelineSettings(workers=2, mapping_processes=0, poll_interval_seconds=0.05,
                            backoff_base_seconds=0.05, backoff_max_seconds=0.1)


async def run_until(store: Store, channel: ScriptedChannel, messages: list[str], done, metrics: Metrics,
                    build=plain_submissions) -> None:
    pipeline = Pipeline(store, metrics, SETTINGS, build, {"bhxh_xml130": channel}, lambda: mapping_executor(0))
    await pipeline.start()
    await store_messages(store, messages)
    try:
        await wait_until_async(done, 10, "the pipeline's expected state")
    finally:
        await pipeline.stop()


async def store_messages(store: Store, messages: list[str]) -> None:
    """Acknowledge messages as the listener would, control ids C0, C1, ... in order."""
    for number, text in enumerate(messages):
        await store.store_inbound(Inbound("mllp", "HIS|BV", f"C{number}", "ADT^A01", "cid", text.encode(), b"AA"))


def corpus(*names: str) -> list[str]:
    return [corpus_hl7(name) for name in names]


async def versions_and_attempts(backend: StoreBackend) -> tuple[list[tuple[int, int]], list[int]]:
    """(document version, message id) in version order, and each message's attempts in id order."""
    versions = await backend.rows("SELECT version, message_id FROM documents ORDER BY version")
    return versions, [row[0] for row in await backend.rows("SELECT attempts FROM messages ORDER BY id")]


@pytest.fixture
async def store(backend: StoreBackend):
    s = await backend.open(lease_seconds=30)
    yield s
    await s.close()


async def outbox_rows(backend: StoreBackend) -> list[tuple]:
    return await backend.rows("SELECT state, attempts, reason FROM outbox ORDER BY id")


async def test_transient_failures_are_retried_until_delivered_and_the_receipt_archived(backend: StoreBackend, store: Store) -> None:
    channel = ScriptedChannel([TransientPortalError("HTTP 500", status=500),
                               TransientPortalError("HTTP 429", status=429, retry_after=0.05),
                               ConnectionResetError("peer went away")])
    metrics = Metrics()

    async def delivered() -> bool:
        return (await store.queue_depths()).get(("outbox", "delivered"), 0) == 1

    await run_until(store, channel, [corpus_hl7("adt_a01_admit.hl7")], delivered, metrics)
    assert channel.calls == ["4000000000123_VV26000456:v1"] * 4  # same idempotency key every time
    assert await outbox_rows(backend) == [("delivered", 4, None)]
    assert metrics.submit_retries.labels("bhxh_xml130", "http_429")._value.get() == 1
    assert metrics.submit_retries.labels("bhxh_xml130", "client_error")._value.get() == 1
    assert await backend.rows("SELECT transaction_id FROM receipts") == [("TX4",)]


async def test_a_permanent_refusal_is_dead_lettered_with_the_portal_reason(backend: StoreBackend, store: Store) -> None:
    channel = ScriptedChannel([PermanentPortalError("maKetQua 400: MA_LK trùng", status=400)])
    metrics = Metrics()

    async def dead() -> bool:
        return (await store.queue_depths()).get(("outbox", "dead"), 0) == 1

    await run_until(store, channel, [corpus_hl7("adt_a01_admit.hl7")], dead, metrics)
    assert await outbox_rows(backend) == [("dead", 1, "maKetQua 400: MA_LK trùng")]
    assert metrics.failed_syncs.labels("bhxh_xml130", "http_400")._value.get() == 1


async def test_an_unmappable_message_is_dead_lettered_with_located_reasons(backend: StoreBackend, store: Store) -> None:
    metrics = Metrics()

    async def dead() -> bool:
        return (await store.queue_depths()).get(("inbox", "dead"), 0) == 1

    await run_until(store, ScriptedChannel([]), [corpus_hl7("invalid_missing_identity.hl7")], dead, metrics)
    [(reason,)] = await backend.rows("SELECT reason FROM messages")
    assert "PID-3 required" in reason and "PID-7 required" in reason


async def test_an_episode_built_from_several_messages_is_sent_as_its_newest_version(backend: StoreBackend, store: Store) -> None:
    channel = ScriptedChannel([])
    messages = [corpus_hl7(name) for name in ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a03_discharge.hl7")]

    async def settled() -> bool:
        depths = await store.queue_depths()
        return depths.get(("inbox", "mapped"), 0) == 3 and not depths.get(("outbox", "pending"))

    await run_until(store, channel, messages, settled, Metrics())
    latest = await store.latest_document("4000000000123_VV26000456")
    assert latest is not None and latest.version == 3
    assert channel.calls[-1] == "4000000000123_VV26000456:v3"  # older pending versions may be superseded
    assert sorted(set(channel.calls)) == sorted(channel.calls)  # none sent twice


async def test_one_batch_builds_each_version_on_the_one_before_it_in_the_same_batch(backend: StoreBackend) -> None:
    store = await backend.open(lease_seconds=0.3)
    failed_once: list[str] = []

    def fail_version_2_once(document, previous=None) -> list[Submission]:  # a transient bug in the middle of the batch
        if document.version == 2 and not failed_once:
            failed_once.append(document.idempotency_key)
            raise RuntimeError("transient")
        return plain_submissions(document)

    # stored before the pipeline starts: claimed as one batch
    await store_messages(store, corpus("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a03_discharge.hl7"))

    async def settled() -> bool:
        return (await store.queue_depths()).get(("inbox", "mapped"), 0) == 3

    try:
        await run_until(store, ScriptedChannel([]), [], settled, Metrics(), build=fail_version_2_once)
        versions, attempts = await versions_and_attempts(backend)
        latest = await store.latest_document("4000000000123_VV26000456")
    finally:
        await store.close()
    assert failed_once == ["4000000000123_VV26000456:v2"]
    assert versions == [(1, 1), (2, 2), (3, 3)]  # no version skipped, each from its own message, in order
    assert attempts == [1, 2, 1]  # committed before the failure; charged with it; caught up in it, not charged
    kinds = {entry["resource"]["resourceType"] for entry in latest.bundle["entry"]}
    assert {"Encounter", "Observation", "Condition"} <= kinds  # v3 carries what all three messages said


async def test_after_a_failure_messages_are_still_applied_in_the_order_they_were_acknowledged(backend: StoreBackend) -> None:
    store = await backend.open(lease_seconds=60)
    loop = asyncio.get_running_loop()
    failed_once: list[int] = []

    def fail_version_2_once_while_a_new_message_arrives(document, previous=None) -> list[Submission]:
        if document.version == 2 and not failed_once:
            failed_once.append(document.version)
            asyncio.run_coroutine_threadsafe(store.store_inbound(Inbound(  # acknowledged during the failure
                "mllp", "HIS|BV", "C3", "ORU^R01", "cid", corpus_hl7("oru_r01_lab.hl7").encode(), b"AA")),
                loop).result(10)
            raise RuntimeError("transient")
        return plain_submissions(document)

    await store_messages(store, corpus("adt_a01_admit.hl7", "adt_a03_discharge.hl7", "adt_a08_update.hl7"))

    async def settled() -> bool:  # with a 60 s lease: only a prompt, ordered retry settles within the test
        return (await store.queue_depths()).get(("inbox", "mapped"), 0) == 4

    try:
        await run_until(store, ScriptedChannel([]), [], settled, Metrics(),
                        build=fail_version_2_once_while_a_new_message_arrives)
        versions, _ = await versions_and_attempts(backend)
    finally:
        await store.close()
    assert failed_once == [2]
    assert versions == [(1, 1), (2, 2), (3, 3), (4, 4)]  # the late message did not overtake the failed ones


class UnsaveableMessage(SqliteStore):
    """A store that refuses to save the mapping of one message, as a deterministic bug or bad data might."""

    def _save_mapping(self, db: sqlite3.Connection, now: float, outcome, sealed) -> None:
        if outcome.message_id == 2:
            raise sqlite3.IntegrityError("cannot save message 2")
        super()._save_mapping(db, now, outcome, sealed)


class UnsaveableMessageOnPostgres(PostgresStore):
    """The same on PostgreSQL."""

    async def _save_mapping(self, db, outcome) -> None:
        if outcome.message_id == 2:
            raise asyncpg.UniqueViolationError("cannot save message 2")
        await super()._save_mapping(db, outcome)


async def test_a_message_whose_result_cannot_be_saved_is_parked_and_does_not_hold_its_batch(
        backend: StoreBackend) -> None:
    unsaveable = UnsaveableMessage if backend.name == "sqlite" else UnsaveableMessageOnPostgres
    store = await unsaveable(backend.path if backend.name == "sqlite" else backend.dsn,
                             PayloadCipher(KEY), lease_seconds=0.05).open()
    await store_messages(store, corpus("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a03_discharge.hl7"))

    async def settled() -> bool:
        depths = await store.queue_depths()
        return depths.get(("inbox", "mapped"), 0) == 2 and depths.get(("inbox", "dead"), 0) == 1

    try:
        await run_until(store, ScriptedChannel([]), [], settled, Metrics())
        states = await backend.rows("SELECT id, state, attempts, reason FROM messages ORDER BY id")
        versions, _ = await versions_and_attempts(backend)
    finally:
        await store.close()
    assert [(row[0], row[1]) for row in states] == [(1, "mapped"), (2, "dead"), (3, "mapped")]
    assert states[0][2] == 1 and states[1][2] == MAX_MAPPING_ATTEMPTS  # the first was saved at once
    assert "could not be saved" in states[1][3] and "correlation id cid" in states[1][3]
    assert versions == [(1, 1), (2, 3)]  # the third was mapped again on what was saved, not on message 2's


async def test_a_document_that_cannot_be_encoded_is_dead_lettered_not_retried_forever(backend: StoreBackend, store: Store) -> None:
    def refuse(document, previous=None) -> list[Submission]:
        raise SubmissionBuildError(f"{document.kind} document {document.idempotency_key}: no health class")

    metrics = Metrics()

    async def dead() -> bool:
        return (await store.queue_depths()).get(("inbox", "dead"), 0) == 1

    await run_until(store, ScriptedChannel([]), [corpus_hl7("adt_a01_admit.hl7")], dead, metrics, build=refuse)
    assert await backend.rows("SELECT state, attempts, reason FROM messages") == [
        ("dead", 1, "episode document 4000000000123_VV26000456:v1: no health class")]
    assert await backend.rows("SELECT count(*) FROM documents") == [(0,)]  # nothing half-written
    assert metrics.mapping_errors.labels("mllp", "encoding-failed")._value.get() == 1


async def test_an_operator_retry_after_a_refusal_sends_a_freshly_signed_new_version(backend: StoreBackend, store: Store) -> None:
    signed_with = ["old certificate"]
    channel = ScriptedChannel([PermanentPortalError("XML signature does not verify", status=400)])

    def build(document, previous=None) -> list[Submission]:
        return [Submission("bhxh_xml130", document.idempotency_key, document.document_id, document.version,
                           signed_with[0].encode(), "application/xml")]

    async def dead() -> bool:
        return (await store.queue_depths()).get(("outbox", "dead"), 0) == 1

    await run_until(store, channel, [corpus_hl7("adt_a01_admit.hl7")], dead, Metrics(), build=build)
    signed_with[0] = "fixed certificate"  # the operator fixes the signing setting and restarts
    await QueueAdmin(store, "test-operator").retry(ItemRef("outbox", 1))

    async def delivered() -> bool:
        return (await store.queue_depths()).get(("outbox", "delivered"), 0) == 1

    await run_until(store, channel, [], delivered, Metrics(), build=build)
    assert channel.calls == ["4000000000123_VV26000456:v1", "4000000000123_VV26000456:v2"]
    assert await backend.rows("SELECT version, state FROM outbox ORDER BY id") == [
        (1, "superseded"), (2, "delivered")]
    assert channel.bodies == [b"old certificate", b"fixed certificate"]


async def test_a_message_that_keeps_crashing_the_gateway_is_parked_after_bounded_attempts(backend: StoreBackend) -> None:
    store = await backend.open(lease_seconds=0.05)

    def crash(document, previous=None) -> list[Submission]:
        raise RuntimeError("a bug, not a refusal")

    async def dead() -> bool:
        return (await store.queue_depths()).get(("inbox", "dead"), 0) == 1

    try:
        await run_until(store, ScriptedChannel([]), [corpus_hl7("adt_a01_admit.hl7")], dead, Metrics(), build=crash)
        [(attempts, reason)] = await backend.rows("SELECT attempts, reason FROM messages")
    finally:
        await store.close()
    assert attempts == MAX_MAPPING_ATTEMPTS and "RuntimeError" in reason and "correlation id cid" in reason


async def test_a_signing_failure_never_parks_messages_nor_lets_newer_ones_overtake(backend: StoreBackend) -> None:
    store = await backend.open(lease_seconds=0.01)
    loop = asyncio.get_running_loop()
    calls: list[int] = []

    def expired_for_a_while(document, previous=None) -> list[Submission]:
        calls.append(document.version)
        if len(calls) == 1:  # a message acknowledged while signing fails
            asyncio.run_coroutine_threadsafe(store.store_inbound(Inbound(
                "mllp", "HIS|BV", "C3", "ORU^R01", "cid", corpus_hl7("oru_r01_lab.hl7").encode(), b"AA")),
                loop).result(10)
        if len(calls) <= MAX_MAPPING_ATTEMPTS + 3:
            raise SigningError("signing certificate expired on 2026-01-01")
        return plain_submissions(document)

    await store_messages(store, corpus("adt_a01_admit.hl7", "adt_a03_discharge.hl7", "adt_a08_update.hl7"))

    async def settled() -> bool:
        return (await store.queue_depths()).get(("inbox", "mapped"), 0) == 4

    try:
        await run_until(store, ScriptedChannel([]), [], settled, Metrics(), build=expired_for_a_while)
        versions, attempts = await versions_and_attempts(backend)
    finally:
        await store.close()
    assert len(calls) > MAX_MAPPING_ATTEMPTS + 3  # it failed more often than a message may
    assert attempts == [1, 1, 1, 1]  # and no message was charged for it
    assert versions == [(1, 1), (2, 2), (3, 3), (4, 4)]  # the one acknowledged meanwhile did not overtake


async def test_one_message_that_keeps_failing_does_not_get_its_neighbours_parked(backend: StoreBackend, store: Store) -> None:
    calls: list[str] = []

    def first_always_fails_second_fails_once(document, previous=None) -> list[Submission]:
        calls.append(document.document_id)
        if document.document_id.endswith("VV26000456") or calls.count(document.document_id) == 1:
            raise RuntimeError("a bug for the first message, a hiccup for the second")
        return plain_submissions(document)

    messages = [corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("adt_a01_admit.hl7").replace("|VV26000456", "|VV2")]

    async def settled() -> bool:
        return (await store.queue_depths()).get(("inbox", "received"), 0) == 0

    await run_until(store, ScriptedChannel([]), messages, settled, Metrics(),
                    build=first_always_fails_second_fails_once)
    rows = await backend.rows("SELECT state, attempts FROM messages ORDER BY id")
    # signed beside the first, its hiccup is charged only if it is met once the first is parked
    assert rows[0] == ("dead", MAX_MAPPING_ATTEMPTS)
    assert rows[1][0] == "mapped" and rows[1][1] in (1, 2)


def test_backoff_grows_with_attempts_and_stays_under_the_cap() -> None:
    settings = PipelineSettings(backoff_base_seconds=2, backoff_max_seconds=60)
    for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (10, 60)]:
        delays = [backoff_delay(attempts, settings) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


@pytest.mark.parametrize("error, label", [
    (PermanentPortalError("maKetQua 403: chữ ký không hợp lệ", status=200, result_code="403"), "result_403"),
    (PermanentPortalError("maKetQua 4 01!", status=200, result_code="4 01!"), "result_401"),
    (PermanentPortalError("Bad Request", status=400), "http_400"),
    (TransientPortalError("timeout"), "no_answer"),
])
def test_failure_labels_are_bounded_and_tell_refusals_apart(error: Exception, label: str) -> None:
    assert reason_label(error) == label


class WorkerKillingPool(Executor):
    """Maps in this thread, but a payload marked POISON kills 'the worker': the pool breaks, as a
    ProcessPoolExecutor does when the OOM killer takes a worker, and refuses every later submission."""

    pools: ClassVar[list[WorkerKillingPool]] = []

    def __init__(self) -> None:
        self.broken = False
        WorkerKillingPool.pools.append(self)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self.broken:
            raise BrokenProcessPool("a worker died")
        future: Future = Future()
        if "POISON" in repr(args):  # one payload, or a chunk of them
            self.broken = True
            future.set_exception(BrokenProcessPool("a worker died"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


async def test_a_message_that_kills_the_mapping_worker_is_found_and_parked_alone(backend: StoreBackend, store: Store) -> None:
    WorkerKillingPool.pools.clear()
    messages = [corpus_hl7("adt_a01_admit.hl7"), corpus_hl7("adt_a08_update.hl7") + "\rZPX|POISON",
                corpus_hl7("adt_a03_discharge.hl7")]
    await store_messages(store, messages)
    pipeline = Pipeline(store, Metrics(), SETTINGS, plain_submissions, {"bhxh_xml130": ScriptedChannel([])},
                        WorkerKillingPool)
    await pipeline.start()
    try:
        for _ in range(200):
            depths = await store.queue_depths()
            if depths.get(("inbox", "mapped"), 0) == 2 and depths.get(("inbox", "dead"), 0) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await pipeline.stop()
    rows = await backend.rows("SELECT id, state, attempts, reason FROM messages ORDER BY id")
    assert [(row[1], row[2]) for row in rows] == [("mapped", 1), ("dead", MAX_MAPPING_ATTEMPTS), ("mapped", 1)]
    assert "MappingWorkerDied" in rows[1][3]
    assert len(WorkerKillingPool.pools) > MAX_MAPPING_ATTEMPTS  # a fresh pool after every death


async def test_mapping_goes_on_after_an_idle_mapping_worker_is_killed(backend: StoreBackend, store: Store) -> None:
    pipeline = Pipeline(store, Metrics(), SETTINGS, plain_submissions, {"bhxh_xml130": ScriptedChannel([])},
                        lambda: mapping_executor(1))
    await pipeline.start()
    try:
        workers = await asyncio.to_thread(wait_until, lambda: mapping_workers(os.getpid()), 30, 0.1,
                                          "a mapping worker")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await store.store_inbound(Inbound("mllp", "HIS|BV", "C1", "ADT^A01", "cid",
                                          corpus_hl7("adt_a01_admit.hl7").encode(), b"AA"))
        for _ in range(300):
            if (await store.queue_depths()).get(("inbox", "mapped"), 0) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await pipeline.stop()
    assert (await store.queue_depths()).get(("inbox", "mapped"), 0) == 1



def signed_where(document, previous=None) -> list[Submission]:
    """A picklable builder whose body says which process signed it."""
    return [Submission("bhxh_xml130", document.idempotency_key, document.document_id, document.version,
                       str(os.getpid()).encode(), "application/xml")]


async def test_documents_are_signed_in_a_signing_process_of_their_own(store: Store) -> None:
    channel = ScriptedChannel([])
    pipeline = Pipeline(store, Metrics(), SETTINGS, signed_where, {"bhxh_xml130": channel}, lambda: mapping_executor(0),
                        signing_processes=1)
    await pipeline.start()
    try:
        await store_messages(store, corpus("adt_a01_admit.hl7"))
        for _ in range(600):
            if channel.bodies:
                break
            await asyncio.sleep(0.05)
    finally:
        await pipeline.stop()
    [body] = channel.bodies
    assert int(body) != os.getpid() and int(body) > 0


class HeldChannel(ScriptedChannel):
    """Holds every submission until released, noting which patients were in flight at the same time."""

    def __init__(self, patient_of: dict[str, str]) -> None:
        super().__init__([])
        self.patient_of = patient_of
        self.in_flight: list[str] = []
        self.most_at_once = 0
        self.same_patient_at_once = False
        self.release = asyncio.Event()

    async def submit(self, submission: Submission) -> Receipt:
        patient = self.patient_of[submission.document_id]
        self.same_patient_at_once |= patient in self.in_flight
        self.in_flight.append(patient)
        self.most_at_once = max(self.most_at_once, len(self.in_flight))
        await self.release.wait()
        self.in_flight.remove(patient)
        return await super().submit(submission)


async def test_several_patients_are_submitted_at_once_but_one_patient_only_in_order(store: Store) -> None:
    patient_of = {f"D{number}": f"P{number % 3}" for number in range(9)}  # three documents for each of 3 patients
    stored = await store.store_inbound(Inbound("mllp", "HIS|BV", "C0", "ADT^A01", "cid", b"MSH|", b"AA"))
    await store.finish_messages([MappingOutcome(
        stored.message_id,
        [EncodedDocument.of(Document(doc, 1, "episode", patient, {})) for doc, patient in patient_of.items()],
        [Submission("bhxh_xml130", f"{doc}:v1", doc, 1, b"<signed/>") for doc in patient_of])])
    channel = HeldChannel(patient_of)
    pipeline = Pipeline(store, Metrics(), SETTINGS.model_copy(update={"workers": 8}), plain_submissions,
                        {"bhxh_xml130": channel}, lambda: mapping_executor(0))
    await pipeline.start()
    try:
        for _ in range(200):
            if channel.most_at_once == 3:
                break
            await asyncio.sleep(0.05)
        channel.release.set()
        for _ in range(200):
            if (await store.queue_depths()).get(("outbox", "delivered"), 0) == 9:
                break
            await asyncio.sleep(0.05)
    finally:
        channel.release.set()
        await pipeline.stop()
    assert channel.most_at_once == 3 and not channel.same_patient_at_once
    for patient in ("P0", "P1", "P2"):  # each patient's documents reached the portal in the order queued
        sent = [key for key in channel.calls if patient_of[key.split(":")[0]] == patient]
        assert sent == sorted(sent, key=lambda key: int(key[1:].split(":")[0]))


async def test_messages_arriving_one_by_one_after_a_quiet_spell_are_mapped_as_one_batch(store: Store) -> None:
    """pipeline.mapping_linger_seconds: once the stage has caught up, it lets the next messages gather
    instead of claiming each alone (every claim, signing call and commit costs the gateway CPU)."""
    claimed: list[int] = []
    claim = store.claim_messages

    async def counting_claim(limit: int, **kwargs):
        messages = await claim(limit, **kwargs)
        if messages:
            claimed.append(len(messages))
        return messages

    store.claim_messages = counting_claim  # type: ignore[method-assign]
    admit = corpus_hl7("adt_a01_admit.hl7")
    messages = [admit.replace("VV26000456", f"VV2677{n:04d}").replace("MSG000123", f"L{n:05d}") for n in range(6)]
    channel = ScriptedChannel([])
    pipeline = Pipeline(store, Metrics(), SETTINGS.model_copy(update={"mapping_linger_seconds": 1.0}),
                        plain_submissions, {"bhxh_xml130": channel}, lambda: mapping_executor(0))
    await pipeline.start()
    try:
        await store_messages(store, messages[:1])
        await wait_until_async(lambda: len(channel.calls) == 1)
        for number, text in enumerate(messages[1:], 1):  # one by one, as a HIS sends
            await store.store_inbound(Inbound("mllp", "HIS|BV", f"C{number}", "ADT^A01", "cid", text.encode(), b"AA"))
        await wait_until_async(lambda: len(channel.calls) == 6)
    finally:
        await pipeline.stop()
    assert claimed == [1, 5]


async def wait_until_async(predicate, seconds: float = 20.0, what: str = "the expected state") -> None:
    """Poll `predicate` (plain or async) every 50 ms until it holds; fail naming `what` after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        held = predicate()
        if await held if inspect.isawaitable(held) else held:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} was not reached in {seconds:.0f} s")
