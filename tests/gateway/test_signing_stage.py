"""The signing stage sends a batch to its processes in chunks and hands back one result per message, in order."""
from __future__ import annotations

import os
from concurrent.futures import BrokenExecutor

import pytest

from adapters.portal.base import Submission
from gateway.signing_stage import Signed, SigningStage, chunks
from gateway.submissions import SubmissionBuildError
from mappings.model import Document


class Unpicklable(Exception):
    """An exception that cannot travel back from a signing process: it holds a generator."""

    def __init__(self) -> None:
        super().__init__("holds a generator")
        self.state = (n for n in range(1))


class Unreadable(Exception):
    """An exception that pickles but cannot be read back: its constructor wants two arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first} {second}")


def signed_or_refused(document: Document, previous: Document | None = None) -> list[Submission]:
    """A picklable builder: the body names the process and the document; some ids fail on purpose."""
    if document.document_id.startswith("BAD"):
        raise SubmissionBuildError(f"{document.document_id} cannot be encoded")
    if document.document_id.startswith("ODD"):
        raise Unpicklable()
    if document.document_id.startswith("TWO"):
        raise Unreadable("cannot", "return")
    if document.document_id.startswith("DIE"):
        os._exit(3)  # the signing process dies with this document in hand
    return [Submission("bhxh_xml130", document.idempotency_key, document.document_id, document.version,
                       f"{os.getpid()}:{document.document_id}".encode(), "application/xml")]


def versions(*ids: str) -> list[tuple[Document, Document | None]]:
    return [(Document(doc, 1, "episode", "patient", {}), None) for doc in ids]


def test_a_batch_is_split_into_one_run_of_neighbours_per_process() -> None:
    assert chunks([0, 1, 2, 3, 4, 5, 6], 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert chunks([1, 4, 5], 4) == [[1], [4], [5]]
    assert chunks([3, 8], 0) == [[3, 8]]  # no processes: one call in the gateway's signing thread
    assert chunks([], 2) == []


@pytest.mark.parametrize("processes", [0, 2])
async def test_each_message_gets_its_own_result_in_order(processes: int) -> None:
    stage = SigningStage(signed_or_refused, processes)
    stage.start()
    try:
        batch = [versions("D1"), [], versions("BAD1"), versions("D2", "D3"), versions("ODD1"), versions("TWO1"),
                 versions("D4")]
        results = await stage.sign(batch)
    finally:
        stage.stop()
    assert len(results) == len(batch)
    first, empty, refused, pair, odd, unreadable, last = results
    assert isinstance(first, Signed) and isinstance(pair, Signed) and isinstance(last, Signed)
    assert [s.body.split(b":")[1] for s in first.submissions + pair.submissions + last.submissions] == \
        [b"D1", b"D2", b"D3", b"D4"]
    assert all(int(s.body.split(b":")[0]) != os.getpid() for s in first.submissions) == (processes > 0)
    assert empty == Signed()
    assert isinstance(refused, SubmissionBuildError) and str(refused) == "BAD1 cannot be encoded"
    if processes:  # it came back from another process: its traceback there travels as a note
        assert "signed_or_refused" in "\n".join(refused.__notes__)
        assert isinstance(odd, RuntimeError) and "Unpicklable" in str(odd)
        assert isinstance(unreadable, RuntimeError) and str(unreadable) == "Unreadable: cannot return"
    else:
        assert isinstance(odd, Unpicklable) and isinstance(unreadable, Unreadable)


async def test_a_dead_signing_process_fails_the_batch_and_the_next_batch_is_signed() -> None:
    stage = SigningStage(signed_or_refused, 2)
    stage.start()
    try:
        results = await stage.sign([versions("D1"), versions("D2"), versions("DIE1"), versions("D3")])
        assert any(isinstance(result, BrokenExecutor) for result in results)
        assert all(isinstance(result, (BrokenExecutor, Signed)) for result in results)
        again = await stage.sign([versions("D1"), versions("D2")])
    finally:
        stage.stop()
    assert all(isinstance(result, Signed) and result.submissions for result in again)
