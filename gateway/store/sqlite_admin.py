"""The SQL of the rarer operations on the SQLite store: dead letters with their audit trail, and retention.

Each function runs on the writer's connection inside one write (see writer.py), so an operator's change and
its audit record commit together. Nothing is ever deleted: a discarded item keeps its metadata and reason,
and a purge empties only the payload column, marking `purged_at`.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from gateway.store.interface import AdminError, ItemRef, QueuedItem


class QueueTable(NamedTuple):
    table: str
    associated: bytes  # the cipher's associated data for the payload
    payload: str  # SELECT payload, state, purged_at of the item with id = ?


QUEUES = {"inbox": QueueTable("messages", b"messages", "SELECT payload, state, purged_at FROM messages WHERE id = ?"),
          "outbox": QueueTable("outbox", b"outbox", "SELECT b.body, o.state, o.purged_at FROM outbox o"
                                                    " LEFT JOIN outbox_bodies b ON b.outbox_id = o.id WHERE o.id = ?")}
INBOX_ITEMS = ("SELECT id, state, message_type, sender, reason, received_at, finished_at, attempts,"
               " payload IS NULL, '' FROM messages")
OUTBOX_ITEMS = ("SELECT o.id, o.state, o.channel, o.document_id || ':v' || o.version, o.reason,"
                " o.first_received_at, o.finished_at, o.attempts,"
                " NOT EXISTS (SELECT 1 FROM outbox_bodies b WHERE b.outbox_id = o.id),"
                " coalesce('inbox:' || (SELECT d.message_id FROM documents d"
                "   WHERE d.document_id = o.document_id AND d.version = o.version), '') FROM outbox o")
ACTIONS = "SELECT at, operator, action, item, detail FROM operator_actions"
FIRST = "?"  # the first query parameter (PostgreSQL: $1)
ITEM_BY_ID = {"inbox": f"{INBOX_ITEMS} WHERE id = ?", "outbox": f"{OUTBOX_ITEMS} WHERE o.id = ?"}

_UNFINISHED = "('pending', 'in_flight', 'dead')"
_PURGES = {
    "messages": (
        "UPDATE messages SET payload = NULL, purged_at = :now WHERE id IN ("
        " SELECT m.id FROM messages m WHERE m.payload IS NOT NULL AND m.state IN ('mapped', 'discarded')"
        " AND m.finished_at < :cutoff AND NOT EXISTS (SELECT 1 FROM documents d JOIN outbox o"
        "   ON o.document_id = d.document_id AND o.version = d.version"
        f"   WHERE d.message_id = m.id AND o.state IN {_UNFINISHED}) LIMIT :chunk)"),
    "outbox": (  # a delivered body is dropped on delivery already (SqliteStore.mark_delivered)
        "SELECT o.id FROM outbox_bodies b JOIN outbox o ON o.id = b.outbox_id"
        " WHERE o.state IN ('delivered', 'superseded', 'discarded') AND o.finished_at < :cutoff LIMIT :chunk"),
    "documents": (
        "UPDATE documents SET bundle = NULL, purged_at = :now WHERE rowid IN ("
        " SELECT d.rowid FROM documents d WHERE d.bundle IS NOT NULL AND d.created_at < :cutoff"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.document_id = d.document_id AND o.version = d.version"
        f"   AND o.state IN {_UNFINISHED}) LIMIT :chunk)"),
}


def state_in(states: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The condition "state is one of these" and its parameters."""
    return f"IN ({', '.join('?' * len(states))})", tuple(states)


def purge(db: sqlite3.Connection, kind: str, cutoff: float, limit: int) -> int:
    """Empty up to `limit` payloads of one kind past retention (the rules are in gateway/retention.py)."""
    now = time.time()
    if kind != "outbox":
        return db.execute(_PURGES[kind], {"now": now, "cutoff": cutoff, "chunk": limit}).rowcount
    ids = json.dumps([row[0] for row in db.execute(_PURGES[kind], {"cutoff": cutoff, "chunk": limit})])
    db.execute("UPDATE outbox SET purged_at = ? WHERE id IN (SELECT value FROM json_each(?))", (now, ids))
    return db.execute("DELETE FROM outbox_bodies WHERE outbox_id IN (SELECT value FROM json_each(?))",
                      (ids,)).rowcount


def item(queue: str, row: Sequence[Any]) -> QueuedItem:
    """An INBOX_ITEMS or OUTBOX_ITEMS row as the operator sees it."""
    return QueuedItem(ItemRef(queue, row[0]), row[1], row[2], row[3], row[4] or "", row[5], row[6], row[7],
                      bool(row[8]), row[9])


