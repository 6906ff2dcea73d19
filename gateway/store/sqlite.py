"""The Store on SQLite: inbox, documents, outbox and receipts in one file (WAL, synchronous=FULL).

Every write runs on one dedicated thread holding the only writing connection (writer.py), and the writes
queued together share one transaction and one fsync, so writers never wait on SQLite's lock.
Reads use a separate aiosqlite connection, which WAL lets run beside the writer.
This module and its helpers (schema.py, writer.py, sqlite_admin.py) hold all the SQL; sqlite3 errors are
turned into StoreUnavailable here, at the boundary.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import aiosqlite

from adapters.portal.base import Receipt, Submission
from gateway.encryption import PayloadCipher
from gateway.files import create_private, open_private
from gateway.logs import get_logger
from gateway.store import sqlite_admin, sqlite_parked
from gateway.store.dead_letters import DeadLetterMethods
from gateway.store.interface import (
    PURGED_BUNDLE,
    ClaimedMessage,
    ClaimedSubmission,
    EncodedDocument,
    Inbound,
    MappingOutcome,
    Parked,
    StoreBusy,
    Stored,
    StoreLockedError,
    StoreUnavailable,
)
from gateway.store.schema import MIGRATIONS, migrate
from gateway.store.sqlite_browse import BrowseQueries
from gateway.store.writer import GroupCommitWriter
from mappings.model import Document

T = TypeVar("T")
_Sealed = tuple[list[bytes], list[bytes]]  # one outcome's sealed document bundles and submission bodies
log = get_logger(__name__)
# Sealed documents are about 2 KB: a 4 KB page holds one and wastes the rest; 8 KB pages waste a third as
# much, and an acknowledgement's commit still writes only a few of them.
PAGE_SIZE = 8192


def _connect_writer(path: Path, lookup_digest: Callable[[str], str]) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file only; an existing one keeps its own
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=10000")
    try:
        migrate(connection, lookup_digest)
    except BaseException:
        connection.close()
        raise
    return connection


def _lock(path: Path) -> int:
    """An exclusive lock beside the file, held while serving; the kernel drops it when the process dies."""
    lock_path = path.with_name(path.name + ".lock")
    fd = open_private(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(f"store {path} is in use by another gateway process (lock {lock_path})") from None
    return fd


def _release_leases(db: sqlite3.Connection) -> tuple[int, int]:
    """Make work leased by a dead process claimable now; only the lock holder may call this."""
    messages = db.execute("UPDATE messages SET lease_until = 0 WHERE state = 'received' AND lease_until > 0").rowcount
    submissions = db.execute(
        "UPDATE outbox SET state = 'pending', lease_until = 0, next_attempt_at = ? WHERE state = 'in_flight'",
        (time.time(),)).rowcount
    return messages, submissions


def _write_error(exc: sqlite3.Error) -> StoreUnavailable:
    """A driver error in gateway terms: a lock held too long by another process is worth waiting out."""
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
        return StoreBusy(f"the store stayed busy (another process held its write lock): {exc}")
    return StoreUnavailable(f"store write failed: {exc}")


class SqliteStore(BrowseQueries, DeadLetterMethods):
    """The Store (see interface.py) on one SQLite file, the only writer of it a thread of this process.

    Operator tools (not the owner) open only the read connection; the writer, which migrates the schema
    under the write lock, starts at their first write, so a read never waits on a busy gateway."""

    _admin: ClassVar[ModuleType] = sqlite_admin  # the dead-letter SQL of this dialect (DeadLetterMethods)
    writes_from_any_loop: ClassVar[bool] = True  # store_inbound: the writer thread wakes each caller on its loop

    def __init__(self, path: Path, cipher: PayloadCipher, *, lease_seconds: float = 120.0,
                 max_batch: int = 512, max_delay_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None, fsync_every_commit: bool = False) -> None:
        self.path = Path(path)
        self._cipher = cipher
        self._lease = lease_seconds
        self._writer = GroupCommitWriter(lambda: _connect_writer(self.path, cipher.lookup_digest), max_batch=max_batch,
                                         max_delay_seconds=max_delay_ms / 1000, on_batch=on_batch,
                                         sync_every_commit=fsync_every_commit)
        self._reader: aiosqlite.Connection | None = None
        self._lock: int | None = None
        self._writing = False
        self._writer_starting = asyncio.Lock()
        self.inbox_ready = asyncio.Event()  # set when messages were committed
        self.outbox_ready = asyncio.Event()  # set when submissions were queued
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that opened the store, and owns the events

    async def open(self, *, owner: bool = False) -> SqliteStore:
        """Open the file; the owner (the serving gateway) locks out a second gateway and re-queues the
        leases a crashed predecessor held, so its unfinished work restarts at once, not when leases expire."""
        self._loop = asyncio.get_running_loop()
        try:
            create_private(self.path)
            if owner:
                self._lock = _lock(self.path)
                await self._start_writer()
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA busy_timeout=10000")
            if not owner:
                await self._check_schema()
            if owner:
                messages, submissions = await self._write(_release_leases, durable=False)
                if messages or submissions:
                    log.warning("store_leases_released", messages=messages, submissions=submissions)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"cannot open store {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        return self

    async def _check_schema(self) -> None:
        """An operator tool reads the schema as it is, and migrates it only when it is older than this code."""
        assert self._reader is not None
        async with self._reader.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        if (row[0] if row else 0) != len(MIGRATIONS):  # new, older (migrated now) or newer (refused by migrate)
            await self._start_writer()

    async def _start_writer(self) -> None:
        async with self._writer_starting:
            if not self._writing:
                await self._writer.start()
                self._writing = True

    async def close(self) -> None:
        """Commit what is queued, then release the connections and the serving lock."""
        await self._writer.stop()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    async def _write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(connection, *args) atomically on the writer thread (the only writer), committed together
        with the writes queued beside it; returns once it is on disk. Not durable: the pipeline's own
        bookkeeping, which a power cut may roll back to be done again (see writer.py), so that it never
        makes an acknowledgement wait for an fsync of its own."""
        try:
            if not self._writing:
                await self._start_writer()
            return await self._writer.write(fn, *args, durable=durable)
        except sqlite3.Error as exc:
            raise _write_error(exc) from exc

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._read(sql, tuple(params))

    async def _change(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._write(fn, *args)

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Read beside the writer (WAL), never blocking a commit."""
        if self._reader is None:
            raise StoreUnavailable(f"store {self.path} is not open")
        try:
            async with self._reader.execute(sql, params) as cursor:
                return list(await cursor.fetchall())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store read failed: {exc}") from exc

    # ---- inbox ---------------------------------------------------------------------------------

    async def store_inbound(self, inbound: Inbound) -> Stored:
        """Return only once the message is on disk (or was already): the caller may then acknowledge.
        Messages arriving together share one commit (see writer.py)."""
        stored = await self._write(self._insert_message, inbound)
        if self._loop is None or asyncio.get_running_loop() is self._loop:
            self.inbox_ready.set()
        else:  # from the listener's own loop: the event belongs to the store's
            self._loop.call_soon_threadsafe(self.inbox_ready.set)
        return stored

    def _insert_message(self, db: sqlite3.Connection, item: Inbound) -> Stored:
        digest = self._cipher.lookup_digest(item.content_digest) if item.content_digest else ""
        row = db.execute(
            "INSERT INTO messages (source, sender, control_id, message_type, correlation_id, received_at,"
            " state, payload, ack, content_digest) VALUES (?, ?, ?, ?, ?, ?, 'received', ?, ?, ?)"
            " ON CONFLICT (source, sender, control_id) DO NOTHING RETURNING id",
            (item.source, item.sender, item.control_id, item.message_type, item.correlation_id, time.time(),
             self._cipher.seal(item.payload, b"messages"), item.ack, digest),
        ).fetchone()
        if row is not None:
            return Stored(row[0], item.ack, duplicate=False)
        existing = db.execute(
            "SELECT id, ack, content_digest FROM messages WHERE source = ? AND sender = ? AND control_id = ?",
            (item.source, item.sender, item.control_id),
        ).fetchone()
        same = not (digest and existing[2]) or digest == existing[2]
        return Stored(existing[0], bytes(existing[1]), duplicate=True, same_content=same)

    # ---- inbox: mapping stage ------------------------------------------------------------------

    async def claim_messages(self, limit: int, *, excluding: Sequence[int] = ()) -> list[ClaimedMessage]:
        """Lease received messages in arrival order; an expired lease (a crash) makes them claimable again,
        except for the messages `excluding`, which the caller still holds."""
        held = json.dumps(list(excluding))

        def claim(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            now = time.time()
            return db.execute(
                "UPDATE messages SET lease_until = ?, attempts = attempts + 1 WHERE id IN ("
                " SELECT id FROM messages WHERE state = 'received' AND lease_until < ?"
                "   AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
                " RETURNING id, source, message_type, correlation_id, received_at, payload, attempts",
                (now + self._lease, now, held, limit),
            ).fetchall()
        rows = await self._write(claim, durable=False)
        claimed = [ClaimedMessage(r[0], r[1], r[2], r[3], r[4], self._cipher.open(r[5], b"messages"), r[6])
                   for r in rows]
        return sorted(claimed, key=lambda message: message.id)

    async def release_messages(self, message_ids: list[int], *, charged: int | None = None) -> None:
        """Make claimed, unfinished messages claimable again now; all but `charged` get their claim back,
        so `attempts` counts a message's own failures, not the batches it was caught up in."""
        await self._write(lambda db: db.executemany(
            "UPDATE messages SET lease_until = 0, attempts = attempts - ? WHERE id = ? AND state = 'received'",
            [(0 if message_id == charged else 1, message_id) for message_id in message_ids]))

    def lookup_digest(self, value: str) -> str:
        """The keyed digest this store finds personal values by (see PayloadCipher.lookup_digest)."""
        return self._cipher.lookup_digest(value)

    async def latest_document(self, document_id: str) -> Document | None:
        """The version a new fragment of the episode builds on (its bundle is {} once purged by retention)."""
        found = (await self.latest_documents([document_id])).get(document_id)
        return found.decoded() if found is not None else None

    async def latest_documents(self, document_ids: Sequence[str]) -> dict[str, EncodedDocument]:
        """The newest version of each of these documents that exists, in one read (a batch's worth), opened
        but not decoded: the signing process that assembles onto it decodes it, not the event loop."""
        if not document_ids:
            return {}
        rows = await self._read(
            "SELECT d.document_id, d.version, d.kind, d.patient_key, d.bundle FROM documents d"
            " WHERE d.document_id IN (SELECT value FROM json_each(?))"
            " AND d.version = (SELECT max(version) FROM documents WHERE document_id = d.document_id)",
            (json.dumps(sorted(set(document_ids))),))
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
        """Finish a batch of mapped or refused messages in one transaction (one fsync), all or nothing.

        The documents (encoded in the signing processes) and bodies are sealed before the transaction, beside
        it, not in it, so the acknowledgements committed next do not wait for it."""
        def finish(db: sqlite3.Connection, sealed: list[_Sealed]) -> None:
            now = time.time()
            for outcome, seals in zip(outcomes, sealed):
                if outcome.dead_reason is None:
                    self._save_mapping(db, now, outcome, seals)
                else:
                    db.execute("UPDATE messages SET state = 'dead', reason = ?, finished_at = ?, lease_until = 0"
                               " WHERE id = ?", (outcome.dead_reason, now, outcome.message_id))
        if not outcomes:
            return
        await self._write(finish, await asyncio.to_thread(self._seal_outcomes, outcomes), durable=False)
        if any(outcome.submissions for outcome in outcomes):
            self.outbox_ready.set()

    def _seal_outcomes(self, outcomes: list[MappingOutcome]) -> list[_Sealed]:
        """Each outcome's sealed document bundles and submission bodies, in the order it lists them."""
        return [([self._cipher.seal(document.bundle, b"documents") for document in outcome.documents],
                 [self._cipher.seal(item.body, b"outbox") for item in outcome.submissions])
                for outcome in outcomes]

    def _save_mapping(self, db: sqlite3.Connection, now: float, outcome: MappingOutcome, sealed: _Sealed) -> None:
        (received_at,) = db.execute("SELECT received_at FROM messages WHERE id = ?",
                                    (outcome.message_id,)).fetchone()
        patients = {}
        bundles, bodies = sealed
        for document, bundle in zip(outcome.documents, bundles):
            patient = patients[(document.document_id, document.version)] = self._cipher.lookup_digest(
                document.patient_key)
            db.execute(
                "INSERT INTO documents (document_id, version, kind, patient_key, message_id, created_at, bundle)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (document.document_id, document.version, document.kind, patient, outcome.message_id,
                 now, bundle))
        for item, body in zip(outcome.submissions, bodies, strict=True):
            sqlite_parked.enqueue(db, now, item, patients[(item.document_id, item.version)], received_at, body)
        for waiting in outcome.parked:
            sqlite_parked.park(db, now, waiting, received_at)
        waiting_now = {waiting.document_id for waiting in outcome.parked}
        for document in outcome.documents:
            if document.document_id not in waiting_now:
                sqlite_parked.end_waits(db, document.document_id, document.version)
        db.execute("UPDATE messages SET state = 'mapped', finished_at = ?, lease_until = 0 WHERE id = ?",
                   (now, outcome.message_id))

    async def parked(self) -> list[Parked]:
        """The documents waiting, oldest acknowledgement first."""
        return [sqlite_parked.row(tuple(r)) for r in await self._read(sqlite_parked.PARKED)]

    async def release_parked(self, waiting: Parked, patient_key: str, submissions: list[Submission],
                             codes: tuple[str, ...] = ()) -> None:
        """A parked version rebuilt: queue its submissions (ending the wait), or record what it still lacks."""
        await self._write(lambda db: sqlite_parked.release(db, self._cipher, time.time(), waiting, patient_key,
                                                           submissions, codes))
        if submissions and not codes:
            self.outbox_ready.set()

    async def dead_letter_message(self, message_id: int, reason: str) -> None:
        """Park a message that cannot become a record, with the reason an operator needs to fix it."""
        await self.finish_messages([MappingOutcome(message_id, dead_reason=reason)])

    # ---- outbox: submission stage --------------------------------------------------------------

    async def claim_submissions(self, limit: int) -> list[ClaimedSubmission]:
        """Lease due submissions, never one whose patient still has an earlier one undelivered.

        Only each patient's head of line can be due (outbox_heads, kept by triggers), so a claim costs the
        same however long a patient's backlog is: it never holds up the acknowledgements committed beside it.
        """
        def claim(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], dict[int, bytes]]:
            now = time.time()
            rows = db.execute(
                "UPDATE outbox SET state = 'in_flight', lease_until = ?, attempts = attempts + 1 WHERE id IN ("
                " SELECT outbox_id FROM outbox_heads WHERE due_at <= ? ORDER BY due_at LIMIT ?)"
                " RETURNING id, channel, idempotency_key, document_id, version, content_type, attempts,"
                " first_received_at, file_type, facility_code",
                (now + self._lease, now, limit),
            ).fetchall()
            bodies = db.execute("SELECT outbox_id, body FROM outbox_bodies WHERE outbox_id IN"
                                " (SELECT value FROM json_each(?))", (json.dumps([r[0] for r in rows]),)).fetchall()
            return rows, {outbox_id: body for outbox_id, body in bodies}
        rows, bodies = await self._write(claim, durable=False)
        claimed = [
            ClaimedSubmission(
                r[0], Submission(r[1], r[2], r[3], r[4], self._cipher.open(bodies[r[0]], b"outbox"), r[5],
                                 file_type=r[8], facility_code=r[9]), r[6], r[7])
            for r in rows
        ]
        return sorted(claimed, key=lambda item: item.id)

    async def mark_delivered(self, outbox_id: int, receipt: Receipt) -> None:
        """Record the portal's acceptance and archive its receipt (the portal keeps results only 60 days).
        The signed body is dropped at once: it can be built again from the document, which is kept."""
        def deliver(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute("UPDATE outbox SET state = 'delivered', finished_at = ?, lease_until = 0, reason = NULL"
                       " WHERE id = ?", (now, outbox_id))
            db.execute("DELETE FROM outbox_bodies WHERE outbox_id = ?", (outbox_id,))
            db.execute(
                "INSERT OR REPLACE INTO receipts (outbox_id, channel, transaction_id, received_at, result_code, raw,"
                " archived_at) SELECT id, channel, ?, ?, ?, ?, ? FROM outbox WHERE id = ?",
                (receipt.transaction_id, receipt.received_at, receipt.result_code,
                 json.dumps(receipt.raw, ensure_ascii=False), now, outbox_id))
            sqlite_admin.record_attempt(db, outbox_id, "delivered", receipt.transaction_id)
        await self._write(deliver)  # durable: a receipt lost to a power cut would have the document sent again

    async def schedule_retry(self, outbox_id: int, delay_seconds: float, reason: str) -> None:
        """Release a submission for another attempt later, keeping the last failure's reason for operators."""
        def reschedule(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, lease_until = 0, reason = ? WHERE id = ?",
                (time.time() + delay_seconds, reason, outbox_id))
            sqlite_admin.record_attempt(db, outbox_id, "retry", reason)
        await self._write(reschedule, durable=False)

    async def dead_letter_submission(self, outbox_id: int, reason: str) -> None:
        """Park a submission the portal refused for good, with the portal's reason."""
        def bury(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbox SET state = 'dead', reason = ?, finished_at = ?, lease_until = 0 WHERE id = ?",
                       (reason, time.time(), outbox_id))
            sqlite_admin.record_attempt(db, outbox_id, "dead", reason)
        await self._write(bury, durable=False)

    # ---- observation ---------------------------------------------------------------------------

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Counts by (queue, state), for the queue-depth gauge and `status`: kept by triggers, never counted."""
        rows = await self._read("SELECT queue, state, count FROM queue_counts WHERE count > 0")
        return {(queue, state): count for queue, state, count in rows}

    async def oldest_pending_received_at(self) -> float | None:
        """When the oldest acknowledged, not yet delivered item (dead letters included) was acknowledged: a few
        index seeks (messages are stored in the order they are acknowledged, so the first of a state is its
        oldest)."""
        rows = await self._read(
            "SELECT min(t) FROM ("
            " SELECT received_at AS t FROM (SELECT received_at FROM messages WHERE state = 'received' ORDER BY id"
            "   LIMIT 1)"
            " UNION ALL SELECT received_at FROM (SELECT received_at FROM messages WHERE state = 'dead' ORDER BY id"
            "   LIMIT 1)"
            " UNION ALL SELECT min(first_received_at) FROM outbox WHERE state = 'pending'"
            " UNION ALL SELECT min(first_received_at) FROM outbox WHERE state = 'in_flight'"
            " UNION ALL SELECT min(first_received_at) FROM outbox WHERE state = 'dead')")
        return rows[0][0] if rows else None

    # ---- upkeep and operator work (the SQL is in sqlite_admin.py) ------------------------------

    async def purge_expired(self, kind: str, cutoff: float, limit: int) -> int:
        """Drop up to `limit` payloads of one kind finished before `cutoff`, in one transaction."""
        return await self._write(sqlite_admin.purge, kind, cutoff, limit, durable=False)
