"""Queue operations for the operator's CLI: status now, dead-letter handling and replay beside it."""
from __future__ import annotations

import time
from typing import Any

from gateway.config import Settings
from gateway.encryption import load_cipher
from gateway.store import Store


async def open_store(settings: Settings) -> Store:
    """The same store file and key the running gateway uses (SQLite WAL lets both work at once)."""
    return await Store(settings.store.path, load_cipher(settings.store), lease_seconds=settings.store.lease_seconds).open()


async def queue_status(settings: Settings) -> dict[str, Any]:
    """Counts by queue and state, and how long the oldest undelivered item has waited."""
    store = await open_store(settings)
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
