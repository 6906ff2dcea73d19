"""HL7 v2 intake over real MLLP sockets and a real store file: what is acknowledged, and how."""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.config import MllpSettings
from gateway.intake import Hl7Intake
from gateway.metrics import Metrics
from gateway.queue_admin import split_messages
from mappings.hl7v2 import screen
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from mappings.hl7v2.header import MessageHeader, parse_header
from tests.gateway.intake_harness import ack_segments, exchange, hl7, running_intake
from tests.tls_certs import make_pki


async def test_aa_is_sent_only_once_the_message_is_on_disk(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("C1")))
        rows = intake.rows("SELECT state, sender, message_type FROM messages WHERE control_id = 'C1'")
        assert rows == [("received", "HIS_BVDK|BVDK^4000000000123^L", "ADT^A01")]  # committed before the ACK
        assert ack["MSA"] == [["MSA", "AA", "C1"]]
        msh = ack["MSH"][0]
        assert (msh[2], msh[3], msh[4], msh[5], msh[8]) == ("HBGW", "BYT", "HIS_BVDK", "BVDK^4000000000123^L",
                                                            "ACK^A01^ACK")
        assert msh[9] and msh[9] != "C1"  # the ACK has its own control id
        assert intake.stored_payload("C1") == hl7("C1")


async def test_content_error_is_ae_with_err_naming_the_field_and_nothing_is_stored(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("C2", pid3="")))
        assert intake.rows("SELECT count(*) FROM messages") == [(0,)]
    assert ack["MSA"][0][1:3] == ["AE", "C2"]
    [err] = ack["ERR"]
    assert err[2] == "PID^1^3^1" and err[3] == "101^Required field missing^HL70357" and err[4] == "E"
    assert len(err) == 9 and err[8].startswith("PID-3: PID-3 needs a CCCD")


async def test_unsupported_type_is_ar(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("C3", message_type="SIU^S12")))
    assert ack["MSA"][0][1:3] == ["AR", "C3"]
    assert ack["ERR"][0][2] == "MSH^1^9^1" and ack["ERR"][0][3].startswith("200^")


@pytest.mark.parametrize("processing_id", ["T", "D", "", "P^T"])
async def test_test_and_training_messages_are_refused_naming_msh11(tmp_path: Path, processing_id: str) -> None:
    expected = "AA" if processing_id == "P^T" else "AR"  # P^T: production, with a processing-mode component
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("T1", processing_id=processing_id)))
        stored = intake.rows("SELECT count(*) FROM messages WHERE control_id = 'T1'")
        assert ack_segments(await intake.send(hl7("P1")))["MSA"][0][1] == "AA"  # the listener serves on
    assert ack["MSA"][0][1] == expected
    assert stored == [(1 if expected == "AA" else 0,)]  # a refused test message is never stored, never sent
    if expected == "AR":
        assert ack["ERR"][0][2] == "MSH^1^11^1" and ack["ERR"][0][3].startswith("202^")


async def test_accepted_processing_ids_are_a_setting(tmp_path: Path) -> None:
    async with running_intake(tmp_path, accepted_processing_ids=["P", "T"]) as intake:
        ack = ack_segments(await intake.send(hl7("T2", processing_id="T")))
    assert ack["MSA"][0][1] == "AA"


