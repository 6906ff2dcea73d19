"""Group commit of every write on a real SQLite file: shared fsyncs, failures kept apart, nothing half-done."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.store.writer import GroupCommitWriter


def connect(path: Path):
    def open_connection() -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE IF NOT EXISTS child (id INTEGER PRIMARY KEY, parent_id INTEGER"
                   " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
        return db
    return open_connection


def rows(path: Path, table: str) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute(f"SELECT id FROM {table} ORDER BY id")]


def insert(table: str, row_id: int, parent_id: int | None = None):
    def run(db: sqlite3.Connection) -> int:
        if table == "child":
            db.execute("INSERT INTO child (id, parent_id) VALUES (?, ?)", (row_id, parent_id))
        else:
            db.execute("INSERT INTO parent (id) VALUES (?)", (row_id,))
        return row_id
    return run


@asynccontextmanager
async def writer_held(writer: GroupCommitWriter) -> AsyncIterator[None]:
    """The writer thread busy in a write of its own until the block ends: the writes queued inside the block
    are committed together next, in one transaction, whatever the threads' timing."""
    inside, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        inside.set()
        release.wait(10)

    holding = asyncio.create_task(writer.write(hold))
    assert await asyncio.to_thread(inside.wait, 10)
    try:
        yield
        await asyncio.sleep(0)  # the writes gathered inside the block are queued now
    finally:
        release.set()
        await holding


@pytest.fixture
async def writer(tmp_path: Path):
    batches: list[int] = []
    w = GroupCommitWriter(connect(tmp_path / "w.db"), max_batch=100, max_delay_seconds=0, on_batch=batches.append)
    w.batches = batches  # type: ignore[attr-defined]
    await w.start()
    yield w
    await w.stop()


async def test_writes_queued_together_share_one_commit_in_order(tmp_path: Path, writer: GroupCommitWriter) -> None:
    results = await asyncio.gather(*(writer.write(insert("parent", n)) for n in range(1, 51)))
    assert results == list(range(1, 51))
    assert rows(tmp_path / "w.db", "parent") == list(range(1, 51))
    assert sum(writer.batches) == 50 and len(writer.batches) < 50  # type: ignore[attr-defined]