def audit(db: sqlite3.Connection, operator: str, action: str, ref: ItemRef, detail: str = "") -> None:
    """Record who did what to which item."""
    db.execute("INSERT INTO operator_actions (at, operator, action, item, detail) VALUES (?, ?, ?, ?, ?)",
               (time.time(), operator, action, str(ref), detail))


def record_attempt(db: sqlite3.Connection, outbox_id: int, outcome: str, reason: str) -> None:
    """Keep each delivery attempt's outcome, so an operator sees the history, not only the last reason."""
    db.execute("INSERT INTO submission_attempts (outbox_id, at, outcome, reason) VALUES (?, ?, ?, ?)",
               (outbox_id, time.time(), outcome, reason))


def read_payload(db: sqlite3.Connection, ref: ItemRef, operator: str) -> bytes:
    """The sealed payload, its viewing audited in the same transaction."""
    queue = QUEUES[ref.queue]
    row = db.execute(queue.payload, (ref.id,)).fetchone()
    if row is None:
        raise AdminError(f"there is no item {ref}")
    if row[0] is None and row[1] == "delivered" and row[2] is None:
        raise AdminError(f"the signed body of {ref} was dropped once the portal accepted it; its receipt and"
                         " the document it was built from are kept")
    if row[0] is None:
        raise AdminError(f"the payload of {ref} was purged by the retention policy; its metadata is kept")
    audit(db, operator, "show-payload", ref)
    return bytes(row[0])


def retry(db: sqlite3.Connection, ref: ItemRef, operator: str) -> int:
    """Re-queue a dead item's message; a refused submission is superseded by mapping its message again,
    since its signed body may carry the very mistake (certificate, facility code) that was fixed."""
    _require_dead(db, ref)
    message_id = ref.id
    if ref.queue == "outbox":
        _refuse_if_superseded(db, ref)
        message_id = _source_message(db, ref)
        db.execute("UPDATE outbox SET state = 'superseded', finished_at = ?, reason = ?"
                   " WHERE id = ?", (time.time(), f"rebuilt from inbox:{message_id} by dlq retry", ref.id))
    db.execute("UPDATE messages SET state = 'received', attempts = 0, lease_until = 0, reason = NULL,"
               " finished_at = NULL WHERE id = ?", (message_id,))
    audit(db, operator, "retry", ref, f"inbox:{message_id} re-queued")
    return message_id


def discard(db: sqlite3.Connection, ref: ItemRef, operator: str, note: str) -> None:
    """Mark a dead item discarded, audited."""
    _require_dead(db, ref)
    db.execute(f"UPDATE {QUEUES[ref.queue].table} SET state = 'discarded', finished_at = ? WHERE id = ?",
               (time.time(), ref.id))
    audit(db, operator, "discard", ref, note)


def _require_dead(db: sqlite3.Connection, ref: ItemRef) -> None:
    row = db.execute(f"SELECT state FROM {QUEUES[ref.queue].table} WHERE id = ?", (ref.id,)).fetchone()
    if row is None:
        raise AdminError(f"there is no item {ref}")
    if row[0] != "dead":
        raise AdminError(f"{ref} is {row[0]}, not dead: only dead items can be retried or discarded")


def _refuse_if_superseded(db: sqlite3.Connection, ref: ItemRef) -> None:
    """An older version must not overtake a newer one at the portal."""
    newer = db.execute(
        "SELECT n.id, n.version FROM outbox o JOIN outbox n ON n.document_id = o.document_id"
        " AND n.channel = o.channel AND n.version > o.version WHERE o.id = ? ORDER BY n.version DESC LIMIT 1",
        (ref.id,)).fetchone()
    if newer is not None:
        raise AdminError(f"{ref} is an older version of its document than outbox:{newer[0]} (v{newer[1]}):"
                         f" retry or discard that one instead")


def _source_message(db: sqlite3.Connection, ref: ItemRef) -> int:
    """The message whose mapping produced this submission; its payload must still be kept."""
    row = db.execute(
        "SELECT m.id, m.payload IS NULL FROM outbox o JOIN documents d ON d.document_id = o.document_id"
        " AND d.version = o.version JOIN messages m ON m.id = d.message_id WHERE o.id = ?", (ref.id,)).fetchone()
    if row is None:
        raise AdminError(f"{ref} has no source message on record: correct it at the source and send it again")
    if row[1]:
        raise AdminError(f"the message behind {ref} (inbox:{row[0]}) was purged by the retention policy:"
                         " correct it and use `replay FILE`")
    return int(row[0])
