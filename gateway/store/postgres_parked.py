"""The outbox insert and parked documents (episodes waiting for a site mapping) on PostgreSQL, as
sqlite_parked.py does them for SQLite."""
from __future__ import annotations

import asyncpg

from adapters.portal.base import Submission
from gateway.encryption import PayloadCipher
from gateway.store.interface import Parked

PARKED = ("SELECT document_id, version, channel, codes, first_received_at FROM parked_documents"
          " ORDER BY first_received_at, document_id")


async def enqueue(db: asyncpg.Connection, item: Submission, patient_key: str, received_at: float,
                  sealed_body: bytes) -> None:
    """One outbox row; it supersedes the document's undelivered earlier versions and ends their wait (a
    withdrawing item only supersedes: it sends nothing)."""
    # A version that replaces undelivered or parked ones carries their data, so it keeps their age:
    # the 24-hour delivery clock runs from the oldest acknowledgement it contains.
    replaced = (item.document_id, item.channel, item.version)
    replaced_since = await db.fetchval(
        "SELECT min(t) FROM (SELECT min(first_received_at) AS t FROM outbox WHERE document_id = $1"
        " AND channel = $2 AND version < $3 AND state = 'pending' UNION ALL SELECT first_received_at"
        " FROM parked_documents WHERE document_id = $1 AND channel = $2 AND version <= $3) AS replaced", *replaced)
    await db.execute(
        "UPDATE outbox SET state = 'superseded', finished_at = hbgw_now(), reason = $4"
        " WHERE document_id = $1 AND channel = $2 AND version < $3 AND state = 'pending'",
        *replaced, f"{'withdrawn' if item.withdraws else 'replaced'} by version {item.version}")
    await db.execute("DELETE FROM parked_documents WHERE document_id = $1 AND channel = $2 AND version <= $3",
                     *replaced)
    if item.withdraws:  # e.g. a reopened or cancelled episode: its held files must not go
        return
    first_received_at = min(received_at, replaced_since) if replaced_since else received_at
    inserted = await db.fetchval(
        "INSERT INTO outbox (channel, idempotency_key, document_id, version, patient_key, content_type,"
        " first_received_at, created_at, state, next_attempt_at, file_type, facility_code)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, hbgw_now(), 'pending', greatest(hbgw_now(), $8), $9, $10)"
        " ON CONFLICT (channel, idempotency_key) DO NOTHING RETURNING id",
        item.channel, item.idempotency_key, item.document_id, item.version, patient_key, item.content_type,
        first_received_at, float(item.not_before), item.file_type, item.facility_code)
    if inserted is not None:
        await db.execute("INSERT INTO outbox_bodies (outbox_id, body) VALUES ($1, $2)", inserted, sealed_body)


async def park(db: asyncpg.Connection, waiting: Parked, received_at: float) -> None:
    """Record (or move to this version) a document's wait, keeping the oldest acknowledgement's time."""
    since = await db.fetchval("SELECT min(first_received_at) FROM parked_documents WHERE document_id = $1",
                              waiting.document_id)
    await db.execute(
        "INSERT INTO parked_documents (document_id, version, channel, codes, first_received_at, parked_at)"
        " VALUES ($1, $2, $3, $4, $5, hbgw_now()) ON CONFLICT (document_id) DO UPDATE SET"
        " version = excluded.version, channel = excluded.channel, codes = excluded.codes,"
        " first_received_at = excluded.first_received_at, parked_at = excluded.parked_at",
        waiting.document_id, waiting.version, waiting.channel, " ".join(waiting.codes),
        min(since, received_at) if since else received_at)


async def end_waits(db: asyncpg.Connection, document_id: str, version: int) -> None:
    """A version built in full (or cancelled): the earlier versions of its document wait no more."""
    await db.execute("DELETE FROM parked_documents WHERE document_id = $1 AND version < $2", document_id, version)


async def release(db: asyncpg.Connection, cipher: PayloadCipher, waiting: Parked, patient_key: str,
                  submissions: list[Submission], codes: tuple[str, ...]) -> None:
    """A parked version rebuilt: queue its submissions (ending the wait), or record what it still lacks."""
    if codes:
        await db.execute("UPDATE parked_documents SET codes = $1 WHERE document_id = $2 AND version = $3",
                         " ".join(codes), waiting.document_id, waiting.version)
        return
    for item in submissions:
        await enqueue(db, item, patient_key, waiting.first_received_at, cipher.seal(item.body, b"outbox"))
    await db.execute("DELETE FROM parked_documents WHERE document_id = $1 AND version = $2",
                     waiting.document_id, waiting.version)
