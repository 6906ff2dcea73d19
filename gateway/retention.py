"""Retention: payloads of delivered work are purged after `store.retention_days`; metadata and receipts stay.

Once older than the retention period (by when the item finished, or for a document by when it was built):
- inbox payloads of messages that are mapped or discarded and none of whose submissions still waits or is dead
  (an operator fixing a dead submission needs the source message);
- outbox bodies of superseded or discarded submissions (a delivered one's is dropped on delivery: it can be
  signed again from its document);
- document bundles whose submissions are all finished, the latest version included.
Dead items keep their payload until an operator retries or discards them. Rows are never deleted: ids,
times, states, reasons, receipts and the operator audit trail remain, with `purged_at` set.

Trade-off of purging the latest document version: each new message of an episode is assembled onto the
latest version of its document. After that bundle is purged, a late message for the same episode starts
from an empty document (its version number still continues, so it replaces the older one at the portal and
carries only what the late message brings). Keep `retention_days` longer than the longest episode plus its
late results; the default 30 days covers most stays.
"""
from __future__ import annotations

import asyncio
import time

from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.store import PURGE_KINDS, Store

log = get_logger(__name__)

PURGE_CHUNK = 500  # rows per transaction, so group commits are never held up for long


async def purge_expired(store: Store, cutoff: float) -> dict[str, int]:
    """Purge what finished before `cutoff`, a chunk per transaction; returns how many payloads per table."""
    purged = {}
    for kind in PURGE_KINDS:
        purged[kind] = 0
        while True:
            count = await store.purge_expired(kind, cutoff, PURGE_CHUNK)
            purged[kind] += count
            if count < PURGE_CHUNK:
                break
    return purged


class Retention:
    """The periodic purge: once at start, then every `interval_seconds`."""

    def __init__(self, store: Store, metrics: Metrics, retention_days: float, interval_seconds: float = 3600.0) -> None:
        self._store = store
        self._metrics = metrics
        self._retention = retention_days * 86400
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Purge in the background for as long as the gateway runs."""
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        """Stop between purges (a chunk in progress is one transaction: it completes or rolls back)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run_once(self) -> dict[str, int]:
        """Purge everything past retention now, and count it."""
        purged = await purge_expired(self._store, time.time() - self._retention)
        for table, count in purged.items():
            if count:
                self._metrics.purged_payloads.labels(table).inc(count)
        if any(purged.values()):
            log.info("retention_purged", **purged)
        return purged

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a failed purge is retried next period; it must not stop the gateway
                log.exception("retention_failed")
            await asyncio.sleep(self._interval)
