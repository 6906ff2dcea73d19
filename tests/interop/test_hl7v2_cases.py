"""Issue 14, HL7 v2 side: what real senders send, over a real socket to the real listener and SQLite store."""
from __future__ import annotations

import asyncio
from pathlib import Path

from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from tests.gateway.intake_harness import ack_segments, exchange, hl7, running_intake

FS = END_BLOCK[:1]


def with_field(message: str, segment: str, number: int, value: str) -> str:
    """The message with field `number` of its first `segment` set (MSH counted as HL7 does)."""
    lines = message.split("\r")
    for index, line in enumerate(lines):
        if line.startswith(segment):
            fields = line.split("|")
            position = number - 1 if segment == "MSH" else number
            fields += [""] * (position + 1 - len(fields))
            fields[position] = value
            lines[index] = "|".join(fields)
            break
    return "\r".join(lines)


def without_segment(message: str, segment: str) -> str:
    return "\r".join(line for line in message.split("\r") if not line.startswith(segment))


async def test_a_frame_ended_by_fs_alone_is_answered_and_the_next_frame_is_not_lost(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        reader, writer = await intake.connect()
        writer.write(START_BLOCK + hl7("FS1").encode() + FS)  # no CR: the sender now waits for the answer
        await writer.drain()
        first = ack_segments((await asyncio.wait_for(reader.readuntil(END_BLOCK), 10))[1:-2])
        writer.write(START_BLOCK + hl7("FS2").encode() + FS + START_BLOCK + hl7("FS3").encode() + END_BLOCK)
        await writer.drain()
        second = ack_segments((await asyncio.wait_for(reader.readuntil(END_BLOCK), 10))[1:-2])
        third = ack_segments((await asyncio.wait_for(reader.readuntil(END_BLOCK), 10))[1:-2])
        writer.close()
        assert [ack["MSA"][0][1:3] for ack in (first, second, third)] == [["AA", "FS1"], ["AA", "FS2"], ["AA", "FS3"]]
        assert intake.rows("SELECT control_id FROM messages ORDER BY id") == [("FS1",), ("FS2",), ("FS3",)]


def batch_file(*messages: str) -> str:
    body = "".join(messages)
    return ("FHS|^~\\&|HIS_BVDK|BVDK^4000000000123^L|HBGW|BYT|20260312083000||||F-0001\r"
            "BHS|^~\\&|HIS_BVDK|BVDK^4000000000123^L|HBGW|BYT|20260312083000||||B-0001\r"
            f"{body}BTS|{len(messages)}\rFTS|1\r")


async def test_a_batch_is_taken_message_by_message_and_answered_with_a_batch_of_acks(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        answer = (await intake.send(batch_file(hl7("B1"), hl7("B2", pid3=""), hl7("B3")))).decode()
        again = (await intake.send(batch_file(hl7("B1"), hl7("B2", pid3=""), hl7("B3")))).decode()
        assert intake.rows("SELECT control_id FROM messages ORDER BY id") == [("B1",), ("B3",)]
    lines = [line.split("|") for line in answer.split("\r") if line]
    names = [fields[0] for fields in lines]
    assert names == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "ERR", "MSH", "MSA", "BTS", "FTS"]
    fhs, bhs = lines[0], lines[1]
    assert (fhs[2], fhs[4], fhs[11]) == ("HBGW", "HIS_BVDK", "F-0001")  # FHS-12: the file it answers
    assert (bhs[2], bhs[4], bhs[11]) == ("HBGW", "HIS_BVDK", "B-0001")  # BHS-12: the batch it answers
    assert [fields[1:3] for fields in lines if fields[0] == "MSA"] == [["AA", "B1"], ["AE", "B2"], ["AA", "B3"]]
    assert lines[-2] == ["BTS", "3"] and lines[-1] == ["FTS", "1"]
    assert [line for line in again.split("\r") if line.startswith("MSA")] == [
        line for line in answer.split("\r") if line.startswith("MSA")]  # a resent batch: the same answers


async def test_a_batch_whose_content_is_not_in_messages_is_refused_not_answered_as_empty(tmp_path: Path) -> None:
    """Found in review: a PID outside any message (a lost MSH line) was dropped and the batch answered BTS|0,
    which a sender reads as "nothing to report"."""
    broken = batch_file(hl7("K1")).replace(
        "BHS|^~\\&|HIS_BVDK|BVDK^4000000000123^L|HBGW|BYT|20260312083000||||B-0001\r",
        "BHS|^~\\&|HIS_BVDK|BVDK^4000000000123^L|HBGW|BYT|20260312083000||||B-0001\rPID|1||X\r")
    async with running_intake(tmp_path) as intake:
        answer = (await intake.send(broken)).decode()
        assert intake.rows("SELECT control_id FROM messages") == [("K1",)]
    lines = [line.split("|") for line in answer.split("\r") if line]
    assert [fields[1] for fields in lines if fields[0] == "MSA"] == ["AA", "AR"]
    assert any("PID segment outside any message" in "|".join(fields) for fields in lines if fields[0] == "ERR")
    assert lines[-2] == ["BTS", "2"]


async def test_a_merge_without_pv1_is_accepted(tmp_path: Path) -> None:
    merge = without_segment(hl7("M1", message_type="ADT^A40^ADT_A39"), "PV1") + "MRG|BN25000001^^^BVDKNA^MR\r"
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(merge))
    assert ack["MSA"][0][1:3] == ["AA", "M1"]


