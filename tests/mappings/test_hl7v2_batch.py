"""Batches without sockets: split into messages whatever the segment terminators, answered batch for batch."""
from __future__ import annotations

from datetime import UTC, datetime

from mappings.hl7v2.batch import batch_ack, is_batch, split_batch

NOW = datetime(2026, 3, 12, 1, 30, 15, tzinfo=UTC)


def test_a_lone_batch_with_newlines_splits_into_its_messages_and_is_answered_without_a_file_header() -> None:
    raw = (b"BHS|^~\\&|HIS|BV|HBGW|BYT|20260312||||B7\nMSH|^~\\&|HIS|BV|||20260312||ADT^A01|M1|P|2.5\nPID|1\n"
           b"MSH|^~\\&|HIS|BV|||20260312||ADT^A08|M2|P|2.5\r\nPID|2\r\nBTS|2\n")
    assert is_batch(b"\r\n" + raw) and not is_batch(b"MSH|^~\\&|")
    received = split_batch(raw)
    assert received.file_header == "" and [batch.messages for batch in received.batches] == [[
        b"MSH|^~\\&|HIS|BV|||20260312||ADT^A01|M1|P|2.5\rPID|1\r",
        b"MSH|^~\\&|HIS|BV|||20260312||ADT^A08|M2|P|2.5\rPID|2\r"]]
    answer = batch_ack(received, [[b"MSH|a\rMSA|AA|M1\r", b"MSH|b\rMSA|AE|M2\r"]], control_id="X", now=NOW)
    assert answer.split(b"\r") == [b"BHS|^~\\&|HBGW|BYT|HIS|BV|20260312013015+0000||||X.1|B7", b"MSH|a",
                                   b"MSA|AA|M1", b"MSH|b", b"MSA|AE|M2", b"BTS|2", b""]


def test_a_file_of_two_batches_is_answered_with_two_batches() -> None:
    raw = (b"FHS|^~\\&|HIS|BV|||||||F1\rBHS|^~\\&|HIS|BV|||||||B1\rMSH|^~\\&|HIS|BV|||1||ADT^A01|M1\rBTS|1\r"
           b"BHS|^~\\&|HIS|BV|||||||B2\rBTS|0\rFTS|2\r")
    received = split_batch(raw)
    answer = batch_ack(received, [[b"MSH|a\rMSA|AA|M1\r"], []], control_id="X", now=NOW).decode().split("\r")
    assert [line[:3] for line in answer if line] == ["FHS", "BHS", "MSH", "MSA", "BTS", "BHS", "BTS", "FTS"]
    assert [line.split("|")[11] for line in answer if line[:3] in ("FHS", "BHS")] == ["F1", "B1", "B2"]
    assert answer[-2] == "FTS|2" and "BTS|0" in answer


def test_lines_outside_any_message_and_a_count_that_does_not_match_are_problems_of_their_batch() -> None:
    """Found in review: such lines were dropped, so the batch was answered as if it had been empty."""
    stray = split_batch(b"BHS|^~\\&|HIS|BV\rPID|1||123\rBTS|1\r")
    assert stray.batches[0].messages == [] and stray.batches[0].problems == [
        "a PID segment outside any message (each message starts with an MSH segment)",
        "BTS-1 counts 1 message(s), the batch holds 0"]
    before_any_batch = split_batch(b"FHS|^~\\&\rEVN|A01\rBHS|^~\\&\rMSH|^~\\&|H|B|||1||ADT^A01|M1\rBTS|1\rFTS|1\r")
    assert [batch.problems for batch in before_any_batch.batches] == [
        ["an EVN segment outside any message (each message starts with an MSH segment)"], []]


def test_an_empty_batch_and_a_batch_that_counts_right_have_no_problem() -> None:
    for raw in (b"BHS", b"BHS|^~\\&\rBTS|0\r", b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r", b"FHS",
                b"BHS|^~\\&\rMSH|^~\\&|H|B|||1||ADT^A01|M1\rPID|1\rBTS|1\r", b"BHS|^~\\&\rMSH|^~\\&|H\rBTS\r"):
        assert [batch.problems for batch in split_batch(raw).batches if batch.problems] == [], raw
