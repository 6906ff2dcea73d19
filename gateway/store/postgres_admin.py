"""The SQL of the rarer operations on the PostgreSQL store: dead letters with their audit trail, retention,
and taking over the leases of a gateway node that died.

Each function runs on one connection inside the caller's transaction, so an operator's change and its audit
record commit together. Nothing is ever deleted: a discarded item keeps its metadata and reason, and a purge
empties only the payload column, marking `purged_at`. The rules match sqlite_admin.py; only the dialect differs.
"""
from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from gateway.store.interface import AdminError, ItemRef
from gateway.store.sqlite_admin import INBOX_ITEMS, OUTBOX_ITEMS, QueueTable

NODE_LOCK_CLASS = 0x4842  # advisory lock (class, node id) a node holds on its own connection while it serves
PATIENT_LOCK_CLASS = 0x4850  # advisory lock (class, hashtext(patient key)) while a patient's outbox rows go in

QUEUES = {"inbox": QueueTable("messages", b"messages", "SELECT payload, state, purged_at FROM messages WHERE id = $1"),
          "outbox": QueueTable("outbox", b"outbox", "SELECT b.body, o.state, o.purged_at FROM outbox o"
                                                    " LEFT JOIN outbox_bodies b ON b.outbox_id = o.id WHERE o.id = $1")}
ITEM_BY_ID = {"inbox": f"{INBOX_ITEMS} WHERE id = $1", "outbox": f"{OUTBOX_ITEMS} WHERE o.id = $1"}
FIRST = "$1"

_UNFINISHED = "('pending', 'in_flight', 'dead')"
_PURGES = {
    "messages": (
        "UPDATE messages SET payload = NULL, purged_at = hbgw_now() WHERE id IN ("
        " SELECT m.id FROM messages m WHERE m.payload IS NOT NULL AND m.state IN ('mapped', 'discarded')"
        " AND m.finished_at < $1 AND NOT EXISTS (SELECT 1 FROM documents d JOIN outbox o"
        "   ON o.document_id = d.document_id AND o.version = d.version"
        f"   WHERE d.message_id = m.id AND o.state IN {_UNFINISHED}) LIMIT $2 FOR UPDATE SKIP LOCKED)"),
    "outbox": (  # a delivered body is dropped on delivery already (PostgresStore.mark_delivered)
        "WITH purged AS (DELETE FROM outbox_bodies WHERE outbox_id IN ("
        " SELECT o.id FROM outbox_bodies b JOIN outbox o ON o.id = b.outbox_id"
        " WHERE o.state IN ('delivered', 'superseded', 'discarded') AND o.finished_at < $1 LIMIT $2"
        " FOR UPDATE OF b SKIP LOCKED) RETURNING outbox_id)"
        " UPDATE outbox SET purged_at = hbgw_now() WHERE id IN (SELECT outbox_id FROM purged)"),
    "documents": (
        "UPDATE documents SET bundle = NULL, purged_at = hbgw_now() WHERE (document_id, version) IN ("
        " SELECT d.document_id, d.version FROM documents d WHERE d.bundle IS NOT NULL AND d.created_at < $1"
        " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.document_id = d.document_id AND o.version = d.version"
        f"   AND o.state IN {_UNFINISHED}) LIMIT $2 FOR UPDATE SKIP LOCKED)"),
}


def state_in(states: Sequence[str]) -> tuple[str, tuple[list[str]]]:
    """The condition "state is one of these" and its parameter (one text array)."""
    return "= ANY($1::text[])", (list(states),)


def _count(status: str) -> int:
    """The row count of an UPDATE's command status ("UPDATE 3")."""
    return int(status.rsplit(" ", 1)[-1])


async def purge(db: asyncpg.Connection, kind: str, cutoff: float, limit: int) -> int:
    """Empty up to `limit` payloads of one kind past retention (the rules are in gateway/retention.py)."""
    return _count(await db.execute(_PURGES[kind], cutoff, limit))


async def release_node(db: asyncpg.Connection, node: int) -> tuple[int, int]:
    """Make everything a node had leased claimable now and forget the node; returns (messages, submissions)."""
    messages = await db.execute("UPDATE messages SET lease_until = 0, lease_owner = NULL"
                                " WHERE state = 'received' AND lease_owner = $1", node)
    submissions = await db.execute(
        "UPDATE outbox SET state = 'pending', lease_until = 0, lease_owner = NULL, next_attempt_at = hbgw_now()"
        " WHERE state = 'in_flight' AND lease_owner = $1", node)
    await db.execute("DELETE FROM nodes WHERE id = $1", node)
    return _count(messages), _count(submissions)


