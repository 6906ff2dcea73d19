"""The signing stage sends a batch to its processes, whole groups of messages that share documents per call,
and hands back one result per message, in order."""
from __future__ import annotations

import os
from concurrent.futures import BrokenExecutor

import pytest

from adapters.portal.base import Submission
from gateway.signing_stage import Prepared, Signed, SigningStage, groups, spread
from gateway.submissions import SubmissionBuildError
from mappings.model import Document, Fragment


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


def fragments(*ids: str) -> list[Fragment]:
    return [Fragment(doc, "patient", "episode", "2026-03-12T08:30:00+07:00", ()) for doc in ids]


def test_messages_sharing_a_document_directly_or_through_others_are_one_group_in_batch_order() -> None:
    batch = [fragments("A"), fragments("B"), [], fragments("C", "A"), fragments("D"), fragments("C"),
             fragments("B", "E"), fragments("F", "D")]
    assert groups(batch) == [[0, 3, 5], [1, 6], [4, 7]]
    assert groups([[], []]) == []


def test_whole_groups_are_spread_over_the_calls_balanced_each_in_batch_order() -> None:
    assert spread([[0, 3, 5], [1, 6], [4, 7], [8]], 2) == [[0, 3, 5, 8], [1, 4, 6, 7]]
    assert spread([[1], [4], [5]], 4) == [[1], [4], [5]]
    assert spread([[3, 8], [5]], 0) == [[3, 5, 8]]  # no processes: one call in the gateway's signing thread
    assert spread([], 2) == []


@pytest.mark.parametrize("processes", [0, 2])
async def test_each_message_gets_its_own_result_in_order(processes: int) -> None:
    stage = SigningStage(signed_or_refused, processes)
    stage.start()
    try:
        batch = [fragments("D1"), [], fragments("BAD1"), fragments("D2", "D3"), fragments("ODD1"),
                 fragments("TWO1"), fragments("D4")]
        prepared = await stage.sign(batch, {})
    finally:
        stage.stop()
    assert len(prepared) == len(batch)
    assert [item.built for item in prepared] == [{"D1"}, set(), {"BAD1"}, {"D2", "D3"}, {"ODD1"}, {"TWO1"}, {"D4"}]
    first, empty, refused, pair, odd, unreadable, last = [item.result for item in prepared]
    assert isinstance(first, Signed) and isinstance(pair, Signed) and isinstance(last, Signed)
    assert [s.body.split(b":")[1] for s in first.submissions + pair.submissions + last.submissions] == \
        [b"D1", b"D2", b"D3", b"D4"]
    assert all(int(s.body.split(b":")[0]) != os.getpid() for s in first.submissions) == (processes > 0)
    assert [d.idempotency_key for d in first.documents + pair.documents] == ["D1:v1", "D2:v1", "D3:v1"]
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
        results = [item.result for item in
                   await stage.sign([fragments("D1"), fragments("D2"), fragments("DIE1"), fragments("D3")], {})]
        assert any(isinstance(result, BrokenExecutor) for result in results)
        assert all(isinstance(result, (BrokenExecutor, Signed)) for result in results)
        again: list[Prepared] = await stage.sign([fragments("D1"), fragments("D2")], {})
    finally:
        stage.stop()
    assert all(isinstance(item.result, Signed) and item.result.submissions for item in again)
