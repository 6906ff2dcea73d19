"""The store's operator queries on a real SQLite file: searches, one message's history, feeds, channels,
bulk dead-letter changes, retry-now and the audit trail."""
from __future__ import annotations

import sqlite3
import time

import pytest

from adapters.portal.base import Receipt, Submission
from gateway.store import AuditFilter, Inbound, ItemRef, MessageFilter, SqliteStore
from mappings.model import Document
from tests.store_backends import StoreBackend

KEY = b"b" * 32


def doc(doc_id: str) -> Document:
    return Document(doc_id, 1, "episode", "patient-key", {"resourceType": "Bundle"})


def sub(doc_id: str) -> Submission:
    return Submission("bhxh_xml130", f"{doc_id}:v1", doc_id, 1, b"<GIAMDINHHS/>", "application/xml")


@pytest.fixture
async def store(backend: StoreBackend):
    """inbox:1 (HIS|BV, ADT^A01, C1) mapped into D1, delivered after one retry; inbox:2 (HIS|BV, ORU^R01, C2)
    dead; inbox:3 (LAB|BV, ADT^A03, C3) mapped into D3, pending. On both backends."""
    store = await backend.open(key=KEY)
    for n, (sender, kind) in enumerate((("HIS|BV", "ADT^A01"), ("HIS|BV", "ORU^R01"), ("LAB|BV", "ADT^A03")), 1):
        await store.store_inbound(Inbound("mllp", sender, f"C{n}", kind, "cid", b"MSH|x", f"ACK C{n}".encode()))
    await store.commit_mapping(1, [doc("D1")], [sub("D1")])
    await store.dead_letter_message(2, "PID-3 required")
    await store.commit_mapping(3, [doc("D3")], [sub("D3")])
    await store.claim_submissions(1)
    await store.schedule_retry(1, 0, "portal answered 503")
    await store.claim_submissions(1)
    await store.mark_delivered(1, Receipt("GD1", "20260312", "200", {}))
    await store.schedule_retry(2, 3600, "no answer")
    yield store
    await store.close()


@pytest.mark.parametrize("query, found", [
    (MessageFilter(), [3, 2, 1]),
    (MessageFilter(control_id="C2"), [2]),
    (MessageFilter(sender="HIS"), [2, 1]),
    (MessageFilter(sender="HIS|BV", message_type="ADT"), [1]),
    (MessageFilter(state="dead"), [2]),
    (MessageFilter(document_id="D3"), [3]),
    (MessageFilter(before_id=3, limit=1), [2]),
    (MessageFilter(since=4102444800.0), []),  # 2100-01-01
])
async def test_find_messages(store: SqliteStore, query: MessageFilter, found: list[int]) -> None:
    assert [row.id for row in await store.find_messages(query)] == found


async def test_message_detail_has_the_ack_documents_attempts_and_receipt(store: SqliteStore) -> None:
    detail = await store.message_detail(1)
    assert detail.ack == b"ACK C1" and [d.document_id for d in detail.documents] == ["D1"]
    assert [(s.id, s.state, s.attempts) for s in detail.submissions] == [(1, "delivered", 2)]
    assert [(a.outcome, a.reason) for a in detail.attempts] == [("retry", "portal answered 503"), ("delivered", "GD1")]
    assert [(r.transaction_id, r.result_code) for r in detail.receipts] == [("GD1", "200")]


async def test_feeds_and_channels(store: SqliteStore) -> None:
    feeds = await store.sender_activity(time.time() - 3600)
    assert [(f.sender, f.received, f.refused) for f in feeds] == [("HIS|BV", 2, 1), ("LAB|BV", 1, 0)]
    assert [f.received for f in await store.sender_activity(time.time() + 60)] == [0, 0], "last message kept"
    (channel,) = await store.channel_backlog(time.time() - 3600)
    assert (channel.channel, channel.pending, channel.delivered_recently, channel.last_reason) == (
        "bhxh_xml130", 1, 1, "no answer")
    assert channel.next_attempt_at is not None and channel.next_attempt_at > time.time() + 3000


async def test_retry_now_makes_waiting_submissions_due_and_is_audited(store: SqliteStore) -> None:
    assert await store.retry_now("bhxh_xml130", "ops") == 1
    (channel,) = await store.channel_backlog(0)
    assert channel.next_attempt_at is not None and channel.next_attempt_at <= time.time()
    assert [(a.action, a.item) for a in await store.audit_trail(AuditFilter())] == [
        ("retry-now", "channel:bhxh_xml130")]


async def test_change_dead_does_each_item_on_its_own(store: SqliteStore) -> None:
    outcomes = await store.change_dead("discard", [ItemRef("inbox", 2), ItemRef("inbox", 1)], "ops", "test")
    assert [(str(ref), done) for ref, done, _ in outcomes] == [("inbox:2", True), ("inbox:1", False)]
    assert "not dead" in outcomes[1][2]
    assert [(a.action, a.item) for a in await store.audit_trail(AuditFilter(operator="ops"))] == [
        ("discard", "inbox:2")]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL has no store-wide write lock
async def test_reads_answer_while_another_process_holds_the_write_lock(store: SqliteStore) -> None:
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert [row.id for row in await store.find_messages(MessageFilter(state="dead"))] == [2]
        assert (await store.message_detail(1)).receipts
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_the_unmapped_backlog_is_found_like_the_rest(store: SqliteStore) -> None:
    """The search indexes leave out messages still waiting to be mapped (schema migration 8); the searches
    still find them, and a feed whose only messages wait is still shown."""
    await store.store_inbound(Inbound("mllp", "RIS|BV", "C4", "ORU^R01", "cid", b"MSH|x", b"ACK C4"))
    assert [row.id for row in await store.find_messages(MessageFilter(control_id="C4"))] == [4]
    assert [row.id for row in await store.find_messages(MessageFilter(since=time.time() - 3600))] == [4, 3, 2, 1]
    assert [row.id for row in await store.find_messages(MessageFilter(sender="RIS"))] == [4]
    feeds = {f.sender: (f.received, f.refused) for f in await store.sender_activity(time.time() - 3600)}
    assert feeds == {"HIS|BV": (2, 1), "LAB|BV": (1, 0), "RIS|BV": (1, 0)}


async def test_a_control_id_search_uses_its_index_and_finds_replays(tmp_path) -> None:
    """The control id search is one index range (not a scan of the inbox), which also holds the replays."""
    from gateway.store.schema import migrate
    from gateway.store.sqlite_browse import message_search
    db = sqlite3.connect(tmp_path / "plan.db", isolation_level=None)
    migrate(db, lambda text: text)
    sql, params = message_search(MessageFilter(control_id="C1"))
    plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INDEX messages_control" in plan and "SCAN messages" not in plan, plan
    rows = [("C1", "mapped"), ("C1~replay:abc", "mapped"), ("C10", "mapped"), ("C1", "received"), ("C2", "mapped")]
    for n, (control_id, state) in enumerate(rows):
        db.execute("INSERT INTO messages (source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, ack) VALUES ('mllp', ?, ?, 'ADT^A01', 'c', 1.0, ?, x'00')", (f"S{n}", control_id, state))
    assert sorted(row[0] for row in db.execute(sql, params)) == [1, 2, 4]
    db.close()
