"""The operator console's and queue commands' queries on PostgreSQL.

The searches and histories are sqlite_browse.py's own SQL, which PostgreSQL reads as written once its `?`
placeholders are numbered; what differs (sums over conditions, writes in a transaction) is here.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from gateway.store import postgres_admin
from gateway.store.browse import ChannelBacklog, SenderActivity
from gateway.store.interface import AdminError, ItemRef
from gateway.store.sqlite_browse import BrowseQueries


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ... (the browse SQL has no `?` inside a literal)."""
    numbers = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


async def record_event(db: asyncpg.Connection, operator: str, action: str, subject: str, detail: str) -> None:
    """An audit line about something other than one queued item (a channel, a console login)."""
    await db.execute("INSERT INTO operator_actions (at, operator, action, item, detail)"
                     " VALUES (hbgw_now(), $1, $2, $3, $4)", operator, action, subject, detail)


async def make_due(db: asyncpg.Connection, channel: str, operator: str) -> int:
    """Bring a channel's waiting submissions forward to now, audited."""
    status = await db.execute("UPDATE outbox SET next_attempt_at = hbgw_now() WHERE channel = $1"
                              " AND state = 'pending' AND next_attempt_at > hbgw_now()", channel)
    count = int(status.rsplit(" ", 1)[-1])
    await record_event(db, operator, "retry-now", f"channel:{channel}", f"{count} pending submissions made due")
    return count


async def change_many(db: asyncpg.Connection, action: str, refs: list[ItemRef], operator: str,
                      note: str) -> list[tuple[ItemRef, bool, str]]:
    """Retry or discard each item in its own savepoint: one refused item does not undo the others."""
    outcomes: list[tuple[ItemRef, bool, str]] = []
    for ref in refs:
        try:
            async with db.transaction():
                if action == "retry":
                    message_id = await postgres_admin.retry(db, ref, operator)
                    done = f"inbox:{message_id} queued to be mapped and signed again with the current settings"
                else:
                    await postgres_admin.discard(db, ref, operator, note)
                    done = "discarded (kept, with its reason, in the audit trail)"
        except AdminError as exc:
            outcomes.append((ref, False, str(exc)))
        else:
            outcomes.append((ref, True, done))
    return outcomes


class PostgresBrowse(BrowseQueries):
    """BrowseQueries on PostgreSQL, mixed into PostgresStore (which supplies _fetch and _transaction)."""

    _fetch: Callable[..., Awaitable[list[Any]]]
    _transaction: Callable[..., Awaitable[Any]]
    _make_due = staticmethod(make_due)
    _change_many = staticmethod(change_many)
    _record_event = staticmethod(record_event)

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """sqlite_browse's reads, on PostgreSQL."""
        return await self._fetch(numbered(sql), *params)

    async def _write(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """This module's writes, each in one transaction."""
        return await self._transaction(fn, *args)

    async def sender_activity(self, since: float) -> list[SenderActivity]:
        """Per feed: messages and refusals since `since`, and when it last sent anything."""
        window = {sender: (received, refused) for sender, received, refused in await self._fetch(
            "SELECT sender, count(*), count(*) FILTER (WHERE state IN ('dead', 'discarded')) FROM messages"
            " WHERE received_at >= $1 GROUP BY sender", since)}
        last = await self._fetch(
            "SELECT DISTINCT ON (sender) sender, source, received_at FROM messages"
            " ORDER BY sender, received_at DESC")
        return sorted((SenderActivity(source, sender, *window.get(sender, (0, 0)), received_at)
                       for sender, source, received_at in last), key=lambda feed: feed.sender)

    async def channel_backlog(self, since: float) -> list[ChannelBacklog]:
        """Per channel: what waits, how old, and deliveries since `since`."""
        waiting = await self._fetch(
            "SELECT channel, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_flight'),"
            " count(*) FILTER (WHERE state = 'dead'),"
            " min(first_received_at) FILTER (WHERE state IN ('pending', 'in_flight')),"
            " min(next_attempt_at) FILTER (WHERE state = 'pending'),"
            " (array_agg(reason ORDER BY id) FILTER (WHERE state = 'pending' AND reason IS NOT NULL))[1]"
            " FROM outbox WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY channel")
        delivered = {channel: count for channel, count in await self._fetch(
            "SELECT channel, count(*) FROM outbox WHERE state = 'delivered' AND finished_at >= $1 GROUP BY channel",
            since)}
        found = {row[0]: row for row in waiting}
        backlog = []
        for channel in sorted(set(found) | set(delivered)):
            _, pending, in_flight, dead, oldest, due, reason = found.get(channel, (channel, 0, 0, 0, None, None, None))
            backlog.append(ChannelBacklog(channel, pending, in_flight, dead, delivered.get(channel, 0), oldest, due,
                                          reason or ""))
        return backlog
