"""Operator work on the queues: dead letters (list, show, retry, discard) with an audit trail.

Dead letters live in both queues: inbox messages that could not become a record (`inbox:ID`) and outbox
submissions the portal refused for good (`outbox:ID`). Nothing is ever deleted: a discarded item keeps its
metadata and reason, and every retry, discard, replay and payload view is written to the audit trail, in
the same transaction as the change itself (the Store sees to that).
"""
from __future__ import annotations

from gateway.store.interface import AdminError, ItemRef, OperatorAction, QueuedItem, Store

__all__ = ["AdminError", "ItemRef", "OperatorAction", "QueueAdmin", "QueuedItem"]


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