@pytest.mark.parametrize("msh15, msh16, answered", [
    ("AL", "NE", {"CA", "CE", "CR"}), ("", "AL", {"CA", "CE", "CR"}), ("NE", "NE", set()), ("NE", "AL", set()),
    ("ER", "AL", {"CE", "CR"}), ("SU", "NE", {"CA"}),
])
async def test_enhanced_mode_sends_the_commit_acks_msh15_asks_for_when_followed(tmp_path: Path, msh15: str, msh16: str,
                                                                 answered: set[str]) -> None:
    """HL7 table 0155: AL always, NE never, ER on refusal, SU on success; the commit happens either way.

    A message that gets no answer is followed on the same connection by an original-mode one: the next
    answer read is that one's, so nothing was written for the first. The site asked for MSH-15 to be followed.
    """
    async with running_intake(tmp_path, honour_accept_ack_type=True) as intake:
        reader, writer = await intake.connect()
        seen: set[str] = set()
        changes: list[dict[str, str]] = [{}, {"pid3": ""}, {"message_type": "SIU^S12"}]
        for number, (control_id, change) in enumerate(zip(["E1", "E2", "E3"], changes, strict=True)):
            message = hl7(control_id, msh15=msh15, msh16=msh16, **change)
            writer.write(START_BLOCK + message.encode() + END_BLOCK + START_BLOCK + hl7(f"N{number}").encode()
                         + END_BLOCK)
            await writer.drain()
            first = ack_segments((await asyncio.wait_for(reader.readuntil(END_BLOCK), 10))[1:-2])
            if first["MSA"][0][2] == control_id:
                seen.add(first["MSA"][0][1])
                first = ack_segments((await asyncio.wait_for(reader.readuntil(END_BLOCK), 10))[1:-2])
            assert first["MSA"][0][1:3] == ["AA", f"N{number}"]
        writer.close()
        assert intake.rows("SELECT control_id FROM messages ORDER BY id") == [("E1",), ("N0",), ("N1",), ("N2",)]
    assert seen == answered


