"""Operators' work on dead letters (list, show, payload, retry, discard, audit trail), the same on both backends.

Mixed into SqliteStore and PostgresStore. Each backend names its dialect's SQL module (`_admin`: sqlite_admin
or postgres_admin, whose functions change an item and write its audit record on one connection) and supplies
two ways to its database: `_rows` (a read) and `_change` (a function run in one transaction, committed and
durable before it returns).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

from gateway.encryption import PayloadCipher
from gateway.store import sqlite_admin
from gateway.store.interface import AdminError, ItemRef, OperatorAction, QueuedItem


class DeadLetterMethods:
    """The dead-letter methods of the Store interface, on a backend's `_admin`, `_rows` and `_change`."""

    _admin: ClassVar[ModuleType]
    _cipher: PayloadCipher
    inbox_ready: asyncio.Event

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _change(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    async def dead_letters(self, include_discarded: bool = False) -> list[QueuedItem]:
        """Every dead item of both queues, oldest failure first."""
        states = ["dead", "discarded"] if include_discarded else ["dead"]
        where, params = self._admin.state_in(states)
        inbox = await self._rows(f"{sqlite_admin.INBOX_ITEMS} WHERE state {where}", params)
        outbox = await self._rows(f"{sqlite_admin.OUTBOX_ITEMS} WHERE o.state {where}", params)
        items = [sqlite_admin.item("inbox", row) for row in inbox]
        items += [sqlite_admin.item("outbox", row) for row in outbox]
        return sorted(items, key=lambda item: (item.failed_at or 0, item.ref.queue, item.ref.id))

    async def queued_item(self, ref: ItemRef) -> QueuedItem:
        """One item in any state, or AdminError when there is no such item."""
        rows = await self._rows(self._admin.ITEM_BY_ID[ref.queue], (ref.id,))
        if not rows:
            raise AdminError(f"there is no item {ref}")
        return sqlite_admin.item(ref.queue, rows[0])

    async def item_payload(self, ref: ItemRef, operator: str) -> bytes:
        """The decrypted payload, for an operator to correct; the viewing itself is audited."""
        sealed = await self._change(self._admin.read_payload, ref, operator)
        return self._cipher.open(sealed, self._admin.QUEUES[ref.queue].associated)

    async def retry_dead(self, ref: ItemRef, operator: str) -> int:
        """Put a dead item's message back to be mapped again; returns that message's id."""
        message_id: int = await self._change(self._admin.retry, ref, operator)
        self.inbox_ready.set()
        return message_id

    async def discard_dead(self, ref: ItemRef, operator: str, note: str = "") -> None:
        """Give up on a dead item for good; it stays, marked, as part of the audit trail."""
        await self._change(self._admin.discard, ref, operator, note)

    async def record_action(self, operator: str, action: str, ref: ItemRef, detail: str = "") -> None:
        """Audit an operator action done through another path (a replay through the intake)."""
        await self._change(self._admin.audit, operator, action, ref, detail)

    async def operator_actions(self, ref: ItemRef | None = None) -> list[OperatorAction]:
        """The audit trail (when, who, what, which item, detail), oldest first."""
        if ref is None:
            return [OperatorAction(*row) for row in await self._rows(f"{sqlite_admin.ACTIONS} ORDER BY id")]
        rows = await self._rows(f"{sqlite_admin.ACTIONS} WHERE item = {self._admin.FIRST} ORDER BY id", (str(ref),))
        return [OperatorAction(*row) for row in rows]
