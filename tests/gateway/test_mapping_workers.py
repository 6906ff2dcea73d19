"""The map step sends a batch to the workers in chunks, one per process, and keeps each message's own result."""
from __future__ import annotations

import pickle
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from typing import Any

import pytest

from gateway.mapping_workers import MappingWorkers, chunks, map_payload, mapping_executor
from gateway.store import ClaimedMessage
from gateway.workers import portable
from mappings.model import MappingResult
from tests.conftest import corpus_hl7

NAMES = ("adt_a01_admit.hl7", "oru_r01_lab.hl7", "adt_a08_update.hl7", "invalid_missing_identity.hl7",
         "vxu_v04_immunization.hl7", "adt_a03_discharge.hl7", "mdm_t02_summary.hl7")


def claimed(number: int, payload: bytes, source: str = "mllp") -> ClaimedMessage:
    return ClaimedMessage(number, source, "ADT^A01", f"cid{number}", 0.0, payload)


def batch() -> list[ClaimedMessage]:
    return [claimed(number, corpus_hl7(name).encode()) for number, name in enumerate(NAMES, start=1)]


class CountingPool(Executor):
    """A real thread pool that counts the calls it is given."""

    def __init__(self) -> None:
        self.calls = 0
        self._pool = ThreadPoolExecutor(max_workers=1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


class WholeChunkFails(Executor):
    """Every call fails as a whole, as when its results cannot be pickled back."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(pickle.PicklingError("cannot send the results back"))
        return future


def test_chunks_keep_order_and_spread_evenly() -> None:
    messages = batch()
    for parts in (1, 2, 3, 7, 10):
        split = chunks(messages, parts)
        assert [m for part in split for m in part] == messages
        assert len(split) == min(parts, len(messages))
        assert max(map(len, split)) - min(map(len, split)) <= 2


@pytest.mark.parametrize("processes", [1, 2, 3])
async def test_a_batch_is_one_call_per_process_with_each_message_its_own_result(processes: int) -> None:
    pool = CountingPool()
    workers = MappingWorkers(lambda: pool, processes)
    messages = [*batch(), claimed(99, b"{not json", source="fhir")]
    try:
        results = await workers.map_all(messages)
    finally:
        workers.stop()
    assert pool.calls == processes
    assert results[:-1] == [map_payload(m.source, m.payload) for m in messages[:-1]]
    assert isinstance(results[-1], ValueError)  # the mapping bug is the message's own, the rest still mapped
    assert not workers.isolating


async def test_a_worker_process_maps_a_chunk() -> None:
    workers = MappingWorkers(lambda: mapping_executor(1), 1)
    messages = batch()
    try:
        results = await workers.map_all(messages)
    finally:
        workers.stop()
    assert results == [map_payload(m.source, m.payload) for m in messages]
    assert all(isinstance(result, MappingResult) for result in results)


async def test_a_chunk_that_fails_as_a_whole_is_mapped_again_one_message_at_a_time() -> None:
    workers = MappingWorkers(WholeChunkFails, 1)
    results = await workers.map_all(batch())
    assert all(isinstance(result, BrokenExecutor) for result in results)  # charged to no message
    assert workers.isolating
    alone = await workers.map_all(batch()[:1])
    assert isinstance(alone[0], pickle.PicklingError)  # alone, the failure is the message's own


def test_an_exception_that_cannot_cross_processes_is_sent_by_name() -> None:
    class Local(Exception):
        pass

    assert isinstance(portable(ValueError("x")), ValueError)
    sent = portable(Local("x"))
    assert type(sent) is RuntimeError and str(sent) == "Local"
