"""The SQL of the operator console and queue commands: searches, one message's history, per-feed and
per-channel activity, bulk dead-letter changes, the audit trail.

Reads run on the read connection beside the writer (WAL) and never take the write lock; each search is
served by an index (schema migration 4) and bounded by a limit, so it answers quickly beside a busy gateway.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.store import sqlite_admin
from gateway.store.browse import (
    Attempt,
    AuditFilter,
    ChannelBacklog,
    DocumentVersion,
    MessageDetail,
    MessageFilter,
    MessageRow,
    ReceiptRow,
    SenderActivity,
    SubmissionRow,
)
from gateway.store.interface import AdminError, ItemRef, OperatorAction

_MESSAGE_COLUMNS = ("SELECT id, source, sender, control_id, message_type, state, received_at, finished_at, attempts,"
                    " coalesce(reason, ''), payload IS NULL FROM messages")
_SUBMISSION_COLUMNS = ("SELECT o.id, o.channel, o.document_id, o.version, o.state, o.attempts, coalesce(o.reason, ''),"
                       " o.first_received_at, o.next_attempt_at, o.finished_at FROM outbox o")
# A replayed message is stored as `<MSH-10>~replay:<digest>` (see gateway/intake.py): found by its control id.
REPLAY_MARK = "~replay:"


def _marks(values: list[Any]) -> str:
    return ", ".join("?" * len(values))


def message_search(query: MessageFilter) -> tuple[str, list[Any]]:
    """The SQL and parameters of an inbox search; each condition can use an index."""
    where: list[str] = []
    params: list[Any] = []
    if query.control_id:
        # One index range from the id to its replays' end, then the id itself or a replay of it.
        where.append("control_id >= ? AND control_id < ? AND (control_id = ? OR control_id >= ?)")
        params += [query.control_id, query.control_id + "~replay;", query.control_id, query.control_id + REPLAY_MARK]
    if query.sender:
        # `HIS` finds `HIS|BV`: one index range from the name to the end of its `|` extensions
        where.append("sender >= ? AND sender < ? AND (sender = ? OR sender >= ?)")
        params += [query.sender, query.sender + "}", query.sender, query.sender + "|"]
    if query.message_type:
        where.append("(message_type = ? OR (message_type >= ? AND message_type < ?))")  # `ADT` finds `ADT^A01`
        params += [query.message_type, query.message_type + "^", query.message_type + "_"]
    if query.state:
        where.append("state = ?")
        params.append(query.state)
    if query.since is not None:
        where.append("received_at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("received_at < ?")
        params.append(query.until)
    if query.document_id:
        where.append("id IN (SELECT message_id FROM documents WHERE document_id = ?)")
        params.append(query.document_id)
    if query.before_id is not None:
        where.append("id < ?")
        params.append(query.before_id)
    if (query.control_id or query.sender or query.since is not None or query.until is not None) \
            and query.state != "received":
        # Their indexes leave out the unmapped backlog (schema migration 8): the newest matches of the rest
        # through them, and of the backlog through messages_work (state, id), each arm stopping at the limit.
        found = " AND ".join(where)
        where = [(f"id IN (SELECT id FROM (SELECT id FROM messages WHERE state <> 'received' AND {found}"
                  f" ORDER BY id DESC LIMIT ?) AS indexed UNION ALL SELECT id FROM (SELECT id FROM messages"
                  f" WHERE state = 'received' AND {found} ORDER BY id DESC LIMIT ?) AS backlog)")]
        params = [*params, query.limit, *params, query.limit]
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"{_MESSAGE_COLUMNS}{clause} ORDER BY id DESC LIMIT ?", [*params, query.limit]


def _message(row: Any) -> MessageRow:
    return MessageRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], bool(row[10]))


def _submission(row: Any) -> SubmissionRow:
    return SubmissionRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9])


def record_event(db: sqlite3.Connection, operator: str, action: str, subject: str, detail: str) -> None:
    """An audit line about something other than one queued item (a channel, a console login)."""
    db.execute("INSERT INTO operator_actions (at, operator, action, item, detail) VALUES (?, ?, ?, ?, ?)",
               (time.time(), operator, action, subject, detail))


def make_due(db: sqlite3.Connection, channel: str, operator: str) -> int:
    """Bring a channel's waiting submissions forward to now, audited."""
    now = time.time()
    count = db.execute("UPDATE outbox SET next_attempt_at = ? WHERE channel = ? AND state = 'pending'"
                       " AND next_attempt_at > ?", (now, channel, now)).rowcount
    record_event(db, operator, "retry-now", f"channel:{channel}", f"{count} pending submissions made due")
    return count


