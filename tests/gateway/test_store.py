"""The durable store on both backends (a real SQLite file, a real PostgreSQL server): group commit, dedup,
leases, ordering, supersede, encryption."""
from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.portal.base import Receipt, Submission
from gateway.encryption import PayloadCipher
from gateway.store import (
    Inbound,
    SqliteStore,
    Store,
    StoreLockedError,
    StoreUnavailable,
)
from mappings.model import Document
from tests.store_backends import StoreBackend


def cipher() -> PayloadCipher:
    return PayloadCipher(b"k" * 32)


def inbound(control_id: str, payload: bytes = b"MSH|payload", ack: bytes = b"ACK") -> Inbound:
    return Inbound("mllp", "HIS|BV", control_id, "ADT^A01", "cid", payload, ack)


def document(doc_id: str, version: int, patient: str = "p1") -> Document:
    return Document(doc_id, version, "episode", patient, {"resourceType": "Bundle", "id": f"{doc_id}-{version}"})


def submission(doc_id: str, version: int, channel: str = "bhxh_xml130") -> Submission:
    return Submission(channel, f"{doc_id}:v{version}", doc_id, version, b"<signed/>", "application/xml")


@pytest.fixture
async def store(backend: StoreBackend):
    s = await backend.open(lease_seconds=60)
    yield s
    await s.close()


async def test_concurrent_messages_share_commits_and_all_survive(backend: StoreBackend) -> None:
    batches: list[int] = []
    store = await backend.open(on_batch=batches.append)
    results = await asyncio.gather(*(store.store_inbound(inbound(f"C{i}")) for i in range(200)))
    await store.close()
    assert len({r.message_id for r in results}) == 200
    assert sum(batches) == 200 and len(batches) < 200  # group commit: fewer transactions than messages
    assert await backend.rows("SELECT count(*) FROM messages") == [(200,)]
    if backend.name == "sqlite":
        assert await backend.rows("PRAGMA journal_mode") == [("wal",)]


async def test_retransmission_returns_original_ack_and_stores_once(store: Store) -> None:
    first = await store.store_inbound(inbound("C1", ack=b"ORIGINAL"))
    again = await store.store_inbound(inbound("C1", ack=b"NEW"))
    assert not first.duplicate and again.duplicate
    assert again.ack == b"ORIGINAL" and again.message_id == first.message_id
    assert (await store.queue_depths())[("inbox", "received")] == 1


async def test_payload_is_encrypted_at_rest(backend: StoreBackend, store: Store) -> None:
    await store.store_inbound(inbound("C1", payload=b"PID|||040085012345"))
    [(stored,)] = await backend.rows("SELECT payload FROM messages")
    assert b"040085012345" not in stored and len(stored) > len(b"PID|||040085012345")
    if backend.name == "sqlite":
        raw = backend.path.read_bytes() + backend.path.with_name("gw.db-wal").read_bytes()
        assert b"040085012345" not in raw
    [claimed] = await store.claim_messages(10)
    assert claimed.payload == b"PID|||040085012345"


async def test_claimed_message_is_leased_and_requeued_after_lease_expiry(backend: StoreBackend) -> None:
    store = await backend.open(lease_seconds=0.05)
    await store.store_inbound(inbound("C1"))
    assert len(await store.claim_messages(10)) == 1
    assert await store.claim_messages(10) == []  # leased
    await asyncio.sleep(0.1)
    again = await store.claim_messages(10)  # the worker "crashed": the lease ran out
    await store.close()
    assert len(again) == 1


async def test_mapping_commit_creates_outbox_and_supersedes_older_pending_version(store) -> None:
    stored = await store.store_inbound(inbound("C1"))
    await store.commit_mapping(stored.message_id, [document("D1", 1)], [submission("D1", 1)])
    second = await store.store_inbound(inbound("C2"))
    await store.commit_mapping(second.message_id, [document("D1", 2)], [submission("D1", 2)])
    depths = await store.queue_depths()
    assert depths[("outbox", "superseded")] == 1 and depths[("outbox", "pending")] == 1
    [claimed] = await store.claim_submissions(10)
    assert claimed.submission.version == 2 and claimed.submission.body == b"<signed/>"
    latest = await store.latest_document("D1")
    assert latest is not None and latest.version == 2 and latest.bundle["id"] == "D1-2"


