"""Pipeline: inbox -> map -> sign -> outbox -> national portal -> stored receipt, as stages over the store.

- mapping_stage.py: claims messages in acknowledgement order; maps them in worker processes
  (mapping_workers.py), has each document assembled on the version before it, signed and encoded in the
  signing processes (signing_stage.py), and commits each batch in one transaction; the next batch is mapped
  while one is assembled, signed and committed.
- submission_stage.py: several submissions in flight at once, never two of one patient; each attempt ends
  delivered, retry later or dead-lettered.
The stages meet only in the store, so a crash between any two steps re-queues the work, never loses it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from adapters.portal.base import PortalChannel
from gateway.config import PipelineSettings
from gateway.mapping_stage import MAX_MAPPING_ATTEMPTS, MappingStage, MappingWorkerDied
from gateway.mapping_workers import MappingWorkers, map_payload, mapping_executor
from gateway.metrics import Metrics
from gateway.retry import backoff_delay
from gateway.signing_stage import BuildSubmissions, SigningStage
from gateway.store import Store
from gateway.submission_stage import SubmissionStage, reason_label

__all__ = ["MAX_MAPPING_ATTEMPTS", "BuildSubmissions", "MappingWorkerDied", "Pipeline", "backoff_delay",
           "map_payload", "mapping_executor", "reason_label"]


class Pipeline:
    """The stages behind the listeners; start() and stop() are the whole lifecycle."""

    def __init__(self, store: Store, metrics: Metrics, settings: PipelineSettings,
                 build_submissions: BuildSubmissions, channels: dict[str, PortalChannel],
                 new_executor: Callable[[], Executor], *, signing_processes: int = 0,
                 mapping_processes: int = 1) -> None:
        """`build_submissions` must pickle when `signing_processes` > 0: each signing process gets a copy;
        `mapping_processes`: how many `new_executor`'s pool maps at once (a batch goes in that many chunks)."""
        self._stopping = asyncio.Event()
        self._mapping = MappingWorkers(new_executor, mapping_processes)
        self._signing = SigningStage(build_submissions, signing_processes)
        self._stages = (MappingStage(store, metrics, settings, self._mapping, self._signing, self._stopping),
                        SubmissionStage(store, metrics, settings, channels, self._stopping))
        self._store = store
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the worker processes and the stages."""
        self._mapping.start()
        self._signing.start()
        self._tasks = [asyncio.create_task(stage.run(), name=f"pipeline-{type(stage).__name__}")
                       for stage in self._stages]

    async def stop(self) -> None:
        """Finish the steps in progress, then stop; unfinished work stays leased and is re-queued."""
        self._stopping.set()
        self._store.inbox_ready.set()
        self._store.outbox_ready.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._mapping.stop()
        self._signing.stop()
