"""Every complete frame gets an ACK: control bytes, wrong charsets, bad versions and oversize fields are
refused naming the field, on a connection that stays open, and their bytes never reach the log."""
from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.gateway.intake_harness import ack_segments, exchange, hl7, running_intake


def with_field(message: str, segment: str, number: int, value: str) -> str:
    lines = message.split("\r")
    for index, line in enumerate(lines):
        if line.startswith(segment + "|"):
            fields = line.split("|")
            offset = 1 if segment == "MSH" else 0  # MSH-1 is the separator itself
            fields += [""] * (number - offset + 1 - len(fields))
            fields[number - offset] = value
            lines[index] = "|".join(fields)
            break
    return "\r".join(lines)


HOSTILE = [
    ("nul-in-msh18", with_field(hl7("H1"), "MSH", 18, "UNICODE UTF-8\x00"), "AE", "MSH^1^18^1"),
    ("nul-in-msh10", hl7("H\x002"), "AE", "MSH^1^10^1"),
    ("nul-in-pid5", hl7("H3", name="NGUYEN\x00^AN"), "AE", "PID^1^5^1"),
    ("escaped-nul-in-pid5", hl7("H4", name="NGUYEN\\X00\\^AN"), "AE", "PID^1^5^1"),
    ("escape-sequence-in-pid5", hl7("H5", name="NGUYEN\\x1b[2J^AN".replace("\\x1b", "\x1b")), "AE", "PID^1^5^1"),
    ("name-over-255", hl7("H6", name="N" * 200 + "^" + "A" * 100), "AE", "PID^1^5^1"),
    ("name-of-1-mb", hl7("H7", name="N" * 1_000_000), "AE", "PID^1^5^1"),
    ("control-id-over-199", hl7("H" * 200), "AE", "MSH^1^10^1"),
    ("del-in-msh10", hl7("H\x7f10"), "AE", "MSH^1^10^1"),  # found by `make fuzz`: JSON logs escape DEL not
    ("c1-in-msh10", hl7("H\x8511"), "AE", "MSH^1^10^1"),  # nor C1 controls, so the log must drop them itself
    ("version-9.9", with_field(hl7("H9"), "MSH", 12, "9.9"), "AR", "MSH^1^12^1"),
]


@pytest.mark.parametrize("message, code, location", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
async def test_hostile_field_is_refused_naming_it_and_the_connection_serves_on(
        tmp_path: Path, message: str, code: str, location: str) -> None:
    async with running_intake(tmp_path) as intake:
        reader, writer = await intake.connect()
        try:
            with capture_logs() as logged:
                raw = await exchange(reader, writer, message)
            after = ack_segments(await exchange(reader, writer, hl7("GOOD")))  # same connection
        finally:
            writer.close()
        stored = intake.rows("SELECT control_id FROM messages")
    ack = ack_segments(raw)
    assert ack["MSA"][0][1] == code
    assert location in [err[2] for err in ack["ERR"]]
    assert b"\x00" not in raw and b"\x1b" not in raw
    assert after["MSA"][0][1] == "AA" and stored == [("GOOD",)]
    text = repr(logged)
    assert not any(f"\\x{byte:02x}" in text for byte in [*range(0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0)])
    assert "NNNNNNNNNN" not in text


async def test_utf8_declared_as_latin1_is_refused_not_stored_as_mojibake(tmp_path: Path) -> None:
    message = with_field(hl7("M1", name="NGUYỄN^VĂN AN"), "MSH", 18, "8859/1")
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(message.encode("utf-8")), "latin-1")
    assert ack["MSA"][0][1] == "AE" and "PID^1^5^1" in [err[2] for err in ack["ERR"]]


@pytest.mark.parametrize("version", ["2.5", "2.9", ""])
async def test_a_later_or_unstated_v2_version_is_still_taken(tmp_path: Path, version: str) -> None:
    async with running_intake(tmp_path) as intake:
        ack = ack_segments(await intake.send(with_field(hl7("V1"), "MSH", 12, version)))
    assert ack["MSA"][0][1] == "AA"
