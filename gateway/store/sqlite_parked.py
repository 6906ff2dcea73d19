"""The SQL of the outbox insert and of parked documents (episodes waiting for a site mapping), for SqliteStore."""
from __future__ import annotations

import sqlite3

from adapters.portal.base import Submission
from gateway.encryption import PayloadCipher
from gateway.store.interface import Parked

PARKED = "SELECT document_id, version, channel, codes, first_received_at FROM parked_documents" \
         " ORDER BY first_received_at, document_id"


def enqueue(db: sqlite3.Connection, now: float, item: Submission, patient_key: str, received_at: float,
            sealed_body: bytes) -> None:
    """One outbox row; it supersedes the document's undelivered earlier versions and ends their wait (a
    withdrawing item only supersedes: it sends nothing)."""
    # A version that replaces undelivered or parked ones carries their data, so it keeps their age:
    # the 24-hour delivery clock runs from the oldest acknowledgement it contains.
    replaced = (item.document_id, item.channel, item.version)
    (replaced_since,) = db.execute(
        "SELECT min(t) FROM (SELECT min(first_received_at) AS t FROM outbox WHERE document_id = ?"
        " AND channel = ? AND version < ? AND state = 'pending' UNION ALL SELECT first_received_at"
        " FROM parked_documents WHERE document_id = ? AND channel = ? AND version <= ?)",
        replaced + replaced).fetchone()
    db.execute(
        "UPDATE outbox SET state = 'superseded', finished_at = ?, reason = ? || ?"
        " WHERE document_id = ? AND channel = ? AND version < ? AND state = 'pending'",
        (now, "withdrawn by version " if item.withdraws else "replaced by version ", item.version, *replaced))
    db.execute("DELETE FROM parked_documents WHERE document_id = ? AND channel = ? AND version <= ?", replaced)
    if item.withdraws:  # e.g. a reopened or cancelled episode: its held files must not go
        return
    first_received_at = min(received_at, replaced_since) if replaced_since else received_at
    inserted = db.execute(
        "INSERT INTO outbox (channel, idempotency_key, document_id, version, patient_key, content_type,"
        " first_received_at, created_at, state, next_attempt_at, file_type, facility_code)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (channel, idempotency_key) DO NOTHING"
        " RETURNING id",
        (item.channel, item.idempotency_key, item.document_id, item.version, patient_key, item.content_type,
         first_received_at, now, max(now, item.not_before), item.file_type, item.facility_code)).fetchone()
    if inserted is not None:
        db.execute("INSERT INTO outbox_bodies (outbox_id, body) VALUES (?, ?)",
                   (inserted[0], sealed_body))


def park(db: sqlite3.Connection, now: float, waiting: Parked, received_at: float) -> None:
    """Record (or move to this version) a document's wait, keeping the oldest acknowledgement's time."""
    (since,) = db.execute("SELECT min(first_received_at) FROM parked_documents WHERE document_id = ?",
                          (waiting.document_id,)).fetchone()
    db.execute(
        "INSERT OR REPLACE INTO parked_documents (document_id, version, channel, codes, first_received_at,"
        " parked_at) VALUES (?, ?, ?, ?, ?, ?)",
        (waiting.document_id, waiting.version, waiting.channel, " ".join(waiting.codes),
         min(since, received_at) if since else received_at, now))


def end_waits(db: sqlite3.Connection, document_id: str, version: int) -> None:
    """A version built in full (or cancelled): the earlier versions of its document wait no more."""
    db.execute("DELETE FROM parked_documents WHERE document_id = ? AND version < ?", (document_id, version))


def release(db: sqlite3.Connection, cipher: PayloadCipher, now: float, waiting: Parked, patient_key: str,
            submissions: list[Submission], codes: tuple[str, ...]) -> None:
    """A parked version rebuilt: queue its submissions (ending the wait), or record what it still lacks."""
    if codes:
        db.execute("UPDATE parked_documents SET codes = ? WHERE document_id = ? AND version = ?",
                   (" ".join(codes), waiting.document_id, waiting.version))
        return
    for item in submissions:
        enqueue(db, now, item, patient_key, waiting.first_received_at, cipher.seal(item.body, b"outbox"))
    db.execute("DELETE FROM parked_documents WHERE document_id = ? AND version = ?",
               (waiting.document_id, waiting.version))


def row(values: tuple[object, ...] | sqlite3.Row) -> Parked:
    """A parked_documents row as a Parked."""
    document_id, version, channel, codes, first_received_at = tuple(values)
    return Parked(str(document_id), int(str(version)), str(channel), tuple(str(codes).split()),
                  float(str(first_received_at)))
