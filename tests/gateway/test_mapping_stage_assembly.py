"""Documents are assembled, signed and encoded in the signing processes, and what the store keeps is byte for
byte what assembling each message on the version before it (mappings.document.assemble) and encoding it
(json.dumps) gives, in acknowledgement order, however the batch is spread over the processes."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence

from adapters.portal.base import Submission
from gateway.config import PipelineSettings
from gateway.encryption import PayloadCipher
from gateway.mapping_stage import MAX_MAPPING_ATTEMPTS, MappingStage
from gateway.mapping_workers import MappingWorkers, MapResult, map_payload, mapping_executor
from gateway.metrics import Metrics
from gateway.signing_stage import Call, Signed, SigningStage, prepare_call
from gateway.store import ClaimedMessage, Inbound, Store
from mappings.document import assemble
from mappings.model import Document, Fragment, MappingResult
from tests.conftest import corpus_hl7
from tests.gateway.test_pipeline import wait_until_async
from tests.store_backends import KEY, StoreBackend

SETTINGS = PipelineSettings(workers=2, mapping_processes=0, poll_interval_seconds=0.05, mapping_linger_seconds=0,
                            backoff_base_seconds=0.05, backoff_max_seconds=0.1)
VISIT = "|VV26000456"


def visit(name: str, number: str) -> str:
    """A corpus message moved to visit VV<number> (an episode document of its own)."""
    return corpus_hl7(name).replace(VISIT, f"|VV{number}")


def body_of(document: Document, previous: Document | None) -> bytes:
    """A signed body that says exactly which version it was built from and on."""
    return json.dumps({"version": document.idempotency_key, "bundle": document.bundle,
                       "on": previous.bundle if previous is not None else None}, ensure_ascii=False).encode()


def signed_as_built(document: Document, previous: Document | None = None) -> list[Submission]:
    """A picklable builder (it runs in the signing processes)."""
    return [Submission("bhxh_xml130", document.idempotency_key, document.document_id, document.version,
                       body_of(document, previous), "application/json")]


def expected(messages: Sequence[str]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Each version's stored bundle and signed body as the old path made them: every message in order, each
    fragment on the newest version of its document, then json.dumps as the store encoded it."""
    latest: dict[str, Document] = {}
    bundles: dict[str, bytes] = {}
    bodies: dict[str, bytes] = {}
    for text in messages:
        result = map_payload("mllp", text.encode())
        assert result.ok, result.issues
        before: dict[str, Document | None] = {}
        for fragment in result.fragments:
            before.setdefault(fragment.document_id, latest.get(fragment.document_id))
            latest[fragment.document_id] = assemble(latest.get(fragment.document_id), fragment)
        for document_id, previous in before.items():
            document = latest[document_id]
            bundles[document.idempotency_key] = json.dumps(document.bundle, ensure_ascii=False).encode()
            bodies[document.idempotency_key] = body_of(document, previous)
    return bundles, bodies


async def stored(backend: StoreBackend) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Every stored version's bundle and every outbox body, opened."""
    cipher = PayloadCipher(KEY)
    bundles = {f"{doc}:v{version}": cipher.open(bytes(sealed), b"documents")
               for doc, version, sealed in await backend.rows("SELECT document_id, version, bundle FROM documents")}
    bodies = {key: cipher.open(bytes(sealed), b"outbox") for key, sealed in await backend.rows(
        "SELECT o.idempotency_key, b.body FROM outbox o JOIN outbox_bodies b ON b.outbox_id = o.id")}
    return bundles, bodies


async def acknowledge(store: Store, messages: Sequence[str], first: int = 0) -> None:
    for number, text in enumerate(messages, first):
        await store.store_inbound(Inbound("mllp", "HIS|BV", f"C{number}", "ADT^A01", "cid", text.encode(), b"AA"))


async def run_stage(store: Store, processes: int, until: Callable[[], Awaitable[bool]],
                    mapping: MappingWorkers | None = None) -> None:
    """The mapping stage alone (no submission stage, so the outbox bodies stay) until `until` holds."""
    mapping = mapping or MappingWorkers(lambda: mapping_executor(0), 1)
    signing = SigningStage(signed_as_built, processes)
    signing.start()
    stopping = asyncio.Event()
    task = asyncio.create_task(MappingStage(store, Metrics(), SETTINGS, mapping, signing, stopping).run())
    try:
        await wait_until_async(until, 30, "the mapping stage's expected state")
    finally:
        stopping.set()
        store.inbox_ready.set()
        await task
        mapping.stop()
        signing.stop()


def mapped(store: Store, count: int, dead: int = 0) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        depths = await store.queue_depths()
        return depths.get(("inbox", "mapped"), 0) == count and depths.get(("inbox", "dead"), 0) == dead
    return done