async def test_a_failing_write_is_undone_alone_and_its_caller_hears_why(tmp_path: Path,
                                                                      writer: GroupCommitWriter) -> None:
    def half_done_then_fails(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO parent (id) VALUES (99)")
        db.execute("INSERT INTO parent (id) VALUES (1)")  # already there: IntegrityError

    async with writer_held(writer):
        together = asyncio.gather(writer.write(insert("parent", 1)), writer.write(half_done_then_fails),
                                  writer.write(insert("parent", 2)), return_exceptions=True)
    first, failed, last = await together
    assert (first, last) == (1, 2) and isinstance(failed, sqlite3.IntegrityError)
    assert rows(tmp_path / "w.db", "parent") == [1, 2]  # 99 was rolled back with its write
    assert writer.batches == [1, 3]  # type: ignore[attr-defined]


async def test_a_commit_that_fails_fails_every_write_in_it(tmp_path: Path, writer: GroupCommitWriter) -> None:
    async with writer_held(writer):
        together = asyncio.gather(writer.write(insert("parent", 1)), writer.write(insert("child", 1, parent_id=42)),
                                  return_exceptions=True)
    results = await together
    assert all(isinstance(result, sqlite3.IntegrityError) for result in results)  # nobody hears "done"
    assert rows(tmp_path / "w.db", "parent") == [] and rows(tmp_path / "w.db", "child") == []
    assert await writer.write(insert("parent", 1)) == 1  # and the writer goes on


async def test_stop_commits_what_is_queued_then_refuses_new_writes(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect(tmp_path / "w.db"), max_batch=2, max_delay_seconds=0, on_batch=None)
    await writer.start()
    pending = [asyncio.create_task(writer.write(insert("parent", n))) for n in range(1, 8)]
    await asyncio.sleep(0)
    await writer.stop()
    assert [task.result() for task in pending] == list(range(1, 8))
    assert rows(tmp_path / "w.db", "parent") == list(range(1, 8))
    with pytest.raises(RuntimeError, match="not open"):
        await writer.write(insert("parent", 9))


async def test_a_caller_that_gives_up_does_not_undo_its_write(tmp_path: Path, writer: GroupCommitWriter) -> None:
    task = asyncio.create_task(writer.write(insert("parent", 7)))
    await asyncio.sleep(0)
    task.cancel()
    await writer.write(insert("parent", 8))  # committed after (or with) the abandoned one
    assert rows(tmp_path / "w.db", "parent") == [7, 8]


class Abort(BaseException):
    pass


async def test_a_write_that_raises_a_base_exception_fails_its_batch_and_the_writer_goes_on(
        tmp_path: Path, writer: GroupCommitWriter) -> None:
    def abort(db: sqlite3.Connection) -> None:
        raise Abort()

    async with writer_held(writer):
        together = asyncio.gather(writer.write(insert("parent", 1)), writer.write(abort),
                                  writer.write(insert("parent", 2)), return_exceptions=True)
    results = await asyncio.wait_for(together, 10)  # a dead writer would leave them waiting for ever
    assert all(isinstance(result, RuntimeError) and "Abort" in str(result) for result in results)
    assert rows(tmp_path / "w.db", "parent") == []  # nobody heard "done" for a write that was rolled back
    assert await asyncio.wait_for(writer.write(insert("parent", 3)), 10) == 3


async def test_a_stop_that_is_given_up_on_still_finishes_the_commit(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect(tmp_path / "w.db"), max_batch=10, max_delay_seconds=0, on_batch=None)
    await writer.start()

    def slow(db: sqlite3.Connection) -> int:
        time.sleep(0.3)
        return insert("parent", 1)(db)

    pending = asyncio.create_task(writer.write(slow))
    await asyncio.sleep(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.stop(), 0.1)
    assert await pending == 1  # its caller hears that it is on disk
    await writer.stop()
    assert rows(tmp_path / "w.db", "parent") == [1]


def synchronous(db: sqlite3.Connection) -> int:
    """The connection's synchronous setting inside the transaction: 1 NORMAL (no fsync at commit), 2 FULL."""
    return db.execute("PRAGMA synchronous").fetchone()[0]


async def test_only_a_transaction_with_a_durable_write_waits_for_the_disk(tmp_path: Path,
                                                                         writer: GroupCommitWriter) -> None:
    """The pipeline's bookkeeping commits without an fsync of its own; an acknowledgement's write, alone or
    beside it, always commits with one."""
    assert await writer.write(synchronous, durable=False) == 1
    assert await writer.write(synchronous) == 2
    together = await asyncio.gather(writer.write(synchronous, durable=False), writer.write(synchronous),
                                    writer.write(synchronous, durable=False))
    assert together[1] == 2  # the others may have shared its transaction (then fsynced too) or not
    assert await writer.write(synchronous, durable=False) == 1


async def test_fsync_every_commit_makes_every_transaction_wait_for_the_disk(tmp_path: Path) -> None:
    writer = GroupCommitWriter(connect(tmp_path / "w.db"), max_batch=100, max_delay_seconds=0, on_batch=None,
                               sync_every_commit=True)
    await writer.start()
    try:
        assert [await writer.write(synchronous, durable=False), await writer.write(synchronous)] == [2, 2]
    finally:
        await writer.stop()


async def test_writes_from_another_event_loop_are_committed_and_answered_there(tmp_path: Path,
                                                                            writer: GroupCommitWriter) -> None:
    """The listeners' own loop (gateway/listener_loop.py) writes beside the main loop's writes."""
    def on_its_own_loop() -> list[int]:
        async def writes() -> list[int]:
            return list(await asyncio.gather(*(writer.write(insert("parent", n)) for n in range(100, 110))))
        return asyncio.run(writes())

    theirs, ours = await asyncio.gather(asyncio.to_thread(on_its_own_loop),
                                        asyncio.gather(*(writer.write(insert("parent", n)) for n in range(1, 11))))
    assert theirs == list(range(100, 110)) and list(ours) == list(range(1, 11))
    assert rows(tmp_path / "w.db", "parent") == list(range(1, 11)) + list(range(100, 110))


async def test_a_writer_that_cannot_open_says_why_and_can_be_started_again(tmp_path: Path) -> None:
    attempts: list[int] = []

    def flaky() -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("database is locked")
        return connect(tmp_path / "w.db")()

    writer = GroupCommitWriter(flaky, max_batch=10, max_delay_seconds=0, on_batch=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await writer.start()
    with pytest.raises(RuntimeError, match="not open"):
        await writer.write(insert("parent", 1))
    await writer.start()
    try:
        assert await writer.write(insert("parent", 1)) == 1
    finally:
        await writer.stop()


async def test_a_failing_batch_callback_neither_ends_the_writer_nor_loses_a_write(tmp_path: Path) -> None:
    def broken(writes: int) -> None:
        raise ValueError("a metric that cannot be observed")

    writer = GroupCommitWriter(connect(tmp_path / "w.db"), max_batch=10, max_delay_seconds=0, on_batch=broken)
    await writer.start()
    try:
        assert await asyncio.wait_for(writer.write(insert("parent", 1)), 10) == 1
        assert await asyncio.wait_for(writer.write(insert("parent", 2)), 10) == 2
    finally:
        await asyncio.wait_for(writer.stop(), 10)
    assert rows(tmp_path / "w.db", "parent") == [1, 2]