async def test_a_result_without_pv1_is_refused_saying_why(tmp_path: Path) -> None:
    result = without_segment(hl7("O1", message_type="ORU^R01^ORU_R01"), "PV1") + (
        "OBR|1||XN1|718-7^Hemoglobin^LN|||20260312080000\rOBX|1|NM|718-7^Hemoglobin^LN||135|g/L|||||F\r")
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(result))
    assert ack["MSA"][0][1:3] == ["AE", "O1"] and ack["ERR"][0][2] == "PV1^1^19^1"
    assert "PV1 optional in a result message" in ack["ERR"][0][8]


async def test_acks_to_v23_and_v24_use_the_err_1_layout_of_their_version(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        v23 = ack_segments(await intake.send(with_field(hl7("V1", pid3=""), "MSH", 12, "2.3")))
        v24 = ack_segments(await intake.send(with_field(hl7("V2", pid3="", name=""), "MSH", 12, "2.4")))
        v25 = ack_segments(await intake.send(hl7("V3", pid3="")))
    assert v23["MSH"][0][8] == "ACK^A01" and v23["MSH"][0][11] == "2.3"  # 2.3 MSH-9 has two components
    assert v23["ERR"] == [["ERR", "PID^1^3^101&Required field missing&HL70357"]]
    assert v24["MSH"][0][8] == "ACK^A01^ACK"
    repeated = "PID^1^5^101&Required field missing&HL70357~PID^1^3^101&Required field missing&HL70357"
    assert v24["ERR"] == [["ERR", repeated]]  # 2.4: one ERR, ERR-1 repeated
    assert v25["ERR"][0][1:4] == ["", "PID^1^3^1", "101^Required field missing^HL70357"]


async def test_a_stray_blank_in_msh_9_is_not_echoed_into_the_ack(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("S1", message_type="ADT^A01 ^ADT_A01")))
        ack_end = ack_segments(await intake.send(hl7("S2", message_type=" ADT^A01 ")))
    assert ack["MSA"][0][1] == "AA" and ack["MSH"][0][8] == "ACK^A01^ACK"
    assert ack_end["MSA"][0][1] == "AA" and ack_end["MSH"][0][8] == "ACK^A01^ACK"


async def test_msh_15_ne_gets_no_answer_but_is_stored_when_the_site_follows_msh_15(tmp_path: Path) -> None:
    async with running_intake(tmp_path, honour_accept_ack_type=True) as intake:
        reader, writer = await intake.connect()
        writer.write(START_BLOCK + hl7("NE1", msh15="NE", msh16="NE").encode() + END_BLOCK)
        next_ack = ack_segments(await exchange(reader, writer, hl7("NE2")))
        writer.close()
        assert next_ack["MSA"][0][1:3] == ["AA", "NE2"]  # the first answer read is the second message's
        assert intake.rows("SELECT control_id FROM messages ORDER BY id") == [("NE1",), ("NE2",)]


async def test_msh_15_ne_is_answered_by_default(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("NE3", msh15="NE", msh16="NE")))
    assert ack["MSA"][0][1:3] == ["CA", "NE3"]