async def test_a_batch_of_several_episodes_is_stored_byte_for_byte_as_assembled_in_order(backend: StoreBackend) -> None:
    """Three visits updated several times in one batch, one of them on a version committed before it, signed
    by two processes: each version is built on the one before it, whichever process built it."""
    committed = [visit("adt_a01_admit.hl7", "W1")]
    batch = [visit("adt_a01_admit.hl7", "X1"), visit("adt_a01_admit.hl7", "Y1"), visit("oru_r01_lab.hl7", "X1"),
             visit("oru_r01_lab.hl7", "W1"), visit("adt_a01_admit.hl7", "Z1"), visit("adt_a03_discharge.hl7", "X1"),
             visit("adt_a08_update.hl7", "Y1"), visit("oru_r01_lab.hl7", "Y1"), visit("adt_a03_discharge.hl7", "W1"),
             visit("mdm_t02_summary.hl7", "X1")]
    store = await backend.open(lease_seconds=30)
    try:
        await acknowledge(store, committed)
        await run_stage(store, 2, mapped(store, 1))
        await acknowledge(store, batch, first=1)  # all waiting before the stage starts: claimed as one batch
        await run_stage(store, 2, mapped(store, 1 + len(batch)))
        bundles, bodies = await stored(backend)
        attempts = [row[0] for row in await backend.rows("SELECT attempts FROM messages ORDER BY id")]
    finally:
        await store.close()
    assert attempts == [1] * (1 + len(batch))  # right at once: no version clashed with another and was redone
    want_bundles, want_bodies = expected(committed + batch)
    assert sorted(bundles) == sorted(want_bundles)
    assert {key.rsplit(":", 1)[0] for key in bundles} == {f"4000000000123_VV{v}" for v in ("W1", "X1", "Y1", "Z1")}
    assert max(int(key.rsplit(":v", 1)[1]) for key in bundles) == 4  # X: admission, lab, discharge, summary
    for key, bundle in want_bundles.items():
        assert bundles[key] == bundle, key
    assert bodies == want_bodies


def with_unassemblable(result: MapResult) -> MapResult:
    """The message's fragments, then a copy of the first with one resource that has no id: the first
    applies, the copy makes assembly fail half-way through the message."""
    assert isinstance(result, MappingResult) and result.ok
    good = result.fragments[0]
    broken = dataclasses.replace(good, resources=(*good.resources, {"resourceType": "Observation"}))
    return dataclasses.replace(result, fragments=(*result.fragments, broken))


class OneMessageUnassemblable(MappingWorkers):
    """Maps as usual, but message `broken`'s result cannot be assembled (as a bug met by its data would)."""

    def __init__(self, broken: int) -> None:
        super().__init__(lambda: mapping_executor(0), 1)
        self.broken = broken
        self.claims: list[list[int]] = []

    async def map_all(self, messages: Sequence[ClaimedMessage]) -> list[MapResult]:
        self.claims.append([message.id for message in messages])
        results = await super().map_all(messages)
        return [with_unassemblable(result) if message.id == self.broken else result
                for message, result in zip(messages, results, strict=True)]


async def test_a_message_whose_assembly_fails_is_charged_alone_and_its_group_goes_on_without_it(
        backend: StoreBackend) -> None:
    """Admission, lab results (whose assembly fails after its first fragment applied) and discharge of one
    visit, and another visit between them: the lab message alone is charged, every time, until it is
    parked; the discharge is never charged, and is built on the admission, not on the lab's half."""
    messages = [visit("adt_a01_admit.hl7", "X1"), visit("oru_r01_lab.hl7", "X1"), visit("adt_a01_admit.hl7", "Y1"),
                visit("adt_a03_discharge.hl7", "X1")]
    store = await backend.open(lease_seconds=30)
    mapping = OneMessageUnassemblable(broken=2)
    try:
        await acknowledge(store, messages)
        await run_stage(store, 2, mapped(store, 3, dead=1), mapping)
        states = await backend.rows("SELECT id, state, attempts, reason FROM messages ORDER BY id")
        versions = await backend.rows("SELECT document_id, version, message_id FROM documents ORDER BY message_id")
        bundles, bodies = await stored(backend)
    finally:
        await store.close()
    assert mapping.claims[0] == [1, 2, 3, 4]  # one batch: the failure stopped it at message 2 each time after
    assert [(row[0], row[1], row[2]) for row in states] == [
        (1, "mapped", 1), (2, "dead", MAX_MAPPING_ATTEMPTS), (3, "mapped", 1), (4, "mapped", 1)]
    assert "KeyError" in states[1][3]
    assert versions == [("4000000000123_VVX1", 1, 1), ("4000000000123_VVY1", 1, 3), ("4000000000123_VVX1", 2, 4)]
    want_bundles, want_bodies = expected([messages[0], messages[2], messages[3]])  # as if the lab never came
    assert bundles == want_bundles and bodies == want_bodies


def fragments_of(text: str) -> tuple[Fragment, ...]:
    result = map_payload("mllp", text.encode())
    assert isinstance(result, MappingResult) and result.ok
    return result.fragments


def test_in_a_call_a_failed_assembly_leaves_nothing_for_the_later_messages_to_build_on() -> None:
    admission, discharge = fragments_of(visit("adt_a01_admit.hl7", "X1")), fragments_of(
        visit("adt_a03_discharge.hl7", "X1"))
    lab = with_unassemblable(map_payload("mllp", visit("oru_r01_lab.hl7", "X1").encode()))
    assert isinstance(lab, MappingResult)
    first, failed, last = prepare_call(signed_as_built, Call([admission, lab.fragments, discharge], {}))
    assert isinstance(first.result, Signed) and isinstance(last.result, Signed)
    assert isinstance(failed.result, KeyError) and failed.built == frozenset()
    assert first.built == last.built == {"4000000000123_VVX1"}
    on_admission = assemble(assemble(None, admission[0]), discharge[0])
    [document] = last.result.documents
    assert (document.version, document.bundle) == (2, json.dumps(on_admission.bundle, ensure_ascii=False).encode())