async def test_a_submission_keeps_what_the_portal_files_it_under(store: Store) -> None:
    stored = await store.store_inbound(inbound("C1"))
    carried = Submission("bhxh_checkin", "D1:v1", "D1", 1, b"<signed/>", "application/xml", file_type="0",
                         facility_code="79001")
    await store.commit_mapping(stored.message_id, [document("D1", 1), document("D2", 1, "p2")],
                               [carried, submission("D2", 1)])
    first, second = await store.claim_submissions(10)
    assert (first.submission.file_type, first.submission.facility_code) == ("0", "79001")
    assert (second.submission.file_type, second.submission.facility_code) == ("", "")


async def test_one_patient_is_delivered_in_order_others_are_not_held_up(store) -> None:
    stored = await store.store_inbound(inbound("C1"))
    await store.commit_mapping(
        stored.message_id,
        [document("A", 1, "p1"), document("B", 1, "p1"), document("C", 1, "p2")],
        [submission("A", 1), submission("B", 1), submission("C", 1)])
    first = await store.claim_submissions(10)
    assert [c.submission.document_id for c in first] == ["A", "C"]  # B waits for A (same patient)
    await store.schedule_retry(first[0].id, 0, "http_500")
    assert [c.submission.document_id for c in await store.claim_submissions(10)] == ["A"]  # retried, B still waits
    await store.mark_delivered(first[0].id, Receipt("T1", "2026-03-12T08:30:00+07:00", "000"))
    assert [c.submission.document_id for c in await store.claim_submissions(10)] == ["B"]


async def test_delivery_archives_receipt_and_dead_letter_keeps_reason(backend: StoreBackend, store) -> None:
    stored = await store.store_inbound(inbound("C1"))
    await store.commit_mapping(stored.message_id, [document("A", 1, "p1"), document("B", 1, "p2")],
                               [submission("A", 1), submission("B", 1)])
    a, b = await store.claim_submissions(10)
    await store.mark_delivered(a.id, Receipt("TX-42", "202603120830", "000", {"maKetQua": "000"}))
    await store.dead_letter_submission(b.id, "MA_LK already closed")
    depths = await store.queue_depths()
    assert depths[("outbox", "delivered")] == 1 and depths[("outbox", "dead")] == 1
    # The dead letter was not delivered either: it keeps the 24-hour deadline clock running.
    [(first_received_at,)] = await backend.rows("SELECT first_received_at FROM outbox WHERE state='dead'")
    assert await store.oldest_pending_received_at() == first_received_at
    assert await backend.rows("SELECT transaction_id FROM receipts") == [("TX-42",)]
    assert await backend.rows("SELECT reason FROM outbox WHERE state='dead'") == [("MA_LK already closed",)]


async def test_a_failed_commit_fails_every_waiter_and_the_store_recovers(backend: StoreBackend, store) -> None:
    await backend.refuse_inserts("messages", "disk says no")
    results = await asyncio.gather(*(store.store_inbound(inbound(f"C{i}")) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) and "disk says no" in str(r) for r in results)  # no ACK for a lost write
    assert all(isinstance(r.__cause__, (sqlite3.DatabaseError, asyncpg.PostgresError)) for r in results)
    await backend.allow_inserts("messages")
    stored = await store.store_inbound(inbound("C0"))
    assert not stored.duplicate  # C0 was never written, so it is new now


def test_payloads_are_compressed_and_rows_sealed_before_compression_still_open() -> None:
    key = b"k" * 32
    bundle = json.dumps({"entry": [{"resource": {"resourceType": "Observation", "code": "8867-4"}}] * 100}).encode()
    sealed = PayloadCipher(key).seal(bundle, b"documents")
    assert len(sealed) < len(bundle) / 5
    assert PayloadCipher(key).open(sealed, b"documents") == bundle
    with pytest.raises(InvalidTag):  # bound to its table, as before
        PayloadCipher(key).open(sealed, b"outbox")
    for first_byte in (b"\x01", b"\x07"):  # an older row, even one whose nonce starts like the format byte
        nonce = first_byte + bytes(11)
        older = nonce + AESGCM(key).encrypt(nonce, b"MSH|older", b"messages")
        assert PayloadCipher(key).open(older, b"messages") == b"MSH|older"


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(Exception, match="32 bytes"):
        PayloadCipher(base64.b64decode(base64.b64encode(b"short")))