async def take_over_dead_nodes(db: asyncpg.Connection, me: int) -> tuple[int, int]:
    """Release the leases of every node whose advisory lock is free, i.e. whose process or connection died:
    its work restarts at once instead of when its leases run out."""
    messages = submissions = 0
    for (node,) in await db.fetch("SELECT id FROM nodes WHERE id <> $1", me):
        if await db.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", NODE_LOCK_CLASS, node):
            released = await release_node(db, node)
            messages, submissions = messages + released[0], submissions + released[1]
    return messages, submissions


async def audit(db: asyncpg.Connection, operator: str, action: str, ref: ItemRef, detail: str = "") -> None:
    """One line of the audit trail, in the caller's transaction."""
    await db.execute("INSERT INTO operator_actions (at, operator, action, item, detail)"
                     " VALUES (hbgw_now(), $1, $2, $3, $4)", operator, action, str(ref), detail)


async def record_attempt(db: asyncpg.Connection, outbox_id: int, outcome: str, reason: str) -> None:
    """Keep each delivery attempt's outcome, so an operator sees the history, not only the last reason."""
    await db.execute("INSERT INTO submission_attempts (outbox_id, at, outcome, reason) VALUES ($1, hbgw_now(), $2, $3)",
                     outbox_id, outcome, reason)


async def read_payload(db: asyncpg.Connection, ref: ItemRef, operator: str) -> bytes:
    """The sealed payload, its viewing audited in the same transaction."""
    row = await db.fetchrow(QUEUES[ref.queue].payload, ref.id)
    if row is None:
        raise AdminError(f"there is no item {ref}")
    if row[0] is None and row[1] == "delivered" and row[2] is None:
        raise AdminError(f"the signed body of {ref} was dropped once the portal accepted it; its receipt and"
                         " the document it was built from are kept")
    if row[0] is None:
        raise AdminError(f"the payload of {ref} was purged by the retention policy; its metadata is kept")
    await audit(db, operator, "show-payload", ref)
    return bytes(row[0])


async def retry(db: asyncpg.Connection, ref: ItemRef, operator: str) -> int:
    """Re-queue a dead item's message; a refused submission is superseded by mapping its message again,
    since its signed body may carry the very mistake (certificate, facility code) that was fixed."""
    await _require_dead(db, ref)
    message_id = ref.id
    if ref.queue == "outbox":
        await _refuse_if_superseded(db, ref)
        message_id = await _source_message(db, ref)
        await db.execute("UPDATE outbox SET state = 'superseded', finished_at = hbgw_now(), reason = $1"
                         " WHERE id = $2", f"rebuilt from inbox:{message_id} by dlq retry", ref.id)
    await db.execute("UPDATE messages SET state = 'received', attempts = 0, lease_until = 0, lease_owner = NULL,"
                     " reason = NULL, finished_at = NULL WHERE id = $1", message_id)
    await audit(db, operator, "retry", ref, f"inbox:{message_id} re-queued")
    return message_id


async def discard(db: asyncpg.Connection, ref: ItemRef, operator: str, note: str) -> None:
    """Mark a dead item discarded, audited."""
    await _require_dead(db, ref)
    await db.execute(f"UPDATE {QUEUES[ref.queue].table} SET state = 'discarded', finished_at = hbgw_now()"
                     " WHERE id = $1", ref.id)
    await audit(db, operator, "discard", ref, note)


async def _require_dead(db: asyncpg.Connection, ref: ItemRef) -> None:
    state = await db.fetchval(f"SELECT state FROM {QUEUES[ref.queue].table} WHERE id = $1 FOR UPDATE", ref.id)
    if state is None:
        raise AdminError(f"there is no item {ref}")
    if state != "dead":
        raise AdminError(f"{ref} is {state}, not dead: only dead items can be retried or discarded")


async def _refuse_if_superseded(db: asyncpg.Connection, ref: ItemRef) -> None:
    """An older version must not overtake a newer one at the portal."""
    newer = await db.fetchrow(
        "SELECT n.id, n.version FROM outbox o JOIN outbox n ON n.document_id = o.document_id"
        " AND n.channel = o.channel AND n.version > o.version WHERE o.id = $1 ORDER BY n.version DESC LIMIT 1",
        ref.id)
    if newer is not None:
        raise AdminError(f"{ref} is an older version of its document than outbox:{newer[0]} (v{newer[1]}):"
                         f" retry or discard that one instead")


async def _source_message(db: asyncpg.Connection, ref: ItemRef) -> int:
    """The message whose mapping produced this submission; its payload must still be kept."""
    row = await db.fetchrow(
        "SELECT m.id, m.payload IS NULL FROM outbox o JOIN documents d ON d.document_id = o.document_id"
        " AND d.version = o.version JOIN messages m ON m.id = d.message_id WHERE o.id = $1", ref.id)
    if row is None:
        raise AdminError(f"{ref} has no source message on record: correct it at the source and send it again")
    if row[1]:
        raise AdminError(f"the message behind {ref} (inbox:{row[0]}) was purged by the retention policy:"
                         " correct it and use `replay FILE`")
    return int(row[0])
