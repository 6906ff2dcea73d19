"""What an operator sees of the store beyond the dead letters: searches, one message's history, per-feed and
per-channel activity, the audit trail. Metadata only: no payload and no personal data in any of these.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What an operator searches the inbox by; empty fields match anything (no personal data among them)."""

    control_id: str = ""
    sender: str = ""
    message_type: str = ""
    state: str = ""
    since: float | None = None
    until: float | None = None
    document_id: str = ""
    before_id: int | None = None  # paging: only messages older than this one
    limit: int = 100


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One inbox message as the browser lists it: metadata only."""

    id: int
    source: str
    sender: str
    control_id: str
    message_type: str
    state: str
    received_at: float
    finished_at: float | None
    attempts: int
    reason: str
    payload_purged: bool


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    document_id: str
    version: int
    kind: str
    created_at: float
    purged: bool


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    """One outbox submission of a message's documents, with where it stands."""

    id: int
    channel: str
    document_id: str
    version: int
    state: str
    attempts: int
    reason: str
    first_received_at: float
    next_attempt_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt of a submission: delivered, retry (a passing failure) or dead."""

    outbox_id: int
    at: float
    outcome: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    outbox_id: int
    channel: str
    transaction_id: str
    received_at: str
    result_code: str


@dataclass(frozen=True, slots=True)
class MessageDetail:
    """Everything about one message an operator may see without opening its content."""

    message: MessageRow
    ack: bytes
    documents: list[DocumentVersion]
    submissions: list[SubmissionRow]
    attempts: list[Attempt]
    receipts: list[ReceiptRow]


@dataclass(frozen=True, slots=True)
class SenderActivity:
    """One feed (sender) over a recent window, and its last message ever."""

    source: str
    sender: str
    received: int  # in the window
    refused: int  # in the window, dead (could not become a record)
    last_received_at: float


@dataclass(frozen=True, slots=True)
class ChannelBacklog:
    """One portal channel's undelivered work."""

    channel: str
    pending: int
    in_flight: int
    dead: int
    delivered_recently: int  # in the window
    oldest_undelivered_at: float | None  # first acknowledgement among pending and in-flight items
    next_attempt_at: float | None
    last_reason: str  # the latest failure among pending items


@dataclass(frozen=True, slots=True)
class AuditFilter:
    operator: str = ""
    action: str = ""
    item: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 1000

