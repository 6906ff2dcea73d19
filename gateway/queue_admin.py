"""Queue operations for the operator's CLI: status, dead letters and replay, on the live store file.

They open the same store and key as the running gateway (SQLite WAL lets both work at once) without taking
the gateway's lock; a running gateway picks up retried and replayed items at its next poll.
"""
from __future__ import annotations

import argparse
import getpass
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Settings
from gateway.store import Attempt, Store, open_store
from gateway.store.admin import DeadSelection, ItemRef, QueueAdmin, QueuedItem

if TYPE_CHECKING:
    from gateway.intake import Answer

# Long digit runs look like citizen or insurance numbers; a portal's reason may quote one.
_ID_LIKE = re.compile(r"\d{9,}")
_MESSAGE_START = re.compile(rb"(?:^|[\r\n])(?=MSH)")
REASON_WIDTH = 100


def operator_name() -> str:
    """Who runs the command, for the audit trail (the invoking user under sudo)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


@asynccontextmanager
async def admin_session(settings: Settings) -> AsyncIterator[QueueAdmin]:
    """An open store wrapped for operator work, closed afterwards."""
    store = await open_store(settings.store)
    try:
        yield QueueAdmin(store, operator_name())
    finally:
        await store.close()


async def queue_status(settings: Settings) -> dict[str, Any]:
    """Counts by queue and state, and how long the oldest undelivered item has waited."""
    store = await open_store(settings.store)
    try:
        depths = await store.queue_depths()
        oldest = await store.oldest_pending_received_at()
    finally:
        await store.close()
    summary: dict[str, Any] = {"inbox": {}, "outbox": {}}
    for (queue, state), count in sorted(depths.items()):
        summary[queue][state] = count
    summary["oldest_pending_age_seconds"] = round(time.time() - oldest, 1) if oldest else 0
    return summary


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def listed_reason(reason: str) -> str:
    """A reason fit for a listing: id-like digit runs masked, one line, bounded width."""
    flat = " ".join(_ID_LIKE.sub("[redacted]", reason).split())
    return flat if len(flat) <= REASON_WIDTH else flat[: REASON_WIDTH - 1] + "…"


def item_record(item: QueuedItem, *, full_reason: bool = False) -> dict[str, Any]:
    """An item as JSON-ready data."""
    record = asdict(item)
    record["ref"] = str(item.ref)
    record["reason"] = item.reason if full_reason else listed_reason(item.reason)
    record["received_at"], record["failed_at"] = _when(item.received_at), _when(item.failed_at)
    return record


def attempt_record(attempt: Attempt) -> dict[str, Any]:
    """A delivery attempt as JSON-ready data; the portal's reason is kept whole (it names the field)."""
    return {"at": _when(attempt.at), "outcome": attempt.outcome, "reason": attempt.reason}


def selection_of(args: argparse.Namespace) -> DeadSelection | None:
    """The filter of a bulk `dlq retry|discard`, or None when the command names its items."""
    if not (args.queue or args.kind or args.reason or args.all_dead):
        return None
    return DeadSelection(queue=args.queue or "", kind=args.kind or "", reason=args.reason or "")


def format_table(items: list[QueuedItem]) -> str:
    """The dead letters as an aligned text table, one line per item."""
    header = ("ITEM", "STATE", "KIND", "SUBJECT", "TRIES", "RECEIVED", "FAILED", "REASON")
    rows = [header] + [(str(i.ref), i.state, i.kind, i.subject, str(i.attempts), _when(i.received_at),
                        _when(i.failed_at), listed_reason(i.reason)) for i in items]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def split_messages(data: bytes) -> list[bytes]:
    """The HL7 messages in a file: each starts with MSH on a line of its own; MLLP framing bytes are dropped."""
    data = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    return [part.strip(b"\r\n") + b"\r" for part in _MESSAGE_START.split(data) if part.strip(b"\r\n\t ")]


def control_id_of(message: bytes) -> str:
    """MSH-10 of a raw message, to name it in replay output (the screen reports a missing one)."""
    first = message.split(b"\r", 1)[0].decode("utf-8", errors="replace")
    fields = first.split(first[3:4] or "|")
    return fields[9] if len(fields) > 9 else ""


async def _audited_replay(store: Store, answer: Answer) -> bool:
    """Whether a stored replay already has its audit record: a run that met a busy store after storing a
    message, before auditing it, is run again whole (queue_cli), and then finds the message a duplicate."""
    if not answer.duplicate or answer.message_id is None:
        return False
    actions = await store.operator_actions(ItemRef("inbox", answer.message_id))
    return any(action.action == "replay" for action in actions)


async def replay_file(settings: Settings, path: Path,
                      progress: Callable[[int, int], None] = lambda done, total: None) -> list[Answer]:
    """Ingest a corrected file through the intake's own screen and store, one new message per MSH."""
    from gateway.intake import Hl7Intake
    from gateway.metrics import Metrics
    from mappings.hl7v2 import screen

    messages = split_messages(path.read_bytes())
    store = await open_store(settings.store)
    try:
        intake = Hl7Intake(store, Metrics(), settings.mllp, screen)
        admin = QueueAdmin(store, operator_name())
        answers = []
        for number, message in enumerate(messages, 1):
            answer = await intake.replay(message)
            if answer.message_id is not None and not await _audited_replay(store, answer):
                await admin.record("replay", ItemRef("inbox", answer.message_id), f"from file {path.name}")
            answers.append(answer)
            progress(number, len(messages))
        return answers
    finally:
        await store.close()
