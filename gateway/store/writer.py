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
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Write = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", bool]  # (fn, args, future, durable)
Outcome = tuple["asyncio.Future[Any]", bool, Any]  # (a caller's future, committed, its result or exception)


class GroupCommitWriter:
    """The only writer of one SQLite file; start() opens it, stop() commits what is queued and closes it.

    The writer is a thread of its own, not a task of an event loop: a write is queued from any thread's event
    loop and its caller is woken on that loop once the commit is done, so an acknowledgement's commit waits for
    no other task of the loop it was queued from (the MLLP listener's, gateway/listener_loop.py) and for no hand-off
    through another (one wake-up of the writer thread, one of the caller's loop)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], *, max_batch: int, max_delay_seconds: float,
                 on_batch: Callable[[int], None] | None, sync_every_commit: bool = False) -> None:
        self._connect = connect
        self._sync_every_commit = sync_every_commit  # also fsync transactions of writes that need not be durable
        self._synchronous = "FULL"  # as the connection is opened
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._on_batch = on_batch
        self._queued = threading.Condition()  # guards _writes and _stopping; notified when either changes
        self._writes: list[Write] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._connection: sqlite3.Connection | None = None
        self._stopped: asyncio.Future[None] | None = None  # done when the thread has committed all and closed

    async def start(self) -> None:
        """Open the connection on the writer thread (it is used only there) and start committing; raises what
        opening raised, and may then be called again."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        if self._stopped is not None and not self._stopped.done():
            with self._queued:
                if not self._stopping:
                    raise RuntimeError("the store's writer is already running")
            await asyncio.shield(self._stopped)  # the thread of a failed start is still ending
        with self._queued:
            self._stopping = False
            self._stopped = loop.create_future()
            self._thread = threading.Thread(target=self._run, args=(opened, self._stopped), name="store-writer",
                                            daemon=True)  # a process that exits without stop() loses only
            self._thread.start()  # uncommitted, unacknowledged writes: its transaction rolls back
        await opened

    async def stop(self) -> None:
        """Commit every write already queued, then close the connection and end the thread."""
        if self._stopped is None:
            return
        with self._queued:
            self._stopping = True
            self._queued.notify()
        await asyncio.shield(self._stopped)  # a caller that stops waiting must not cancel a commit on its way

    async def write(self, fn: Callable[..., T], *args: Any, durable: bool = True) -> T:
        """Run fn(connection, *args) atomically in the next group commit; return its result once committed, and
        on disk when durable (see the module's docstring)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._queued:
            if self._thread is None or self._stopping or not self._thread.is_alive():
                raise RuntimeError("the store is not open for writing")
            self._writes.append((fn, args, future, durable))
            self._queued.notify()
        return await future

    # ---- the writer thread ---------------------------------------------------------------------

    def _run(self, opened: asyncio.Future[None], stopped: asyncio.Future[None]) -> None:
        try:
            try:
                self._connection = connection = self._connect()
            except BaseException as exc:  # noqa: BLE001 - the opener hears why, on its loop
                self._refuse_queued()  # before the opener hears it: a write after that is refused at once
                _settle(opened, False, exc)
                return
            _settle(opened, True, None)
            try:
                while (batch := self._next_batch()) is not None:
                    outcomes = self._commit_batch(batch)
                    self._count(len(batch))  # counted before its callers hear of it
                    _settle_all([(future, ok, value) for (_, _, future, _), (ok, value)
                                 in zip(batch, outcomes, strict=True)])
            finally:
                connection.close()
        finally:
            self._refuse_queued()
            _settle(stopped, True, None)

    def _count(self, writes: int) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(writes)
        except Exception:  # a metric must not end the thread every write waits on
            log.exception("store_writer_batch_callback_failed")

    def _refuse_queued(self) -> None:
        """The thread ends: later writes are refused, and any still queued (the connection did not open, or the
        thread failed) hear that they were not committed instead of waiting for ever."""
        with self._queued:
            self._stopping = True
            left, self._writes = self._writes, []
        failure = RuntimeError("the store's writer stopped before committing this write")
        _settle_all([(future, False, failure) for _, _, future, _ in left])

    def _next_batch(self) -> list[Write] | None:
        """The writes to commit together next (waiting for one), or None once stopping with none queued."""
        with self._queued:
            while not self._writes and not self._stopping:
                self._queued.wait()
            if not self._writes:
                return None
            lingering = self._max_delay and len(self._writes) == 1 and not self._stopping
        if lingering:
            time.sleep(self._max_delay)  # more may be on their way: let them join this commit
        with self._queued:
            batch, self._writes = self._writes[:self._max_batch], self._writes[self._max_batch:]
        return batch

    def _commit_batch(self, batch: list[Write]) -> list[tuple[bool, Any]]:
        try:
            return self._commit(batch)
        except Exception as exc:  # noqa: BLE001 - the disk refused the transaction: every write in it hears so
            return [(False, exc)] * len(batch)
        except BaseException as exc:  # noqa: BLE001 - a write function raised SystemExit or the like: all rolled back
            failure = RuntimeError(f"write aborted by {type(exc).__name__}; the whole transaction was rolled back")
            return [(False, failure)] * len(batch)

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


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """From the writer thread: resolve a caller's future on its own loop."""
    _settle_all([(future, ok, value)])


def _settle_all(outcomes: list[Outcome]) -> None:
    """From the writer thread: resolve each caller's future on its own loop, one wake-up per loop (the MLLP
    listener's and the main loop) rather than one per write. A caller that gave up (cancelled), or whose loop
    is gone, still had its write committed."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, settled)
        except RuntimeError:  # its loop is closed: nobody waits for it any more
            pass


def _resolve(outcomes: list[Outcome]) -> None:
    """On the caller's loop."""
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
