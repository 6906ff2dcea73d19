"""Group commit for every write to the store: one thread, one connection, one fsync for all queued writes.

Each write is a function run against the writing connection. Writes queued while a commit is on disk are
committed together in the next transaction, each inside its own SAVEPOINT: a write that fails is undone
alone and its caller hears why, the others still commit. A caller hears success only after COMMIT, so an
acknowledgement that waits on a write never promises what is not on disk. A COMMIT that fails fails every
write in it.

So the listener's inbound messages, the mapping stage's finished batches and the submission workers'
receipts share fsyncs instead of queueing one behind the other on the disk.

A write is durable (the default: an acknowledgement, an operator's action) or not (the pipeline's own
bookkeeping, which a power cut may roll back and the pipeline then does again). A transaction holding only
writes that need not be durable commits without waiting for the disk (synchronous=NORMAL): WAL frames are
appended in order, so a power cut loses at most the newest such transactions, never one before a durable
commit, whose fsync covers everything written before it. A process crash (kill -9) loses nothing either way.
"""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Write = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", bool]  # (fn, args, future, durable)


class GroupCommitWriter:
    """The only writer of one SQLite file; start() after the connection is open, stop() commits what is queued."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int, max_delay_seconds: float,
                 on_batch: Callable[[int], None] | None, sync_every_commit: bool = False) -> None:
        self._connect = connect
        self._sync_every_commit = sync_every_commit  # also fsync transactions of writes that need not be durable
        self._synchronous = "FULL"  # as the connection is opened
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._on_batch = on_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._connection: sqlite3.Connection | None = None
        self._writes: list[Write] = []
        self._waiting = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the connection on the writer thread (it is used only there) and start committing."""
        self._connection = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._commit_loop(), name="store-group-commit")

    async def stop(self) -> None:
        """Commit every write already queued, then close the connection and the thread."""
        if self._task is not None:
            self._stopping = True
            self._waiting.set()
            await asyncio.shield(self._task)  # a caller that stops waiting must not cancel a commit on its way
            self._task = None
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    async def write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(connection, *args) atomically in the next group commit; return its result once committed, and
        on disk when durable (see the module's docstring)."""
        if self._task is None or self._task.done() or self._stopping:
            raise RuntimeError("the store is not open for writing")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.append((fn, args, future, durable))
        self._waiting.set()
        return await future

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._writes:
                if self._stopping:
                    return
                self._waiting.clear()
                await self._waiting.wait()
                continue
            if self._max_delay and len(self._writes) == 1 and not self._stopping:
                await asyncio.sleep(self._max_delay)  # more may be on their way: let them join this commit
            batch, self._writes = self._writes[:self._max_batch], self._writes[self._max_batch:]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
            except Exception as exc:  # noqa: BLE001 - the disk refused the transaction: every write in it hears so
                outcomes = [(False, exc)] * len(batch)
            except BaseException as exc:  # a write function raised SystemExit or the like: all rolled back
                if isinstance(exc, asyncio.CancelledError):
                    raise
                failure = RuntimeError(f"write aborted by {type(exc).__name__}; the whole transaction was rolled back")
                outcomes = [(False, failure)] * len(batch)
            for (_, _, future, _), (ok, value) in zip(batch, outcomes):
                if not future.done():  # a caller that gave up (cancelled) still had its write committed
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            if self._on_batch is not None:
                self._on_batch(len(batch))

    def _commit(self, batch: list[Write]) -> list[tuple[bool, Any]]:
        """On the writer thread: one IMMEDIATE transaction, a SAVEPOINT per write."""
        db = self._connection
        assert db is not None
        outcomes: list[tuple[bool, Any]] = []
        synchronous = "FULL" if self._sync_every_commit or any(durable for *_, durable in batch) else "NORMAL"
        if synchronous != self._synchronous:  # a PRAGMA outside the transaction, for this commit
            db.execute(f"PRAGMA synchronous={synchronous}")
            self._synchronous = synchronous
        db.execute("BEGIN IMMEDIATE")
        try:
            for fn, args, _, _ in batch:
                db.execute("SAVEPOINT write")
                try:
                    outcomes.append((True, fn(db, *args)))
                except Exception as exc:  # noqa: BLE001 - the failing write is undone alone and hears why
                    db.execute("ROLLBACK TO write")
                    outcomes.append((False, exc))
                db.execute("RELEASE write")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes
