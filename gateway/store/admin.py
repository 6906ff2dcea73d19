"""Operator work on the queues: dead letters (list, show, retry, discard) with an audit trail.

Dead letters live in both queues: inbox messages that could not become a record (`inbox:ID`) and outbox
submissions the portal refused for good (`outbox:ID`). Nothing is ever deleted here: a discarded item keeps
its metadata and reason, and every retry, discard, replay and payload view is written to `operator_actions`.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from gateway.store import Store

QUEUES = {"inbox": ("messages", b"messages", "payload", "received"),
          "outbox": ("outbox", b"outbox", "body", "pending")}
_INBOX_COLUMNS = ("SELECT id, state, message_type, sender, reason, received_at, finished_at, attempts,"
                  " payload IS NULL, '' FROM messages")
_OUTBOX_COLUMNS = ("SELECT o.id, o.state, o.channel, o.document_id || ':v' || o.version, o.reason,"
                   " o.first_received_at, o.finished_at, o.attempts, o.body IS NULL,"
                   " coalesce('inbox:' || (SELECT d.message_id FROM documents d"
                   "   WHERE d.document_id = o.document_id AND d.version = o.version), '') FROM outbox o")


class AdminError(Exception):
    """An operator request that cannot be done as asked; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class ItemRef:
    """`inbox:ID` or `outbox:ID`, the name of a queued item on the command line."""

    queue: str
    id: int

    @classmethod
    def parse(cls, text: str) -> ItemRef:
        """Read an item name as typed by an operator."""
        queue, _, number = text.partition(":")
        if queue not in QUEUES or not number.isdigit():
            raise AdminError(f"{text!r} is not an item name: expected inbox:ID or outbox:ID (see `dlq list`)")
        return cls(queue, int(number))

    def __str__(self) -> str:
        return f"{self.queue}:{self.id}"


@dataclass(frozen=True, slots=True)
class QueuedItem:
    """What an operator sees of an item: no payload, no personal data (subject is a sender or document id)."""

    ref: ItemRef
    state: str
    kind: str  # message type (inbox) or channel (outbox)
    subject: str  # sending application|facility (inbox) or document id:version (outbox)
    reason: str
    received_at: float
    failed_at: float | None
    attempts: int
    payload_purged: bool
    source: str  # outbox: the inbox message it was built from


def _item(queue: str, row: tuple[Any, ...]) -> QueuedItem:
    return QueuedItem(ItemRef(queue, row[0]), row[1], row[2], row[3], row[4] or "", row[5], row[6], row[7],
                      bool(row[8]), row[9])


class QueueAdmin:
    """Dead-letter operations on an open store, each one transaction together with its audit record."""

    def __init__(self, store: Store, operator: str) -> None:
        self._store = store
        self._operator = operator

    async def dead_letters(self, include_discarded: bool = False) -> list[QueuedItem]:
        """Every dead item of both queues, oldest failure first."""
        states = ("dead", "discarded") if include_discarded else ("dead",)
        marks = ", ".join("?" * len(states))
        inbox = await self._store.query(f"{_INBOX_COLUMNS} WHERE state IN ({marks})", states)
        outbox = await self._store.query(f"{_OUTBOX_COLUMNS} WHERE o.state IN ({marks})", states)
        items = [_item("inbox", row) for row in inbox] + [_item("outbox", row) for row in outbox]
        return sorted(items, key=lambda item: (item.failed_at or 0, item.ref.queue, item.ref.id))

    async def item(self, ref: ItemRef) -> QueuedItem:
        """One item in any state, or AdminError when there is no such item."""
        sql = f"{_INBOX_COLUMNS} WHERE id = ?" if ref.queue == "inbox" else f"{_OUTBOX_COLUMNS} WHERE o.id = ?"
        rows = await self._store.query(sql, (ref.id,))
        if not rows:
            raise AdminError(f"there is no item {ref}")
        return _item(ref.queue, rows[0])

    async def payload(self, ref: ItemRef) -> bytes:
        """The decrypted payload, for an operator to correct; the viewing itself is audited."""
        table, associated, column, _ = QUEUES[ref.queue]

        def read(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(f"SELECT {column} FROM {table} WHERE id = ?", (ref.id,)).fetchone()
            if row is None:
                raise AdminError(f"there is no item {ref}")
            if row[0] is not None:
                self._audit(db, "show-payload", ref)
            return row[0]
        sealed = await self._store.transaction(read)
        if sealed is None:
            raise AdminError(f"the payload of {ref} was purged by the retention policy; its metadata is kept")
        return self._store.cipher.open(sealed, associated)

    async def retry(self, ref: ItemRef) -> str:
        """Put a dead item back to be processed again; returns what happens to it next.

        A refused submission is not resent byte for byte: the usual causes (a wrong certificate, swapped
        facility codes) are baked into the signed body. Its message is mapped and signed again with the
        current settings instead, and the new document version supersedes the refused one.
        """
        def retry(db: sqlite3.Connection) -> str:
            self._require_dead(db, ref)
            message_id = ref.id
            if ref.queue == "outbox":
                _refuse_if_superseded(db, ref)
                message_id = _source_message(db, ref)
                db.execute("UPDATE outbox SET state = 'superseded', finished_at = ?, reason = ?"
                           " WHERE id = ?", (time.time(), f"rebuilt from inbox:{message_id} by dlq retry", ref.id))
            db.execute("UPDATE messages SET state = 'received', attempts = 0, lease_until = 0, reason = NULL,"
                       " finished_at = NULL WHERE id = ?", (message_id,))
            self._audit(db, "retry", ref, f"inbox:{message_id} re-queued")
            return f"inbox:{message_id} queued to be mapped and signed again with the current settings"
        outcome = await self._store.transaction(retry)
        self._store.inbox_ready.set()
        return outcome

    async def discard(self, ref: ItemRef, note: str = "") -> None:
        """Give up on a dead item for good; it stays, marked, as part of the audit trail."""
        def discard(db: sqlite3.Connection) -> None:
            self._require_dead(db, ref)
            table = QUEUES[ref.queue][0]
            db.execute(f"UPDATE {table} SET state = 'discarded', finished_at = ? WHERE id = ?", (time.time(), ref.id))
            self._audit(db, "discard", ref, note)
        await self._store.transaction(discard)

    async def record(self, action: str, ref: ItemRef, detail: str = "") -> None:
        """Audit an operator action done through another path (a replay through the intake)."""
        await self._store.transaction(self._audit, action, ref, detail)

    async def actions(self, ref: ItemRef | None = None) -> list[tuple[float, str, str, str, str]]:
        """The audit trail (when, who, what, which item, detail), oldest first."""
        where, params = ("WHERE item = ?", (str(ref),)) if ref else ("", ())
        rows = await self._store.query(f"SELECT at, operator, action, item, detail FROM operator_actions {where}"
                                       " ORDER BY id", params)
        return [tuple(row) for row in rows]

    def _audit(self, db: sqlite3.Connection, action: str, ref: ItemRef, detail: str = "") -> None:
        db.execute("INSERT INTO operator_actions (at, operator, action, item, detail) VALUES (?, ?, ?, ?, ?)",
                   (time.time(), self._operator, action, str(ref), detail))

    @staticmethod
    def _require_dead(db: sqlite3.Connection, ref: ItemRef) -> None:
        row = db.execute(f"SELECT state FROM {QUEUES[ref.queue][0]} WHERE id = ?", (ref.id,)).fetchone()
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
