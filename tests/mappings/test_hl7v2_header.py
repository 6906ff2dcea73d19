"""The MSH header as the listener reads it, charsets, the canonical text, and what makes two messages the same."""
from __future__ import annotations

import pytest

from mappings.hl7v2.header import (
    NO_HEADER,
    MessageHeader,
    codec_for,
    content_digest,
    decode,
    header_is_ascii,
    parse_header,
    read_header,
)
from mappings.model import Issue
from tests.conftest import corpus_hl7


def header_of(text: str) -> MessageHeader:
    header = parse_header(text)
    assert isinstance(header, MessageHeader), header
    return header


def test_header_of_a_corpus_message() -> None:
    header = header_of(corpus_hl7("oru_r01_lab.hl7"))
    assert header.message_type == "ORU^R01" and header.control_id == "LAB7788001"
    assert header.sender == "LIS_BVDK|BVDK_NGHEAN^4000000000123^L"
    assert header.enhanced_mode and header.accept_ack_type == "AL"
    assert codec_for(header.charset) == "utf-8"
    assert (header.application_id, header.facility_ids) == ("LIS_BVDK", ["BVDK_NGHEAN", "4000000000123"])


@pytest.mark.parametrize("msh18, codec", [("UNICODE UTF-8", "utf-8"), ("8859/1", "latin-1"), ("", None),
                                          ("CP1258", "cp1258"), ("NOT-A-CHARSET", None)])
def test_charset_names(msh18: str, codec: str | None) -> None:
    assert (codec_for(msh18) or None) == codec


def test_legacy_vietnamese_charset_decodes_to_composed_unicode() -> None:
    legacy = "MSH|^~\\&|OLDHIS|BV|||20260101||ADT^A01|1|P|2.3\rPID|1||X||Nguy\u00ea\u0303n^V\u0103n\r"
    decoded = decode(legacy.encode("cp1258"), "cp1258")  # cp1258 carries the tone as a combining mark
    assert isinstance(decoded, str) and "Nguyễn^Văn" in decoded


def test_bytes_that_do_not_match_the_codec_are_an_issue_on_msh18() -> None:
    issue = decode(b"MSH|^~\\&|A|B|||2026||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|\xff\xfe\r", "utf-8")
    assert isinstance(issue, Issue)
    assert (issue.location, issue.code) == ("MSH-18", "charset-mismatch") and "utf-8" in issue.message


@pytest.mark.parametrize("terminator", ["\r", "\n", "\r\n"])
def test_every_segment_terminator_becomes_carriage_return(terminator: str) -> None:
    segments = ["MSH|^~\\&|A|B|||2026||ADT^A01|1|P|2.5", "PID|1||X", "PV1|1|I"]
    assert decode(terminator.join(segments).encode() + terminator.encode(), "utf-8") == "\r".join(segments) + "\r"


def test_header_is_read_from_undecoded_bytes_of_any_charset() -> None:
    raw = "\nMSH|^~\\&|OLDHIS|BV|||2026||ADT^A01|C9|P|2.3\nPID|1||X||Nguy\u00ea\u0303n\n".encode("cp1258")
    header = read_header(raw)
    assert isinstance(header, MessageHeader) and header_is_ascii(raw)
    assert (header.sending_application, header.control_id, header.charset) == ("OLDHIS", "C9", "")
    assert not header_is_ascii("MSH|^~\\&|BỆNH VIỆN|BV|||2026||ADT^A01|C9|P|2.3\r".encode())


@pytest.mark.parametrize("text", ["PID|1||X", "MSH|^~", ""])
def test_text_without_a_usable_msh_is_the_msh_invalid_issue(text: str) -> None:
    assert parse_header(text) == NO_HEADER
    assert read_header(text.encode()) == NO_HEADER


@pytest.mark.parametrize(("text", "expected"), [
    # MSH-12 and MSH-11 keep only their first component where the ACK or the refusal needs it
    ("MSH|^~\\&|HIS^X|BV^123^L|GW|BYT|2026||ADT^A01^ADT_A01|C1|P^T|2.5^VNM||||||UNICODE UTF-8",
     ("|", "^~\\&", "HIS^X", "ADT^A01", "C1", "P^T", "P", "2.5", "UNICODE UTF-8", "HIS", ["BV", "123"])),
    # other delimiters, noise before MSH, a header ending at MSH-10, an empty MSH-2
    ("xxMSH#$~\\&#APP#FAC#####ORU$R01#C2", ("#", "$~\\&", "APP", "ORU^R01", "C2", "", "", "", "", "APP", ["FAC"])),
    ("MSH||A|B|||||ADT^A08|C3\rPID|1", ("|", "^~\\&", "A", "ADT^A08", "C3", "", "", "", "", "A", ["B"])),
])
def test_header_fields(text: str, expected: tuple[object, ...]) -> None:
    h = header_of(text)
    assert (h.field_separator, h.encoding_characters, h.sending_application, h.message_type, h.control_id,
            h.processing_id, h.processing_mode, h.version, h.charset, h.application_id, h.facility_ids) == expected


def test_content_digest_ignores_only_msh7() -> None:
    message = "MSH|^~\\&|A|B|C|D|20260312083015||ADT^A01|C1|P|2.5\rPID|1||X\r"
    assert content_digest(message) == content_digest(message.replace("20260312083015", "20260312090000"))
    assert content_digest(message) != content_digest(message.replace("|C1|", "|C2|"))
    assert content_digest(message) != content_digest(message.replace("PID|1||X", "PID|1||Y"))
