"""The durable store: the Store Protocol the gateway speaks to (interface.py) and the backend behind it.

Only this package knows the database: callers get a Store from open_store() and see the dataclasses and
StoreError types of interface.py, never a connection, SQL or a driver's exception.
"""
from __future__ import annotations

from collections.abc import Callable

from gateway.config import StoreSettings
from gateway.encryption import load_cipher
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
from gateway.store.interface import (
    PURGE_KINDS,
    QUEUE_NAMES,
    AdminError,
    ClaimedMessage,
    ClaimedSubmission,
    EncodedDocument,
    Inbound,
    ItemRef,
    MappingOutcome,
    OperatorAction,
    Parked,
    QueuedItem,
    SchemaTooNewError,
    Store,
    StoreBusy,
    Stored,
    StoreError,
    StoreLockedError,
    StoreUnavailable,
)
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore

__all__ = ["PURGE_KINDS", "QUEUE_NAMES", "AdminError", "Attempt", "AuditFilter", "ChannelBacklog", "ClaimedMessage",
           "ClaimedSubmission", "DocumentVersion", "EncodedDocument", "Inbound", "ItemRef", "MappingOutcome",
           "MessageDetail", "MessageFilter", "MessageRow", "OperatorAction", "Parked", "PostgresStore", "QueuedItem",
           "ReceiptRow", "SchemaTooNewError", "SenderActivity", "SqliteStore", "Store", "StoreBusy", "StoreError",
           "StoreLockedError", "StoreUnavailable", "Stored", "SubmissionRow", "open_store"]


async def open_store(settings: StoreSettings, *, owner: bool = False,
                     on_batch: Callable[[int], None] | None = None) -> Store:
    """The configured store, open. The owner is a serving gateway: it alone may create a SQLite store, and
    it locks out a second gateway and re-queues what a crashed predecessor held; on PostgreSQL several owners
    (nodes) serve together and take over a dead one's work. Operator tools (owner=False) work beside them on
    the existing store and never create a new, empty SQLite file."""
    if settings.backend == "postgresql":
        try:
            dsn = settings.postgres_dsn()
        except OSError as exc:
            raise StoreError(f"store.dsn_file {settings.dsn_file}: {exc.strerror}") from None
        postgres: Store = await PostgresStore(
            dsn, load_cipher(settings), lease_seconds=settings.lease_seconds, pool_size=settings.pool_size,
            max_batch=settings.group_commit_max_batch, max_delay_ms=settings.group_commit_max_delay_ms,
            on_batch=on_batch).open(owner=owner)
        return postgres
    if not owner and not settings.path.exists():
        raise StoreError(f"no store at {settings.path}: check store.path (the gateway creates it when it starts)")
    store: Store = await SqliteStore(
        settings.path, load_cipher(settings), lease_seconds=settings.lease_seconds,
        max_batch=settings.group_commit_max_batch, max_delay_ms=settings.group_commit_max_delay_ms,
        on_batch=on_batch, fsync_every_commit=settings.fsync_every_commit).open(owner=owner)
    return store
