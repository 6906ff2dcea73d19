"""Group commit of acknowledged messages on PostgreSQL: messages arriving together share one transaction.

Each message is inserted in its own savepoint, so one that fails is undone alone and its caller hears why;
a caller hears success only after COMMIT, so an ACK never promises what is not durable. The batch goes in
key order, so two nodes handed the same retransmissions never wait on each other in a cycle.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg

from gateway.store.interface import Inbound, Stored, StoreError, StoreUnavailable

Pending = tuple[Inbound, bytes, "asyncio.Future[Stored]"]


class InboundCommitter:
    """Commits the sealed messages queued with store(); start() once the pool is open, stop() drains."""

    def __init__(self, connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]], *,
                 max_batch: int, max_delay_seconds: float, on_batch: Callable[[int], None] | None) -> None:
        self._connection = connection
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._on_batch = on_batch
        self._pending: list[Pending] = []
        self._waiting = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start committing."""
        self._task = asyncio.create_task(self._commit_loop(), name="store-group-commit")

    async def stop(self) -> None:
        """Commit every message already queued, then stop."""
        self._stopping = True
        self._waiting.set()
        if self._task is not None:
            await asyncio.shield(self._task)  # a caller that stops waiting must not cancel a commit on its way
            self._task = None

    async def store(self, inbound: Inbound, sealed: bytes) -> Stored:
        """Keep the message in the next commit; returns once committed."""
        if self._task is None or self._task.done() or self._stopping:
            raise StoreUnavailable("store is not open")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append((inbound, sealed, future))
        self._waiting.set()
        return await future

    async def _commit_loop(self) -> None:
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._waiting.clear()
                await self._waiting.wait()
                continue
            if self._max_delay and len(self._pending) == 1 and not self._stopping:
                await asyncio.sleep(self._max_delay)  # more may be on their way: let them join this commit
            batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
            batch.sort(key=lambda pending: (pending[0].source, pending[0].sender, pending[0].control_id))
            for (_, _, future), outcome in zip(batch, await self._commit(batch)):
                if not future.done():  # a caller that gave up (cancelled) still had its message committed
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
            if self._on_batch is not None:
                self._on_batch(len(batch))

    async def _commit(self, batch: list[Pending]) -> list[Stored | BaseException]:
        outcomes: list[Stored | BaseException] = []
        try:
            async with self._connection() as connection, connection.transaction():
                for inbound, sealed, _ in batch:
                    try:
                        async with connection.transaction():
                            outcomes.append(await insert_message(connection, inbound, sealed))
                    except asyncpg.PostgresError as exc:
                        outcomes.append(_unavailable(exc))
        except Exception as exc:  # noqa: BLE001 - the transaction failed: nothing of the batch was kept
            return [exc if isinstance(exc, StoreError) else _unavailable(exc)] * len(batch)
        return outcomes


async def insert_message(db: asyncpg.Connection, item: Inbound, sealed: bytes) -> Stored:
    """Keep a message once per (source, sender, control id); a retransmission, to whichever node, gets the
    first one's ACK. A concurrent insert of the same key on another node is waited for, then seen."""
    message_id = await db.fetchval(
        "INSERT INTO messages (source, sender, control_id, message_type, correlation_id, received_at, state,"
        " payload, ack, content_digest) VALUES ($1, $2, $3, $4, $5, hbgw_now(), 'received', $6, $7, $8)"
        " ON CONFLICT (source, sender, control_id) DO NOTHING RETURNING id",
        item.source, item.sender, item.control_id, item.message_type, item.correlation_id, sealed, item.ack,
        item.content_digest)
    if message_id is not None:
        return Stored(message_id, item.ack, duplicate=False)
    existing = await db.fetchrow(
        "SELECT id, ack, content_digest FROM messages WHERE source = $1 AND sender = $2 AND control_id = $3",
        item.source, item.sender, item.control_id)
    same = not (item.content_digest and existing[2]) or item.content_digest == existing[2]
    return Stored(existing[0], bytes(existing[1]), duplicate=True, same_content=same)



def _unavailable(exc: Exception) -> StoreUnavailable:
    """The caller's error, with the driver's as its cause."""
    failure = StoreUnavailable(f"store write failed: {type(exc).__name__}: {exc}")
    failure.__cause__ = exc
    return failure
