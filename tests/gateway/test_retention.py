"""Retention purge on a real store file with controlled timestamps: payloads go, metadata and receipts stay."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from adapters.portal.base import Receipt, Submission
from gateway.encryption import PayloadCipher
from gateway.metrics import Metrics
from gateway.retention import Retention, purge_expired
from gateway.store import Inbound, SqliteStore
from gateway.store.admin import AdminError, ItemRef, QueueAdmin
from mappings.model import Document

DAY = 86400.0


def sql(path: Path, statement: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(statement, params).fetchall()


async def message(store: SqliteStore, control_id: str) -> int:
    stored = await store.store_inbound(Inbound("mllp", "HIS|BV", control_id, "ADT^A01", "cid", b"MSH|x", b"ACK"))
    return stored.message_id


async def mapped(store: SqliteStore, control_id: str, doc_id: str, version: int, patient: str) -> int:
    """A message mapped into one document version with one submission; returns the outbox id."""
    message_id = await message(store, control_id)
    await store.commit_mapping(message_id, [Document(doc_id, version, "episode", patient, {"v": version})],
                               [Submission("bhxh_xml130", f"{doc_id}:v{version}", doc_id, version, b"<x/>")])
    [(outbox_id,)] = sql(store.path, "SELECT id FROM outbox WHERE idempotency_key = ?", (f"{doc_id}:v{version}",))
    return outbox_id


def age_everything(path: Path, days: float) -> None:
    """Move every timestamp `days` into the past, as if the work had finished then."""
    shift = days * DAY
    sql(path, "UPDATE messages SET received_at = received_at - ?, finished_at = finished_at - ?", (shift, shift))
    sql(path, "UPDATE outbox SET created_at = created_at - ?, finished_at = finished_at - ?", (shift, shift))
    sql(path, "UPDATE documents SET created_at = created_at - ?", (shift,))


@pytest.fixture
async def store(tmp_path: Path):
    s = await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"r" * 32)).open()
    yield s
    await s.close()


async def test_old_delivered_work_loses_its_payloads_but_keeps_metadata_and_receipts(store: SqliteStore) -> None:
    delivered = await mapped(store, "C1", "EP1", 1, "p1")
    await store.claim_submissions(10)
    await store.mark_delivered(delivered, Receipt("TX-1", "202603120830", "000"))
    dead = await mapped(store, "C2", "EP2", 1, "p2")
    await store.claim_submissions(10)
    await store.dead_letter_submission(dead, "MA_LK closed")
    waiting = await mapped(store, "C3", "EP3", 1, "p3")
    refused = await message(store, "C4")
    await store.dead_letter_message(refused, "PID-3 required")
    age_everything(store.path, 31)

    purged = await purge_expired(store, time.time() - 30 * DAY)

    assert purged == {"messages": 1, "outbox": 0, "documents": 1}  # the delivered body went on delivery
    path = store.path
    assert sql(path, "SELECT control_id, payload IS NULL, purged_at IS NOT NULL, state FROM messages ORDER BY id") == [
        ("C1", 1, 1, "mapped"),  # delivered: purged
        ("C2", 0, 0, "mapped"),  # its submission is dead: an operator may need the source message
        ("C3", 0, 0, "mapped"),  # its submission still waits
        ("C4", 0, 0, "dead")]
    assert sql(path, "SELECT id, id NOT IN (SELECT outbox_id FROM outbox_bodies), state FROM outbox ORDER BY id") == [
        (delivered, 1, "delivered"), (dead, 0, "dead"), (waiting, 0, "pending")]
    assert sql(path, "SELECT document_id, bundle IS NULL FROM documents ORDER BY document_id") == [
        ("EP1", 1), ("EP2", 0), ("EP3", 0)]
    assert sql(path, "SELECT outbox_id, transaction_id FROM receipts") == [(delivered, "TX-1")]


async def test_recent_work_is_kept_whole(store: SqliteStore) -> None:
    delivered = await mapped(store, "C1", "EP1", 1, "p1")
    await store.claim_submissions(10)
    await store.mark_delivered(delivered, Receipt("TX-1", "202603120830", "000"))
    age_everything(store.path, 29)
    assert await purge_expired(store, time.time() - 30 * DAY) == {"messages": 0, "outbox": 0, "documents": 0}


async def test_a_late_message_after_purge_continues_the_version_from_an_empty_document(store: SqliteStore) -> None:
    for version, control_id in ((1, "C1"), (2, "C2")):
        outbox_id = await mapped(store, control_id, "EP1", version, "p1")
        await store.claim_submissions(10)
        await store.mark_delivered(outbox_id, Receipt(f"TX-{version}", "202603120830", "000"))
    age_everything(store.path, 40)
    await purge_expired(store, time.time() - 30 * DAY)
    latest = await store.latest_document("EP1")
    assert latest is not None and latest.version == 2 and latest.bundle == {}


async def test_a_purged_payload_is_reported_as_purged_to_the_operator(store: SqliteStore) -> None:
    delivered = await mapped(store, "C1", "EP1", 1, "p1")
    await store.claim_submissions(10)
    await store.mark_delivered(delivered, Receipt("TX-1", "202603120830", "000"))
    age_everything(store.path, 31)
    await purge_expired(store, time.time() - 30 * DAY)
    with pytest.raises(AdminError, match="purged by the retention policy"):
        await QueueAdmin(store, "tester").payload(ItemRef("inbox", 1))
    with pytest.raises(AdminError, match="dropped once the portal accepted it"):
        await QueueAdmin(store, "tester").payload(ItemRef("outbox", delivered))


class ObservedRetention(Retention):
    """The real periodic task, telling the test when a whole purge (counting included) has finished."""

    def __init__(self, store: SqliteStore, metrics: Metrics) -> None:
        super().__init__(store, metrics, retention_days=30, interval_seconds=3600)
        self.purged = asyncio.Event()

    async def run_once(self) -> dict[str, int]:
        purged = await super().run_once()
        self.purged.set()
        return purged


async def test_the_periodic_task_purges_and_counts(store: SqliteStore) -> None:
    delivered = await mapped(store, "C1", "EP1", 1, "p1")
    await store.claim_submissions(10)
    await store.mark_delivered(delivered, Receipt("TX-1", "202603120830", "000"))
    age_everything(store.path, 31)
    metrics = Metrics()
    retention = ObservedRetention(store, metrics)
    retention.start()
    try:
        # Waits for the end of the first purge, not for its first visible effect: the counter moves after
        # every table is purged, so stopping as soon as the payload was gone could stop before the count.
        await asyncio.wait_for(retention.purged.wait(), timeout=120)
    finally:
        await retention.stop()
    assert sql(store.path, "SELECT payload IS NULL FROM messages") == [(1,)]
    assert metrics.registry.get_sample_value("healthbook_gateway_purged_payloads_total", {"table": "messages"}) == 1


async def test_purge_works_in_chunks_until_done(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.retention.PURGE_CHUNK", 2)
    for n in range(5):
        outbox_id = await mapped(store, f"C{n}", f"EP{n}", 1, f"p{n}")
        await store.claim_submissions(10)
        await store.mark_delivered(outbox_id, Receipt(f"TX-{n}", "202603120830", "000"))
    age_everything(store.path, 31)
    assert await purge_expired(store, time.time() - 30 * DAY) == {"messages": 5, "outbox": 0, "documents": 5}
