"""ACKs: MSH and MSA answer the message, and each ERR segment names the failing field and its condition."""
from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mappings.hl7v2.ack import HL7_ERROR_CODES, build_ack
from mappings.hl7v2.er7 import escape
from mappings.hl7v2.header import MessageHeader, parse_header
from mappings.model import Issue
from tests.conftest import corpus_hl7

NOW = datetime(2026, 3, 12, 1, 30, 15, tzinfo=UTC)


def ack(header: MessageHeader | None, code: str, text: str = "", issues: tuple[Issue, ...] = ()) -> str:
    return build_ack(header, code, control_id="ACK1", now=NOW, text=text, issues=issues)


def test_ack_names_every_failing_field_and_escapes_text() -> None:
    header = parse_header(corpus_hl7("invalid_cccd_mismatch.hl7"))
    assert isinstance(header, MessageHeader)
    answer = ack(header, "AE", "identity", (
        Issue("PID-3", "cccd-birth-mismatch", "CCCD birth year does not agree with PID-7"),
        Issue("PID-7.1", "required", "birth date is required | really"),
    ))
    segments = answer.split("\r")
    assert segments[0] == ("MSH|^~\\&|HBGW|BYT|HIS_BVDK|BVDK_NGHEAN^4000000000123^L|20260312013015+0000||ACK^A04^ACK"
                           "|ACK1|P|2.5||||||UNICODE UTF-8")
    assert segments[1] == "MSA|AE|MSG000140|identity"
    assert segments[2].startswith("ERR||PID^1^3^1|102^Data type error^HL70357|E|cccd-birth-mismatch^")
    assert segments[3].startswith("ERR||PID^1^7^1^1|101^Required field missing^HL70357|E|")
    assert "\\F\\ really" in segments[3]


def test_escape_round_trip_characters() -> None:
    assert escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"


ROOT = Path(__file__).resolve().parents[2]


def issue_codes(*places: str) -> set[str]:
    """Every literal code passed as the second argument of Issue(...) in the given source folders or files."""
    codes: set[str] = set()
    for place in places:
        for path in [ROOT / place] if place.endswith(".py") else (ROOT / place).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Issue" and len(node.args) > 1 \
                        and isinstance(node.args[1], ast.Constant):
                    codes.add(str(node.args[1].value))
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
    assert ack(None, "AE", "", (Issue("PV1-45", code, "x"),)).split("\r")[2].split("|")[3] == f"{condition}^HL70357"


@pytest.mark.parametrize(("location", "err2"), [
    ("PID-3", "PID^1^3^1"), ("PID-3.1", "PID^1^3^1^1"), ("OBX[10]-5", "OBX^10^5^1"), ("OBX[1]-5", "OBX^1^5^1"),
    ("DG1[2]-3.1", "DG1^2^3^1^1"), ("OBX[2]", "OBX^2"), ("PID", "PID^1"), ("MSH-9", "MSH^1^9^1"),
    ("Bundle.entry[1]", ""), ("OBX[0]-5", "OBX^1"),
])
def test_err2_names_the_segment_occurrence(location: str, err2: str) -> None:
    assert ack(None, "AE", "", (Issue(location, "invalid-date", "x"),)).split("\r")[2].split("|")[2] == err2
