"""HL7 v2 wire helpers: charsets, MSH, and ACKs whose ERR segments name the failing field."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from adapters.hl7v2_wire import (
    HL7_ERROR_CODES,
    WireError,
    build_ack,
    codec_for,
    decode,
    escape,
    parse_header,
    read_header,
)
from mappings.model import Issue
from tests.conftest import corpus_hl7


def test_header_of_a_corpus_message() -> None:
    header = parse_header(corpus_hl7("oru_r01_lab.hl7"))
    assert header.message_type == "ORU^R01" and header.control_id == "LAB7788001"
    assert header.sender == "LIS_BVDK|BVDK_NGHEAN^4000000000123^L"
    assert header.enhanced_mode and header.accept_ack_type == "AL"
    assert codec_for(header.charset) == "utf-8"


@pytest.mark.parametrize("msh18, codec", [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1"), ("", None),
                                          ("CP1258", "cp1258"), ("NOT-A-CHARSET", None)])
def test_charset_names(msh18: str, codec: str | None) -> None:
    assert (codec_for(msh18) or None) == codec


def test_legacy_vietnamese_charset_decodes_to_composed_unicode() -> None:
    legacy = "MSH|^~\\&|OLDHIS|BV|||20260101||ADT^A01|1|P|2.3\rPID|1||X||Nguy\u00ea\u0303n^V\u0103n\r"
    decoded = decode(legacy.encode("cp1258"), "cp1258")  # cp1258 carries the tone as a combining mark
    assert "Nguyễn^Văn" in decoded


def test_bytes_that_do_not_match_the_codec_are_refused() -> None:
    with pytest.raises(WireError, match="utf-8"):
        decode(b"MSH|^~\\&|A|B|||2026||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|\xff\xfe\r", "utf-8")


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_every_segment_terminator_becomes_carriage_return(terminator: str) -> None:
    segments = ["MSH|^~\\&|A|B|||2026||ADT^A01|1|P|2.5", "PID|1||X", "PV1|1|I"]
    assert decode(terminator.join(segments).encode() + terminator.encode(), "utf-8") == "\r".join(segments) + "\r"


def test_header_is_read_from_undecoded_bytes_of_any_charset() -> None:
    raw = "\nMSH|^~\\&|OLDHIS|BV|||2026||ADT^A01|C9|P|2.3\nPID|1||X||Nguy\u00ea\u0303n\n".encode("cp1258")
    header = read_header(raw)
    assert (header.sending_application, header.control_id, header.charset) == ("OLDHIS", "C9", "")


def test_text_without_msh_has_no_header() -> None:
    with pytest.raises(WireError):
        parse_header("PID|1||X")


def test_ack_names_every_failing_field_and_escapes_text() -> None:
    header = parse_header(corpus_hl7("invalid_cccd_mismatch.hl7"))
    ack = build_ack(header, "AE", "identity", (
        Issue("PID-3", "cccd-birth-mismatch", "CCCD birth year does not agree with PID-7"),
        Issue("PID-7.1", "required", "birth date is required | really"),
    ))
    segments = ack.split("\r")
    assert segments[0].startswith("MSH|^~\\&|HBGW|BYT|HIS_BVDK|BVDK_NGHEAN^4000000000123^L|")
    assert "|ACK^A04^ACK|" in segments[0]
    assert segments[1] == "MSA|AE|MSG000140|identity"
    assert segments[2].startswith("ERR||PID^1^3^1|102^Data type error^HL70357|E|cccd-birth-mismatch^")
    assert segments[3].startswith("ERR||PID^1^7^1^1|101^Required field missing^HL70357|E|")
    assert "\\F\\ really" in segments[3]


def test_escape_round_trip_characters() -> None:
    assert escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"


ROOT = Path(__file__).resolve().parents[2]


def issue_codes(*places: str) -> set[str]:
    """Every literal code passed as the second argument of Issue(...) in the given source folders or files."""
    codes = set()
    for place in places:
        for path in [ROOT / place] if place.endswith(".py") else (ROOT / place).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Issue" and len(node.args) > 1 \
                        and isinstance(node.args[1], ast.Constant):
                    codes.add(node.args[1].value)
    return codes


def test_every_issue_code_of_the_mappings_and_the_mllp_intake_has_its_own_error_condition() -> None:
    """207 means a fault of ours, and some engines retry it: no validation failure may be reported so."""
    codes = issue_codes("mappings", "gateway/intake.py")
    assert {"required", "invalid-date", "implausible-value", "cccd-birth-mismatch"} <= codes
    assert not {code for code in codes if HL7_ERROR_CODES.get(code, ("207",))[0] == "207"}


@pytest.mark.parametrize(("code", "condition"), [
    ("required", "101^Required field missing"), ("invalid-date", "102^Data type error"),
    ("invalid-number", "102^Data type error"), ("implausible-value", "102^Data type error"),
    ("discharge-before-admission", "102^Data type error"), ("cccd-birth-mismatch", "102^Data type error"),
    ("invalid-code", "103^Table value not found"), ("cccd-province", "103^Table value not found"),
    ("segment-split", "100^Segment sequence error"), ("unsupported-message-type", "200^Unsupported message type"),
    ("unsupported-version", "203^Unsupported version id"), ("something-unforeseen", "207^Application internal error"),
])
def test_err3_condition_of_each_issue_code(code: str, condition: str) -> None:
    ack = build_ack(None, "AE", "", (Issue("PV1-45", code, "x"),))
    assert ack.split("\r")[2].split("|")[3] == f"{condition}^HL70357"


@pytest.mark.parametrize(("location", "err2"), [
    ("PID-3", "PID^1^3^1"), ("PID-3.1", "PID^1^3^1^1"), ("OBX[10]-5", "OBX^10^5^1"), ("OBX[1]-5", "OBX^1^5^1"),
    ("DG1[2]-3.1", "DG1^2^3^1^1"), ("OBX[2]", "OBX^2"), ("PID", "PID^1"), ("MSH-9", "MSH^1^9^1"),
    ("Bundle.entry[1]", ""), ("OBX[0]-5", "OBX^1"),
])
def test_err2_names_the_segment_occurrence(location: str, err2: str) -> None:
    ack = build_ack(None, "AE", "", (Issue(location, "invalid-date", "x"),))
    assert ack.split("\r")[2].split("|")[2] == err2
