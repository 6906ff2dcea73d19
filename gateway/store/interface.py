"""What the gateway asks of its durable store, in the gateway's terms: no SQL, no connection, no driver error.

Two implementations: SQLite (sqlite.py), embedded, one gateway per file; PostgreSQL (postgres.py), shared
by several gateway nodes. store.backend chooses; open_store() in __init__.py opens it.
Every method that changes state returns only once the change is durable, and raises a StoreError (most often
StoreUnavailable) instead of a driver's own exception when it is not.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from adapters.portal.base import Receipt, Submission
from gateway.store.browse import (
    Attempt,
    AuditFilter,
    ChannelBacklog,
    MessageDetail,
    MessageFilter,
    MessageRow,
    SenderActivity,
)
from mappings.model import Document, DocumentKind

QUEUE_NAMES = ("inbox", "outbox")
PURGE_KINDS = ("messages", "outbox", "documents")  # inbox payloads, outbox bodies, document bundles


class StoreError(Exception):
    """The store cannot do what was asked; the message says why in one line."""


class SchemaTooNewError(StoreError):
    """The file was written by a newer gateway; opening it could corrupt what that version relies on."""


class StoreLockedError(StoreError):
    """Another gateway process serves from this store."""


class StoreUnavailable(StoreError):
    """The database failed an operation (I/O, disk full, locked, corrupt, a constraint): nothing of it was kept."""


class StoreBusy(StoreUnavailable):
    """Another process held the write lock for longer than we waited; nothing was changed, trying later may work."""


class AdminError(Exception):
    """An operator request that cannot be done as asked; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message to keep durably; `ack` is what goes back now and on every retransmission."""

    source: str
    sender: str
    control_id: str
    message_type: str
    correlation_id: str
    payload: bytes
    ack: bytes
    content_digest: str = ""  # compared on a repeated control id; empty: not compared


@dataclass(frozen=True, slots=True)
class Stored:
    message_id: int
    ack: bytes
    duplicate: bool
    same_content: bool = True  # False: the control id was already used for a different message


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: int
    source: str
    message_type: str
    correlation_id: str
    received_at: float
    payload: bytes
    attempts: int = 1  # claims so far, this one included


@dataclass(frozen=True, slots=True)
class Parked:
    """A document version that waits (for a site mapping, or an element a later message brings)."""

    document_id: str
    version: int
    channel: str
    codes: tuple[str, ...]
    first_received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class EncodedDocument:
    """A new document version ready to store: its keys and its bundle already encoded as the store keeps it
    (encoded where it was assembled, in a signing process, so the gateway process neither encodes it nor
    receives the bundle as a dict)."""

    document_id: str
    version: int
    kind: DocumentKind
    patient_key: str
    bundle: bytes = field(repr=False)

    @property
    def idempotency_key(self) -> str:
        return f"{self.document_id}:v{self.version}"

    @classmethod
    def of(cls, document: Document) -> EncodedDocument:
        """The document as the store keeps it."""
        return cls(document.document_id, document.version, document.kind, document.patient_key,
                   encode_bundle(document.bundle))

    def decoded(self) -> Document:
        """The document with its bundle as a dict again, for assembling onto it or building from it."""
        return Document(self.document_id, self.version, self.kind, self.patient_key, json.loads(self.bundle))


def encode_bundle(bundle: dict[str, Any]) -> bytes:
    """A document bundle as stored: JSON, UTF-8, non-ASCII kept as is (Vietnamese text stays one form)."""
    return json.dumps(bundle, ensure_ascii=False).encode()


PURGED_BUNDLE = encode_bundle({})  # what a version whose bundle retention purged reads as


@dataclass(frozen=True, slots=True)
class MappingOutcome:
    """What became of one claimed message: its new documents, submissions and parked documents, or why it
    is dead."""

    message_id: int
    documents: list[EncodedDocument] = field(default_factory=list)
    submissions: list[Submission] = field(default_factory=list)
    dead_reason: str | None = None
    parked: list[Parked] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClaimedSubmission:
    id: int
    submission: Submission
    attempts: int
    first_received_at: float


@dataclass(frozen=True, slots=True)
class ItemRef:
    """`inbox:ID` or `outbox:ID`, the name of a queued item on the command line."""

    queue: str
    id: int

    @classmethod
    def parse(cls, text: str) -> ItemRef:
        """Read an item name as typed by an operator."""
        queue, _, number = text.partition(":")
        if queue not in QUEUE_NAMES or not number.isdigit():
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


class OperatorAction(NamedTuple):
    """One line of the audit trail."""

    at: float
    operator: str
    action: str  # retry | discard | replay | show-payload
    item: str
    detail: str


class Store(Protocol):
    """Durable queues with leases, so a crash at any point re-queues work instead of losing it."""

    inbox_ready: asyncio.Event  # set when messages were committed
    outbox_ready: asyncio.Event  # set when submissions were queued
    # Once opened as owner (the serving gateway), store_inbound may be awaited from an event loop other than
    # the one that opened the store (the MLLP listener's own, gateway/listener_loop.py); every other method
    # only from the loop that opened it
    writes_from_any_loop: ClassVar[bool]

    async def close(self) -> None:
        """Commit what is queued, then let go of the database."""
        ...

    def lookup_digest(self, value: str) -> str:
        """A keyed one-way digest (HMAC under the store's secret) to find rows by a personal value; the store
        keys patient keys and content digests itself, callers use this for keys they build (a FHIR
        If-None-Exist)."""
        ...

    # ---- inbox ---------------------------------------------------------------------------------

    async def store_inbound(self, inbound: Inbound) -> Stored:
        """Return only once the message is durable (or already was): the caller may then acknowledge."""
        ...

    async def claim_messages(self, limit: int, *, excluding: Sequence[int] = ()) -> list[ClaimedMessage]:
        """Lease received messages in arrival order; an expired lease (a crash) makes them claimable again,
        except for the messages `excluding`, which the caller still holds."""
        ...

    async def release_messages(self, message_ids: list[int], *, charged: int | None = None) -> None:
        """Make claimed, unfinished messages claimable now; all but `charged` get their claim back."""
        ...

    async def latest_document(self, document_id: str) -> Document | None:
        """The version a new fragment of the episode builds on (its bundle is {} once purged)."""
        ...

    async def latest_documents(self, document_ids: Sequence[str]) -> dict[str, EncodedDocument]:
        """latest_document of each, in one read, still encoded (decoded where it is assembled on, in a signing
        process); a document with no version yet is left out."""
        ...

    async def finish_messages(self, outcomes: list[MappingOutcome]) -> None:
        """Finish a batch of mapped or refused messages, all or nothing."""
        ...

    # ---- parked documents (waiting for a site mapping or a missing element) --------------------

    async def parked(self) -> list[Parked]:
        """The documents waiting, oldest acknowledgement first."""
        ...

    async def release_parked(self, waiting: Parked, patient_key: str, submissions: list[Submission],
                             codes: tuple[str, ...] = ()) -> None:
        """A parked version rebuilt: queue its submissions (ending the wait), or record what it still lacks."""
        ...

    # ---- outbox --------------------------------------------------------------------------------

    async def claim_submissions(self, limit: int) -> list[ClaimedSubmission]:
        """Lease due submissions, never one whose patient still has an earlier one undelivered."""
        ...

    async def mark_delivered(self, outbox_id: int, receipt: Receipt) -> None:
        """Record the portal's acceptance and archive its receipt."""
        ...

    async def schedule_retry(self, outbox_id: int, delay_seconds: float, reason: str) -> None:
        """Release a submission for another attempt later, keeping the failure's reason for operators."""
        ...

    async def dead_letter_submission(self, outbox_id: int, reason: str) -> None:
        """Park a submission the portal refused for good, with the portal's reason."""
        ...

    # ---- observation and upkeep ----------------------------------------------------------------

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Counts by (queue, state), for the queue-depth gauge and `status`."""
        ...

    async def oldest_pending_received_at(self) -> float | None:
        """When the oldest acknowledged, not yet delivered item (dead letters included) was acknowledged."""
        ...

    async def purge_expired(self, kind: str, cutoff: float, limit: int) -> int:
        """Drop up to `limit` payloads of one PURGE_KINDS kind finished before `cutoff`, keeping metadata;
        returns how many (retention.py says which qualify)."""
        ...

    # ---- operator work on dead letters ---------------------------------------------------------

    async def dead_letters(self, include_discarded: bool = False) -> list[QueuedItem]:
        """Every dead item of both queues, oldest failure first."""
        ...

    async def queued_item(self, ref: ItemRef) -> QueuedItem:
        """One item in any state; AdminError when there is no such item."""
        ...

    async def item_payload(self, ref: ItemRef, operator: str) -> bytes:
        """The decrypted payload, the viewing audited; AdminError when missing or purged."""
        ...

    async def retry_dead(self, ref: ItemRef, operator: str) -> int:
        """Re-queue a dead item's message to be mapped again, audited; returns that message's id."""
        ...

    async def discard_dead(self, ref: ItemRef, operator: str, note: str = "") -> None:
        """Give up on a dead item for good, audited; it stays, marked."""
        ...

    async def record_action(self, operator: str, action: str, ref: ItemRef, detail: str = "") -> None:
        """Audit an operator action done through another path (a replay through the intake)."""
        ...

    async def operator_actions(self, ref: ItemRef | None = None) -> list[OperatorAction]:
        """The audit trail, oldest first, of one item or of all."""
        ...

    # ---- the operator console and queue commands (reads never take the write lock) ------------

    async def find_messages(self, query: MessageFilter) -> list[MessageRow]:
        """Inbox messages matching a search, newest first, metadata only."""
        ...

    async def message_detail(self, message_id: int) -> MessageDetail:
        """One message's ACK, documents, submissions, attempts and receipts; AdminError when there is none."""
        ...

    async def submission_attempts(self, outbox_id: int) -> list[Attempt]:
        """The delivery attempts of one submission, oldest first."""
        ...

    async def sender_activity(self, since: float) -> list[SenderActivity]:
        """Per feed: messages and refusals since `since`, and when it last sent anything."""
        ...

    async def channel_backlog(self, since: float) -> list[ChannelBacklog]:
        """Per channel: what waits, how old, and deliveries since `since`."""
        ...

    async def retry_now(self, channel: str, operator: str) -> int:
        """Make a channel's pending submissions due now (after an outage), audited; returns how many."""
        ...

    async def change_dead(self, action: str, refs: list[ItemRef], operator: str,
                          note: str = "") -> list[tuple[ItemRef, bool, str]]:
        """Retry or discard many dead items in one transaction; per item whether it was done, and what
        became of it or why not (not dead, an older version, purged): the others still go through."""
        ...

    async def audit_trail(self, query: AuditFilter) -> list[OperatorAction]:
        """Operator actions matching a filter, newest first."""
        ...

    async def record_event(self, operator: str, action: str, subject: str, detail: str = "") -> None:
        """Audit an operator action on something other than one item (a console login, a retry-now)."""
        ...
