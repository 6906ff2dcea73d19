"""The map step: stored payloads become mapping results in worker processes, off the event loop.

Mapping is pure (mappings/), so a batch is mapped side by side in any order; what depends on order
(assembling documents onto earlier versions) happens afterwards, in the mapping stage.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor, Executor

from gateway.logs import get_logger
from gateway.store import ClaimedMessage
from gateway.workers import worker_pool
from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from mappings.model import MappingResult

log = get_logger(__name__)

MapResult = MappingResult | BaseException  # BrokenExecutor: the worker died; another exception: a mapping bug


def map_payload(source: str, payload: bytes) -> MappingResult:
    """Map one stored payload; a top-level function so a worker process can run it."""
    if source == "fhir":
        return map_fhir(json.loads(payload))
    return map_message(payload.decode("utf-8"))


def mapping_executor(processes: int) -> Executor:
    """The mapping worker processes (hbgw-map); 0: one thread of the gateway process."""
    return worker_pool(processes, "hbgw-map")


class MappingWorkers:
    """The pool that maps, and what to do when one of its processes dies (the OOM killer, a crash)."""

    def __init__(self, new_executor: Callable[[], Executor]) -> None:
        self._new_executor = new_executor
        self._executor = new_executor()
        self._isolate_through = 0  # after a worker died: map one message at a time up to this id

    @property
    def isolating(self) -> bool:
        """Whether messages are mapped one at a time, to find the one that kills the worker."""
        return self._isolate_through > 0

    def start(self) -> None:
        """Start the worker processes now, not when the first message waits on them."""
        self._executor.submit(len, [])

    def stop(self) -> None:
        """Let the workers go; what they were mapping stays leased and is mapped again."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def map_all(self, messages: Sequence[ClaimedMessage]) -> list[MapResult]:
        """Map the batch in the worker processes. A worker that died breaks the pool: it is replaced, its
        messages count a failed attempt instead of being parked, and they are mapped one at a time until
        past the batch, so a message that kills the worker is found and parked on its own."""
        loop = asyncio.get_running_loop()
        for _ in range(2):
            futures: list[asyncio.Future[MappingResult]] = []
            try:
                for message in messages:
                    futures.append(loop.run_in_executor(self._executor, map_payload, message.source, message.payload))
            except BrokenExecutor:  # it broke while idle: a fresh pool, and submit again
                await asyncio.gather(*futures, return_exceptions=True)
                self._replace(messages)
                continue
            results: list[MapResult] = list(await asyncio.gather(*futures, return_exceptions=True))
            if any(isinstance(result, BrokenExecutor) for result in results):
                self._replace(messages)
            elif len(messages) == 1 and messages[0].id >= self._isolate_through:
                self._isolate_through = 0
            return results
        raise BrokenExecutor("the mapping workers could not be started")

    def _replace(self, messages: Sequence[ClaimedMessage]) -> None:
        log.error("mapping_worker_died", messages=len(messages))
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        self._isolate_through = max(self._isolate_through, max(message.id for message in messages))