async def test_a_second_serving_gateway_is_locked_out(tmp_path: Path) -> None:
    owner = await SqliteStore(tmp_path / "gw.db", cipher()).open(owner=True)
    try:
        with pytest.raises(StoreLockedError, match="in use by another gateway"):
            await SqliteStore(tmp_path / "gw.db", cipher()).open(owner=True)
        reader = await SqliteStore(tmp_path / "gw.db", cipher()).open()  # the CLI may still read and write
        await reader.close()
    finally:
        await owner.close()
    again = await SqliteStore(tmp_path / "gw.db", cipher()).open(owner=True)  # the lock went with its holder
    await again.close()


async def test_the_next_owner_requeues_what_a_dead_process_had_leased(backend: StoreBackend) -> None:
    crashed = await backend.open(owner=True, lease_seconds=3600)
    stored = await crashed.store_inbound(inbound("C1"))
    await crashed.store_inbound(inbound("C2"))
    await crashed.commit_mapping(stored.message_id, [document("A", 1)], [submission("A", 1)])
    assert len(await crashed.claim_messages(10)) == 1 and len(await crashed.claim_submissions(10)) == 1
    await backend.crash(crashed)  # as if killed: both leases are held for another hour
    restarted = await backend.open(owner=True, lease_seconds=3600)
    messages, submissions = await restarted.claim_messages(10), await restarted.claim_submissions(10)
    await restarted.close()
    assert [m.id for m in messages] == [2] and [s.submission.document_id for s in submissions] == ["A"]


async def test_a_commit_delay_gathers_messages_sent_just_after_the_first(backend: StoreBackend) -> None:
    batches: list[int] = []
    store = await backend.open(max_delay_ms=1000, on_batch=batches.append)

    async def later(control_id: str) -> None:
        await asyncio.sleep(0.01)
        await store.store_inbound(inbound(control_id))

    await asyncio.gather(store.store_inbound(inbound("C1")), later("C2"), later("C3"))
    await store.close()
    assert batches == [3]


async def test_a_superseding_version_keeps_the_age_of_the_data_it_replaces(backend: StoreBackend, store) -> None:
    """Otherwise regular updates during an outage would hide an episode from the 24-hour deadline alert."""
    first = await store.store_inbound(inbound("C1"))
    await store.commit_mapping(first.message_id, [document("D1", 1)], [submission("D1", 1)])
    oldest = await store.oldest_pending_received_at()
    await asyncio.sleep(0.05)
    second = await store.store_inbound(inbound("C2"))
    await store.commit_mapping(second.message_id, [document("D1", 2)], [submission("D1", 2)])
    rows = await backend.rows("SELECT version, state, first_received_at FROM outbox ORDER BY id")
    [(second_received,)] = await backend.rows("SELECT received_at FROM messages WHERE id = ?", second.message_id)
    assert [(version, state) for version, state, _ in rows] == [(1, "superseded"), (2, "pending")]
    assert rows[1][2] == oldest < second_received
    assert await store.oldest_pending_received_at() == oldest


async def test_an_acknowledgements_commit_writes_few_pages(tmp_path: Path) -> None:
    """Each page an ACK's commit changes is written whole to the WAL and fsynced before the ACK goes: the
    search and retention indexes leave out unmapped messages (migration 8), so a lone inbound message
    changes the table, its unique key, the work index and the queue counts: 5 pages at most (8.5 before)."""
    store = await SqliteStore(tmp_path / "pages.db", cipher()).open(owner=True)
    try:
        await store.store_inbound(inbound("warm-up"))
        wal = tmp_path / "pages.db-wal"
        before = wal.stat().st_size
        for n in range(100):
            await store.store_inbound(inbound(f"C{n}", payload=b"MSH|" + bytes(600)))
        with sqlite3.connect(tmp_path / "pages.db") as db:
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
        frames = (wal.stat().st_size - before) / (page_size + 24)
    finally:
        await store.close()
    assert 100 <= frames <= 500, f"{frames / 100:.1f} pages per acknowledgement"