def change_many(db: sqlite3.Connection, action: str, refs: list[ItemRef], operator: str,
                note: str) -> list[tuple[ItemRef, bool, str]]:
    """Retry or discard each item in its own savepoint: one refused item does not undo the others."""
    outcomes: list[tuple[ItemRef, bool, str]] = []
    for ref in refs:
        db.execute("SAVEPOINT item")
        try:
            if action == "retry":
                message_id = sqlite_admin.retry(db, ref, operator)
                done = f"inbox:{message_id} queued to be mapped and signed again with the current settings"
            else:
                sqlite_admin.discard(db, ref, operator, note)
                done = "discarded (kept, with its reason, in the audit trail)"
        except AdminError as exc:
            db.execute("ROLLBACK TO item")
            outcomes.append((ref, False, str(exc)))
        else:
            outcomes.append((ref, True, done))
        db.execute("RELEASE item")
    return outcomes


class BrowseQueries:
    """The console's and queue commands' store methods, mixed into SqliteStore (which supplies _read, _write)."""

    _read: Callable[..., Awaitable[list[Any]]]
    _write: Callable[..., Awaitable[Any]]
    inbox_ready: Any
    outbox_ready: Any
    # The writes on this backend's connection, run through _write (PostgresBrowse supplies its own).
    _make_due: Callable[..., Any] = staticmethod(make_due)
    _change_many: Callable[..., Any] = staticmethod(change_many)
    _record_event: Callable[..., Any] = staticmethod(record_event)

    async def find_messages(self, query: MessageFilter) -> list[MessageRow]:
        """Inbox messages matching a search, newest first, metadata only."""
        sql, params = message_search(query)
        return [_message(row) for row in await self._read(sql, tuple(params))]

    async def message_detail(self, message_id: int) -> MessageDetail:
        """One message's ACK, documents, submissions, attempts and receipts; AdminError when there is none."""
        rows = await self._read(f"{_MESSAGE_COLUMNS} WHERE id = ?", (message_id,))
        if not rows:
            raise AdminError(f"there is no message inbox:{message_id}")
        (ack,) = (await self._read("SELECT ack FROM messages WHERE id = ?", (message_id,)))[0]
        documents = [DocumentVersion(r[0], r[1], r[2], r[3], bool(r[4])) for r in await self._read(
            "SELECT document_id, version, kind, created_at, bundle IS NULL FROM documents WHERE message_id = ?"
            " ORDER BY document_id, version", (message_id,))]
        submissions = [_submission(r) for r in await self._read(
            f"{_SUBMISSION_COLUMNS} JOIN documents d ON d.document_id = o.document_id AND d.version = o.version"
            " WHERE d.message_id = ? ORDER BY o.id", (message_id,))]
        ids = [s.id for s in submissions]
        attempts = [Attempt(*r) for r in await self._read(
            f"SELECT outbox_id, at, outcome, reason FROM submission_attempts WHERE outbox_id IN ({_marks(ids)})"
            " ORDER BY id", tuple(ids))] if ids else []
        receipts = [ReceiptRow(*r) for r in await self._read(
            "SELECT outbox_id, channel, transaction_id, received_at, result_code FROM receipts"
            f" WHERE outbox_id IN ({_marks(ids)}) ORDER BY outbox_id", tuple(ids))] if ids else []
        return MessageDetail(_message(rows[0]), bytes(ack), documents, submissions, attempts, receipts)

    async def submission_attempts(self, outbox_id: int) -> list[Attempt]:
        """The delivery attempts of one submission, oldest first."""
        return [Attempt(*r) for r in await self._read(
            "SELECT outbox_id, at, outcome, reason FROM submission_attempts WHERE outbox_id = ? ORDER BY id",
            (outbox_id,))]

    async def sender_activity(self, since: float) -> list[SenderActivity]:
        """Per feed: messages and refusals since `since`, and when it last sent anything."""
        window = {sender: (received, refused) for sender, received, refused in await self._read(
            "SELECT sender, count(*), sum(state IN ('dead', 'discarded')) FROM (SELECT sender, state FROM messages"
            " WHERE state <> 'received' AND received_at >= ? UNION ALL SELECT sender, state FROM messages"
            " WHERE state = 'received' AND received_at >= ?) GROUP BY sender", (since, since))}
        # One index probe per distinct sender instead of a scan of the whole inbox; the unmapped backlog, which
        # that index leaves out (schema migration 8), is read through messages_work.
        latest: dict[str, tuple[str, float]] = {}
        for sender, source, received_at in [*await self._read(
                "WITH RECURSIVE s(sender) AS (SELECT min(sender) FROM messages WHERE state <> 'received' UNION ALL"
                " SELECT (SELECT min(sender) FROM messages WHERE state <> 'received' AND sender > s.sender) FROM s"
                " WHERE s.sender IS NOT NULL) SELECT s.sender, m.source, m.received_at FROM s JOIN messages m"
                " ON m.id = (SELECT id FROM messages WHERE state <> 'received' AND sender = s.sender"
                " ORDER BY received_at DESC LIMIT 1)"),
                *await self._read("SELECT sender, source, max(received_at) FROM messages WHERE state = 'received'"
                                  " GROUP BY sender")]:
            if sender not in latest or received_at > latest[sender][1]:
                latest[sender] = (source, received_at)
        return sorted((SenderActivity(source, sender, *window.get(sender, (0, 0)), received_at)
                       for sender, (source, received_at) in latest.items()), key=lambda feed: feed.sender)

    async def channel_backlog(self, since: float) -> list[ChannelBacklog]:
        """Per channel: what waits, how old, and deliveries since `since`."""
        waiting = await self._read(
            "SELECT channel, sum(state = 'pending'), sum(state = 'in_flight'), sum(state = 'dead'),"
            " min(CASE WHEN state IN ('pending', 'in_flight') THEN first_received_at END),"
            " min(CASE WHEN state = 'pending' THEN next_attempt_at END)"
            " FROM outbox WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY channel")
        delivered = dict(await self._read(
            "SELECT channel, count(*) FROM outbox WHERE state = 'delivered' AND finished_at >= ? GROUP BY channel",
            (since,)))
        channels = sorted({row[0] for row in waiting} | set(delivered))
        found = {row[0]: row for row in waiting}
        backlog = []
        for channel in channels:
            _, pending, in_flight, dead, oldest, due = found.get(channel, (channel, 0, 0, 0, None, None))
            reason = await self._read(
                "SELECT reason FROM outbox WHERE channel = ? AND state = 'pending' AND reason IS NOT NULL"
                " ORDER BY id LIMIT 1", (channel,)) if pending else []
            backlog.append(ChannelBacklog(channel, pending, in_flight, dead, delivered.get(channel, 0), oldest, due,
                                          reason[0][0] if reason else ""))
        return backlog

    async def retry_now(self, channel: str, operator: str) -> int:
        """Make a channel's pending submissions due now (after an outage), audited; returns how many."""
        count: int = await self._write(self._make_due, channel, operator)
        self.outbox_ready.set()
        return count

    async def change_dead(self, action: str, refs: list[ItemRef], operator: str,
                          note: str = "") -> list[tuple[ItemRef, bool, str]]:
        """Retry or discard many dead items in one transaction; per item whether it was done, and what
        became of it or why not."""
        if action not in ("retry", "discard"):
            raise AdminError(f"unknown action {action!r}: retry or discard")
        outcomes: list[tuple[ItemRef, bool, str]] = await self._write(self._change_many, action, refs, operator, note)
        if action == "retry" and any(done for _, done, _ in outcomes):
            self.inbox_ready.set()
        return outcomes

    async def audit_trail(self, query: AuditFilter) -> list[OperatorAction]:
        """Operator actions matching a filter, newest first."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("operator", query.operator), ("action", query.action), ("item", query.item)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if query.since is not None:
            where.append("at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("at < ?")
            params.append(query.until)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(f"SELECT at, operator, action, item, detail FROM operator_actions{clause}"
                                " ORDER BY id DESC LIMIT ?", (*params, query.limit))
        return [OperatorAction(*row) for row in rows]

    async def record_event(self, operator: str, action: str, subject: str, detail: str = "") -> None:
        """Audit an operator action on something other than one item (a console login, a retry-now)."""
        await self._write(self._record_event, operator, action, subject, detail)
