"""The Store on PostgreSQL: the same tables and rules as SQLite, shared by several gateway nodes at once.

Several nodes serve from one database. Work is claimed with `FOR UPDATE SKIP LOCKED` under a lease, marked
with the claiming node; each node holds an advisory lock for its life, and the others take over a node's
leases as soon as that lock is free (the node died, or lost its connection), or when the leases run out.
A retransmission is kept once by the unique (source, sender, control id), whichever node it reaches, and
gets the original ACK. Every node receives and submits; one at a time maps (it holds the mapping lock), so
the messages of an episode are applied in the order they were acknowledged, as on one gateway. A patient's
outbox rows are inserted under a per-patient advisory lock, so their ids follow their commit order; the
claim's head-of-line rule (no row while an earlier one of its patient is undelivered) then holds across
nodes. Concurrent acknowledgements share one transaction (group commit).
This module and its helpers (postgres_schema.py, postgres_admin.py, postgres_inbound.py, postgres_nodes.py)
hold all the PostgreSQL SQL; driver errors are turned into StoreUnavailable here, at the boundary.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import asyncpg

from adapters.portal.base import Receipt, Submission
from gateway.encryption import PayloadCipher
from gateway.store import postgres_admin, postgres_parked
from gateway.store.dead_letters import DeadLetterMethods
from gateway.store.interface import (
    PURGED_BUNDLE,
    ClaimedMessage,
    ClaimedSubmission,
    EncodedDocument,
    Inbound,
    MappingOutcome,
    Parked,
    Stored,
    StoreUnavailable,
)
from gateway.store.postgres_browse import PostgresBrowse
from gateway.store.postgres_inbound import InboundCommitter
from gateway.store.postgres_nodes import DRIVER_ERRORS, NodeMembership, describe
from gateway.store.postgres_schema import migrate
from mappings.model import Document

T = TypeVar("T")
COMMAND_TIMEOUT_SECONDS = 60.0


class PostgresStore(PostgresBrowse, DeadLetterMethods):
    """The Store (see interface.py) on a PostgreSQL database, one of possibly several nodes serving from it."""

    _admin: ClassVar[ModuleType] = postgres_admin  # the dead-letter SQL of this dialect (DeadLetterMethods)
    writes_from_any_loop: ClassVar[bool] = False  # its connection pool belongs to the loop that opened it

    def __init__(self, dsn: str, cipher: PayloadCipher, *, lease_seconds: float = 120.0, pool_size: int = 10,
                 max_batch: int = 512, max_delay_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._dsn = dsn
        self._cipher = cipher
        self._lease = lease_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self.nodes: NodeMembership | None = None  # while serving (opened as owner)
        self._inbound = InboundCommitter(self._connection, max_batch=max_batch,
                                         max_delay_seconds=max_delay_ms / 1000, on_batch=on_batch)
        self.inbox_ready = asyncio.Event()  # set when messages were committed
        self.outbox_ready = asyncio.Event()  # set when submissions were queued

    async def open(self, *, owner: bool = False) -> PostgresStore:
        """Connect and migrate; the owner (a serving node) registers itself and takes over dead nodes' leases."""
        try:
            # A database that stops answering fails the operation (no ACK) instead of hanging it for good.
            self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size,
                                                   command_timeout=COMMAND_TIMEOUT_SECONDS)
            async with self._pool.acquire() as connection:
                await migrate(connection)
            if owner:
                self.nodes = NodeMembership(self._dsn, self._transaction)
                await self.nodes.join()
                await self.nodes.sweep()
        except DRIVER_ERRORS as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open store on PostgreSQL: {describe(exc)}") from exc
        except BaseException:
            await self.close()
            raise
        self._inbound.start()
        return self

    async def close(self) -> None:
        """Commit what is queued, hand this node's leases to the others, then let go of the database."""
        await self._inbound.stop()
        if self.nodes is not None:
            await self.nodes.leave()
            self.nodes = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a driver error inside becomes StoreUnavailable."""
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        try:
            async with self._pool.acquire() as connection:
                yield connection
        except DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"store operation failed: {describe(exc)}") from exc

    @property
    def node(self) -> int | None:
        """This node's id in the nodes table while it serves; marks the leases it takes."""
        return self.nodes.node if self.nodes is not None else None

    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run fn(connection, *args) in one transaction; returns once it is committed."""
        async with self._connection() as connection, connection.transaction():
            return await fn(connection, *args)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        return await self._fetch(sql, *params)

    async def _change(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await self._transaction(fn, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            return list(await connection.fetch(sql, *args))

    # ---- inbox ---------------------------------------------------------------------------------

    def lookup_digest(self, value: str) -> str:
        """The keyed digest this store finds personal values by (see PayloadCipher.lookup_digest)."""
        return self._cipher.lookup_digest(value)

    async def store_inbound(self, inbound: Inbound) -> Stored:
        """Return only once the message is committed (or already was): the caller may then acknowledge.
        Messages arriving together share one transaction (postgres_inbound.py)."""
        digest = self._cipher.lookup_digest(inbound.content_digest) if inbound.content_digest else ""
        stored = await self._inbound.store(replace(inbound, content_digest=digest),
                                           self._cipher.seal(inbound.payload, b"messages"))
        self.inbox_ready.set()
        return stored

    # ---- inbox: mapping stage ------------------------------------------------------------------

    async def claim_messages(self, limit: int, *, excluding: Sequence[int] = ()) -> list[ClaimedMessage]:
        """Lease received messages in arrival order; an expired lease (a crash) makes them claimable again,
        except for the messages `excluding`, which the caller still holds. Only the mapping node gets any
        (postgres_nodes.py)."""
        if self.nodes is not None:
            await self.nodes.sweep()
            if not await self.nodes.may_map():
                return []
        rows = await self._fetch(
            "UPDATE messages SET lease_until = hbgw_now() + $1, lease_owner = $2, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM messages WHERE state = 'received' AND lease_until < hbgw_now()"
            "   AND id <> ALL($4::bigint[]) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, source, message_type, correlation_id, received_at, payload, attempts",
            self._lease, self.node, limit, list(excluding))
        claimed = [ClaimedMessage(r[0], r[1], r[2], r[3], r[4], self._cipher.open(r[5], b"messages"), r[6])
                   for r in rows]
        return sorted(claimed, key=lambda message: message.id)

    async def release_messages(self, message_ids: list[int], *, charged: int | None = None) -> None:
        """Make claimed, unfinished messages claimable again now; all but `charged` get their claim back."""
        async with self._connection() as connection:
            await connection.executemany(
                "UPDATE messages SET lease_until = 0, lease_owner = NULL, attempts = attempts - $1"
                " WHERE id = $2 AND state = 'received'",
                [(0 if message_id == charged else 1, message_id) for message_id in message_ids])

    async def latest_document(self, document_id: str) -> Document | None:
        """The version a new fragment of the episode builds on (its bundle is {} once purged by retention)."""
        found = (await self.latest_documents([document_id])).get(document_id)
        return found.decoded() if found is not None else None

    async def latest_documents(self, document_ids: Sequence[str]) -> dict[str, EncodedDocument]:
        """The newest version of each of these documents that exists, in one read (a batch's worth), opened
        but not decoded: the signing process that assembles onto it decodes it, not the event loop."""
        if not document_ids:
            return {}
        rows = await self._fetch(
            "SELECT DISTINCT ON (document_id) document_id, version, kind, patient_key, bundle FROM documents"
            " WHERE document_id = ANY($1::text[]) ORDER BY document_id, version DESC", sorted(set(document_ids)))
        return {document_id: EncodedDocument(document_id, version, kind, patient_key,
                                             self._cipher.open(sealed, b"documents") if sealed is not None
                                             else PURGED_BUNDLE)
                for document_id, version, kind, patient_key, sealed in rows}

    async def commit_mapping(self, message_id: int, documents: list[Document],
                             submissions: list[Submission]) -> None:
        """Save new document versions and their outbox rows, and finish the message, all or nothing."""
        await self.finish_messages([MappingOutcome(message_id, [EncodedDocument.of(document) for document in documents],
                                                   submissions)])

    async def finish_messages(self, outcomes: list[MappingOutcome]) -> None:
        """Finish a batch of mapped or refused messages in one transaction, all or nothing."""
        if not outcomes:
            return
        await self._transaction(self._finish, outcomes)
        if any(outcome.submissions for outcome in outcomes):
            self.outbox_ready.set()

    async def _finish(self, db: asyncpg.Connection, outcomes: list[MappingOutcome]) -> None:
        patients = sorted({self._cipher.lookup_digest(document.patient_key) for outcome in outcomes
                           if outcome.dead_reason is None
                           for document in outcome.documents})
        for patient in patients:  # in one order everywhere, so two nodes never wait on each other in a cycle
            await db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                             postgres_admin.PATIENT_LOCK_CLASS, patient)
        for outcome in outcomes:
            if outcome.dead_reason is None:
                await self._save_mapping(db, outcome)
            else:
                await db.execute("UPDATE messages SET state = 'dead', reason = $1, finished_at = hbgw_now(),"
                                 " lease_until = 0 WHERE id = $2", outcome.dead_reason, outcome.message_id)

    async def _save_mapping(self, db: asyncpg.Connection, outcome: MappingOutcome) -> None:
        received_at = await db.fetchval("SELECT received_at FROM messages WHERE id = $1", outcome.message_id)
        patients = {}
        for document in outcome.documents:
            patient = patients[(document.document_id, document.version)] = self._cipher.lookup_digest(
                document.patient_key)
            await db.execute(
                "INSERT INTO documents (document_id, version, kind, patient_key, message_id, created_at, bundle)"
                " VALUES ($1, $2, $3, $4, $5, hbgw_now(), $6)",
                document.document_id, document.version, document.kind, patient, outcome.message_id,
                self._cipher.seal(document.bundle, b"documents"))
        for item in outcome.submissions:
            await postgres_parked.enqueue(db, item, patients[(item.document_id, item.version)], received_at,
                                          self._cipher.seal(item.body, b"outbox"))
        for waiting in outcome.parked:
            await postgres_parked.park(db, waiting, received_at)
        waiting_now = {waiting.document_id for waiting in outcome.parked}
        for document in outcome.documents:
            if document.document_id not in waiting_now:
                await postgres_parked.end_waits(db, document.document_id, document.version)
        await db.execute("UPDATE messages SET state = 'mapped', finished_at = hbgw_now(), lease_until = 0"
                         " WHERE id = $1", outcome.message_id)

    async def dead_letter_message(self, message_id: int, reason: str) -> None:
        """Park a message that cannot become a record, with the reason an operator needs to fix it."""
        await self.finish_messages([MappingOutcome(message_id, dead_reason=reason)])

    async def parked(self) -> list[Parked]:
        """The documents waiting, oldest acknowledgement first."""
        return [Parked(r[0], r[1], r[2], tuple(r[3].split()), r[4]) for r in await self._fetch(postgres_parked.PARKED)]

    async def release_parked(self, waiting: Parked, patient_key: str, submissions: list[Submission],
                             codes: tuple[str, ...] = ()) -> None:
        """A parked version rebuilt: queue its submissions (ending the wait), or record what it still lacks."""
        await self._transaction(postgres_parked.release, self._cipher, waiting, patient_key, submissions, codes)
        if submissions and not codes:
            self.outbox_ready.set()

    # ---- outbox: submission stage --------------------------------------------------------------

    async def claim_submissions(self, limit: int) -> list[ClaimedSubmission]:
        """Lease due submissions, never one whose patient still has an earlier one undelivered."""
        if self.nodes is not None:
            await self.nodes.sweep()
        rows = await self._fetch(
            "WITH claimed AS (UPDATE outbox SET state = 'in_flight', lease_until = hbgw_now() + $1, lease_owner = $2,"
            " attempts = attempts + 1 WHERE id IN ("
            " SELECT o.id FROM outbox o"
            " WHERE ((o.state = 'pending' AND o.next_attempt_at <= hbgw_now())"
            "   OR (o.state = 'in_flight' AND o.lease_until < hbgw_now()))"
            " AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.patient_key = o.patient_key AND e.id < o.id"
            "   AND e.state IN ('pending', 'in_flight'))"
            " ORDER BY o.id LIMIT $3 FOR UPDATE OF o SKIP LOCKED)"
            " RETURNING id, channel, idempotency_key, document_id, version, content_type, attempts,"
            " first_received_at, file_type, facility_code)"
            " SELECT c.id, c.channel, c.idempotency_key, c.document_id, c.version, c.content_type, b.body,"
            " c.attempts, c.first_received_at, c.file_type, c.facility_code"
            " FROM claimed c JOIN outbox_bodies b ON b.outbox_id = c.id",
            self._lease, self.node, limit)
        claimed = [
            ClaimedSubmission(
                r[0], Submission(r[1], r[2], r[3], r[4], self._cipher.open(r[6], b"outbox"), r[5],
                                 file_type=r[9], facility_code=r[10]), r[7], r[8])
            for r in rows
        ]
        return sorted(claimed, key=lambda item: item.id)

    async def mark_delivered(self, outbox_id: int, receipt: Receipt) -> None:
        """Record the portal's acceptance and archive its receipt (the portal keeps results only 60 days).
        The signed body is dropped at once: it can be built again from the document, which is kept."""
        async def deliver(db: asyncpg.Connection) -> None:
            await db.execute("UPDATE outbox SET state = 'delivered', finished_at = hbgw_now(), lease_until = 0,"
                             " reason = NULL WHERE id = $1", outbox_id)
            await db.execute("DELETE FROM outbox_bodies WHERE outbox_id = $1", outbox_id)
            await postgres_admin.record_attempt(db, outbox_id, "delivered", receipt.transaction_id)
            await db.execute(
                "INSERT INTO receipts (outbox_id, channel, transaction_id, received_at, result_code, raw,"
                " archived_at) SELECT id, channel, $2, $3, $4, $5, hbgw_now() FROM outbox WHERE id = $1"
                " ON CONFLICT (outbox_id) DO UPDATE SET transaction_id = excluded.transaction_id,"
                " received_at = excluded.received_at, result_code = excluded.result_code, raw = excluded.raw,"
                " archived_at = excluded.archived_at",
                outbox_id, receipt.transaction_id, receipt.received_at, receipt.result_code,
                json.dumps(receipt.raw, ensure_ascii=False))
        await self._transaction(deliver)

    async def schedule_retry(self, outbox_id: int, delay_seconds: float, reason: str) -> None:
        """Release a submission for another attempt later, keeping the last failure's reason for operators."""
        async def reschedule(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = hbgw_now() + $1, lease_until = 0,"
                " lease_owner = NULL, reason = $2 WHERE id = $3", delay_seconds, reason, outbox_id)
            await postgres_admin.record_attempt(db, outbox_id, "retry", reason)
        await self._transaction(reschedule)

    async def dead_letter_submission(self, outbox_id: int, reason: str) -> None:
        """Park a submission the portal refused for good, with the portal's reason."""
        async def bury(db: asyncpg.Connection) -> None:
            await db.execute("UPDATE outbox SET state = 'dead', reason = $1, finished_at = hbgw_now(),"
                             " lease_until = 0 WHERE id = $2", reason, outbox_id)
            await postgres_admin.record_attempt(db, outbox_id, "dead", reason)
        await self._transaction(bury)

    # ---- observation ---------------------------------------------------------------------------

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Counts by (queue, state), for the queue-depth gauge and `status`."""
        rows = await self._fetch("SELECT 'inbox', state, count(*) FROM messages GROUP BY state"
                                 " UNION ALL SELECT 'outbox', state, count(*) FROM outbox GROUP BY state")
        return {(queue, state): count for queue, state, count in rows}

    async def oldest_pending_received_at(self) -> float | None:
        """When the oldest acknowledged, not yet delivered item (dead letters included) was acknowledged."""
        rows = await self._fetch(
            "SELECT min(t) FROM (SELECT min(received_at) AS t FROM messages WHERE state IN ('received', 'dead')"
            " UNION ALL SELECT min(first_received_at) FROM outbox WHERE state IN ('pending', 'in_flight', 'dead'))"
            " AS oldest")
        return rows[0][0] if rows else None

    # ---- upkeep and operator work (the SQL is in postgres_admin.py) ----------------------------

    async def purge_expired(self, kind: str, cutoff: float, limit: int) -> int:
        """Drop up to `limit` payloads of one kind finished before `cutoff`, in one transaction."""
        return await self._transaction(postgres_admin.purge, kind, cutoff, limit)
