"""Operator work on the queues: dead letters (list, show, retry, discard) with an audit trail.

Dead letters live in both queues: inbox messages that could not become a record (`inbox:ID`) and outbox
submissions the portal refused for good (`outbox:ID`). Nothing is ever deleted: a discarded item keeps its
metadata and reason, and every retry, discard, replay and payload view is written to the audit trail, in
the same transaction as the change itself (the Store sees to that).
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.store.browse import (
    Attempt,
    AuditFilter,
    ChannelBacklog,
    MessageDetail,
    MessageFilter,
    MessageRow,
    SenderActivity,
)
from gateway.store.interface import AdminError, ItemRef, OperatorAction, QueuedItem, Store

__all__ = ["AdminError", "DeadSelection", "ItemRef", "OperatorAction", "QueueAdmin", "QueuedItem"]


@dataclass(frozen=True, slots=True)
class DeadSelection:
    """Which dead items a bulk retry or discard takes: every field left empty matches anything."""

    queue: str = ""  # inbox | outbox
    kind: str = ""  # message type (inbox) or channel (outbox)
    reason: str = ""  # words the reason contains
    failed_since: float | None = None
    failed_until: float | None = None

    def matches(self, item: QueuedItem) -> bool:
        """Whether a dead item falls in this selection."""
        failed = item.failed_at or 0.0
        return ((not self.queue or item.ref.queue == self.queue)
                and (not self.kind or item.kind == self.kind or item.kind.startswith(self.kind + "^"))
                and (not self.reason or self.reason.lower() in item.reason.lower())
                and (self.failed_since is None or failed >= self.failed_since)
                and (self.failed_until is None or failed < self.failed_until))


class QueueAdmin:
    """Dead-letter operations on an open store, on behalf of one operator, each one audited."""

    def __init__(self, store: Store, operator: str) -> None:
        self._store = store
        self._operator = operator

    async def dead_letters(self, include_discarded: bool = False) -> list[QueuedItem]:
        """Every dead item of both queues, oldest failure first."""
        return await self._store.dead_letters(include_discarded)

    async def item(self, ref: ItemRef) -> QueuedItem:
        """One item in any state, or AdminError when there is no such item."""
        return await self._store.queued_item(ref)

    async def payload(self, ref: ItemRef) -> bytes:
        """The decrypted payload, for an operator to correct; the viewing itself is audited."""
        return await self._store.item_payload(ref, self._operator)

    async def retry(self, ref: ItemRef) -> str:
        """Put a dead item back to be processed again; returns what happens to it next.

        A refused submission is not resent byte for byte: the usual causes (a wrong certificate, swapped
        facility codes) are baked into the signed body. Its message is mapped and signed again with the
        current settings instead, and the new document version supersedes the refused one.
        """
        message_id = await self._store.retry_dead(ref, self._operator)
        return f"inbox:{message_id} queued to be mapped and signed again with the current settings"

    async def discard(self, ref: ItemRef, note: str = "") -> None:
        """Give up on a dead item for good; it stays, marked, as part of the audit trail."""
        await self._store.discard_dead(ref, self._operator, note)

    async def record(self, action: str, ref: ItemRef, detail: str = "") -> None:
        """Audit an operator action done through another path (a replay through the intake)."""
        await self._store.record_action(self._operator, action, ref, detail)

    async def actions(self, ref: ItemRef | None = None) -> list[OperatorAction]:
        """The audit trail (when, who, what, which item, detail), oldest first."""
        return await self._store.operator_actions(ref)

    async def select_dead(self, selection: DeadSelection) -> list[QueuedItem]:
        """The dead items a filter picks, oldest failure first."""
        return [item for item in await self._store.dead_letters() if selection.matches(item)]

    async def change_many(self, action: str, refs: list[ItemRef], note: str = "") -> list[tuple[ItemRef, bool, str]]:
        """Retry or discard several dead items at once (one transaction), each audited; per item whether it
        was done, and what became of it or why not (not dead, an older version, purged)."""
        return await self._store.change_dead(action, refs, self._operator, note)

    async def retry_now(self, channel: str) -> int:
        """After an outage: make a channel's waiting submissions due now instead of at their backoff."""
        return await self._store.retry_now(channel, self._operator)

    async def find(self, query: MessageFilter) -> list[MessageRow]:
        """Inbox messages matching a search, newest first, metadata only."""
        return await self._store.find_messages(query)

    async def message(self, message_id: int) -> MessageDetail:
        """One message with its ACK, documents, submissions, attempts and receipts (no content)."""
        return await self._store.message_detail(message_id)

    async def attempts(self, ref: ItemRef) -> list[Attempt]:
        """The delivery attempts of a submission (an inbox item has none of its own)."""
        return await self._store.submission_attempts(ref.id) if ref.queue == "outbox" else []

    async def feeds(self, since: float) -> list[SenderActivity]:
        """Per sender: traffic and refusals since `since`, and its last message."""
        return await self._store.sender_activity(since)

    async def channels(self, since: float) -> list[ChannelBacklog]:
        """Per channel: backlog, oldest undelivered, deliveries since `since`."""
        return await self._store.channel_backlog(since)

    async def audit(self, query: AuditFilter) -> list[OperatorAction]:
        """The audit trail, filtered, newest first."""
        return await self._store.audit_trail(query)

    async def record_event(self, action: str, subject: str, detail: str = "") -> None:
        """Audit something done that is not a change to one item (a console login, viewing content)."""
        await self._store.record_event(self._operator, action, subject, detail)