async def test_retransmission_gets_the_identical_ack_and_is_stored_once(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        first = await intake.send(hl7("R1"))
        await asyncio.sleep(1.1)  # a fresh ACK would carry another timestamp
        again = await intake.send(hl7("R1"))
        other_sender = await intake.send(hl7("R1", sender="LIS"))
        assert intake.rows("SELECT sender FROM messages ORDER BY id") == [("HIS_BVDK|BVDK^4000000000123^L",),
                                                                          ("LIS|BVDK^4000000000123^L",)]
    assert again == first
    assert other_sender != first and ack_segments(other_sender)["MSA"][0][1] == "AA"


async def test_a_resend_with_a_restamped_msh7_is_still_the_same_message(tmp_path: Path) -> None:
    original = hl7("R1")
    restamped = original.replace("20260312083015", "20260312090000", 1)
    async with running_intake(tmp_path) as intake:
        first = await intake.send(original)
        again = await intake.send(restamped)
        assert intake.rows("SELECT count(*) FROM messages") == [(1,)]
    assert again == first


async def test_a_reused_control_id_with_different_content_is_refused_not_dropped(tmp_path: Path) -> None:
    """After an HIS counter reset, a new clinical update must not vanish behind an old control id."""
    async with running_intake(tmp_path) as intake:
        first = ack_segments(await intake.send(hl7("R2")))
        reused = ack_segments(await intake.send(hl7("R2", name="TRAN^BINH")))
        assert intake.rows("SELECT count(*) FROM messages") == [(1,)]
    assert first["MSA"][0][1] == "AA"
    assert reused["MSA"][0][1:3] == ["AR", "R2"]
    assert reused["ERR"][0][2] == "MSH^1^10^1" and reused["ERR"][0][3].startswith("205^Duplicate key")


async def test_concurrent_senders_are_all_stored(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        async def sender(n: int) -> list[str]:
            reader, writer = await intake.connect()
            codes = [ack_segments(await exchange(reader, writer, hl7(f"S{n}-{i}")))["MSA"][0][1] for i in range(20)]
            writer.close()
            return codes

        codes = await asyncio.gather(*(sender(n) for n in range(8)))
        assert intake.rows("SELECT count(DISTINCT control_id) FROM messages") == [(160,)]
    assert {code for batch in codes for code in batch} == {"AA"}


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
async def test_segment_terminators_are_stored_and_screened_as_carriage_returns(tmp_path: Path,
                                                                               terminator: str) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(hl7("T1", terminator=terminator)))
        assert ack["MSA"][0][1] == "AA"
        assert intake.stored_payload("T1") == hl7("T1")


async def test_declared_charsets_are_honoured(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        latin = await intake.send(hl7("L1", charset="8859/1", name="MÜLLER^JOSÉ"), encoding="latin-1")
        utf8 = await intake.send(hl7("U1", name="NGUYỄN^VĂN AN"))
        assert intake.stored_payload("L1") == hl7("L1", charset="8859/1", name="MÜLLER^JOSÉ")
        assert intake.stored_payload("U1") == hl7("U1", name="NGUYỄN^VĂN AN")
    assert ack_segments(latin, "latin-1")["MSA"][0][1] == "AA" and ack_segments(utf8)["MSA"][0][1] == "AA"


async def test_legacy_sender_charset_is_used_when_msh18_is_empty_or_wrong(tmp_path: Path) -> None:
    legacy_name = "NGUY\u00ca\u0303N^V\u0102N AN"  # cp1258 carries tones as combining marks
    async with running_intake(tmp_path, sender_charsets={"OLDHIS": "cp1258"}) as intake:
        empty = await intake.send(hl7("V1", sender="OLDHIS", charset="", name=legacy_name), encoding="cp1258")
        lying = await intake.send(hl7("V2", sender="OLDHIS", name=legacy_name), encoding="cp1258")
        stranger = await intake.send(hl7("V3", sender="OTHER", name=legacy_name), encoding="cp1258")
        assert "NGUYỄN^VĂN AN" in intake.stored_payload("V1")  # composed: compares equal to UTF-8 input
        assert "NGUYỄN^VĂN AN" in intake.stored_payload("V2")
        assert intake.rows("SELECT count(*) FROM messages WHERE control_id = 'V3'") == [(0,)]
    assert ack_segments(empty, "cp1258")["MSA"][0][1] == "AA"
    assert ack_segments(lying, "cp1258")["MSA"][0][1] == "AA"
    refused = ack_segments(stranger)
    assert refused["MSA"][0][1:3] == ["AR", "V3"] and refused["ERR"][0][2] == "MSH^1^18^1"


async def test_oversize_message_is_refused_by_name_and_the_connection_serves_on(tmp_path: Path) -> None:
    async with running_intake(tmp_path, max_message_bytes=2000) as intake:
        reader, writer = await intake.connect()
        big = await exchange(reader, writer, hl7("BIG", name="X" * 5000))
        small = await exchange(reader, writer, hl7("SMALL"))
        writer.close()
        assert intake.rows("SELECT control_id FROM messages") == [("SMALL",)]
    refused = ack_segments(big)
    assert refused["MSA"][0][1:3] == ["AR", "BIG"] and "2000-byte limit" in refused["MSA"][0][3]
    assert ack_segments(small)["MSA"][0][1] == "AA"


async def test_unreadable_and_incomplete_headers_are_refused(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        no_msh = ack_segments(await intake.send("PID|1||X\r"))
        no_control_id = ack_segments(await intake.send(hl7("")))
        assert intake.rows("SELECT count(*) FROM messages") == [(0,)]
    assert no_msh["MSA"][0][1] == "AR" and no_msh["ERR"][0][2] == "MSH^1"
    assert no_control_id["MSA"][0][1] == "AE" and no_control_id["ERR"][0][2] == "MSH^1^10^1"


@pytest.mark.parametrize("rule, allowed", [
    ({"address": "127.0.0.0/8"}, True),
    ({"address": "10.0.0.0/8"}, False),
    ({"address": "127.0.0.1", "sending_application": "HIS_BVDK"}, True),
    ({"address": "127.0.0.1", "sending_application": "LIS"}, False),
    ({"sending_facility": "4000000000123"}, True),  # MSH-4.2, the facility id
    ({"sending_facility": "BVDK"}, True),
    ({"sending_facility": "OTHER"}, False),
    ({"client_cert_cn": "his-bvdk"}, False),  # no TLS here, so no client certificate
])
async def test_allowlist_by_address_application_and_facility(tmp_path: Path, rule: dict, allowed: bool) -> None:
    async with running_intake(tmp_path, allowed_senders=[rule]) as intake:
        ack = ack_segments(await intake.send(hl7("A1")))
        stored = intake.rows("SELECT count(*) FROM messages")[0][0]
    if allowed:
        assert ack["MSA"][0][1] == "AA" and stored == 1
    else:
        assert ack["MSA"][0][1] == "AR" and ack["ERR"][0][2] == "MSH^1^4^1" and stored == 0


async def test_a_store_failure_closes_the_connection_without_an_ack(tmp_path: Path) -> None:
    async with running_intake(tmp_path) as intake:
        with sqlite3.connect(intake.path) as db:
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk'); END")
        reader, writer = await intake.connect()
        writer.write(b"\x0b" + hl7("F1").encode() + b"\x1c\x0d")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # no ACK: the sender keeps it and resends
        writer.close()
        with sqlite3.connect(intake.path) as db:
            db.execute("DROP TRIGGER refuse")
        assert ack_segments(await intake.send(hl7("F1")))["MSA"][0][1] == "AA"


async def test_allowlist_by_tls_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = {"enabled": True, "cert_file": pki.server_cert, "key_file": pki.server_key, "client_ca_file": pki.ca}
    async with running_intake(tmp_path, client_ssl=pki.client_context(), tls=tls,
                              allowed_senders=[{"client_cert_cn": "his-bvdk"}]) as intake:
        with_cert = ack_segments(await intake.send(hl7("K1")))
        intake.client_ssl = pki.client_context(with_certificate=False)
        without_cert = ack_segments(await intake.send(hl7("K2")))
    assert with_cert["MSA"][0][1] == "AA"
    assert without_cert["MSA"][0][1] == "AR" and without_cert["ERR"][0][2] == "MSH^1^4^1"


async def test_replay_stores_a_corrected_message_as_new_and_only_once(tmp_path: Path) -> None:
    async with running_intake(tmp_path, allowed_senders=[{"address": "10.0.0.0/8"}]) as intake:
        refused = ack_segments(await intake.send(hl7("P1", pid3="")))
        intake_under_test = Hl7Intake(intake.store, Metrics(), MllpSettings(), screen)
        corrected = await intake_under_test.replay(hl7("P1", terminator="\n").encode())
        again = await intake_under_test.replay(hl7("P1").encode())
        still_wrong = await intake_under_test.replay(hl7("P1", pid3="").encode())
        stored = intake.rows("SELECT id, source, sender, control_id FROM messages")
    assert refused["MSA"][0][1] == "AR"  # the network sender is not on the allowlist; the operator is
    assert (corrected.code, corrected.duplicate, again.duplicate) == ("AA", False, True)
    assert again.message_id == corrected.message_id and again.ack == corrected.ack
    assert still_wrong.code == "AE" and still_wrong.message_id is None and still_wrong.issues[0].location == "PID-3"
    [(message_id, source, sender, control_id)] = stored
    assert (message_id, source, sender) == (corrected.message_id, "replay", "HIS_BVDK|BVDK^4000000000123^L")
    assert control_id.startswith("P1~replay:")  # its own control id, keyed by its content


def test_a_replay_file_may_hold_several_messages_framed_or_not() -> None:
    data = b"\x0b" + hl7("A").encode() + b"\x1c\r" + hl7("B", terminator="\n").encode() + b"\n\n"
    headers = [parse_header(message.decode()) for message in split_messages(data)]
    assert [header.control_id for header in headers if isinstance(header, MessageHeader)] == ["A", "B"]


@pytest.mark.parametrize("msh15", ["AL", "NE", "ER", "SU", ""])
async def test_every_complete_frame_is_answered_by_default_whatever_msh15_asks(tmp_path: Path, msh15: str) -> None:
    async with running_intake(tmp_path) as intake:
        accepted = ack_segments(await intake.send(hl7(f"D{msh15}", msh15=msh15, msh16="NE")))
        refused = ack_segments(await intake.send(hl7(f"R{msh15}", msh15=msh15, msh16="NE", pid3="")))
    assert accepted["MSA"][0][1:3] == ["CA", f"D{msh15}"]
    assert refused["MSA"][0][1:3] == ["CE", f"R{msh15}"]
