"""HL7 v2 on the wire: character sets, the MSH header, and acknowledgements with MSA and ERR segments."""
from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from mappings.model import Issue

# MSH-18 values (HL7 table 0211) to Python codecs.
CHARSETS = {
    "": "", "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "UTF-8": "utf-8", "UNICODE UTF-16": "utf-16",
    "CP1258": "cp1258", "WINDOWS-1258": "cp1258",
}
# HL7 table 0357 message error conditions, and the one each Issue code is reported as (ERR-3). 207 (internal
# error) is only for codes not listed here: some interface engines retry on 207 as on a server fault.
SEGMENT_SEQUENCE = ("100", "Segment sequence error")
REQUIRED = ("101", "Required field missing")
DATA_TYPE = ("102", "Data type error")
TABLE_VALUE = ("103", "Table value not found")
UNSUPPORTED_TYPE = ("200", "Unsupported message type")
INTERNAL_ERROR = ("207", "Application internal error")
HL7_ERROR_CODES: dict[str, tuple[str, str]] = {
    "required": REQUIRED, "no-episode": REQUIRED,
    # a value of the wrong form or one that cannot be true: dates, numbers, identifiers, their agreement
    "invalid": DATA_TYPE, "invalid-date": DATA_TYPE, "invalid-number": DATA_TYPE, "implausible-value": DATA_TYPE,
    "discharge-before-admission": DATA_TYPE, "cccd-format": DATA_TYPE, "cccd-birth-mismatch": DATA_TYPE,
    "bhyt-format": DATA_TYPE, "icd10-format": DATA_TYPE, "conflicting-identifiers": DATA_TYPE,
    "facility-code-format": DATA_TYPE, "facility-code-swapped": DATA_TYPE, "facility-id-format": DATA_TYPE,
    "tax-code-format": DATA_TYPE, "tax-code-suffix": DATA_TYPE, "charset-mismatch": DATA_TYPE,
    "message-too-large": DATA_TYPE,
    # the XML 130 checks before signing (never in an ACK: they judge a document, not a message)
    "too-long": DATA_TYPE, "sum-mismatch": DATA_TYPE, "unknown-element": SEGMENT_SEQUENCE, "unlinked-result": REQUIRED,
    # a code that names nothing in its table
    "invalid-code": TABLE_VALUE, "cccd-province": TABLE_VALUE, "sender-not-allowed": TABLE_VALUE,
    # the segments themselves
    "segment-split": SEGMENT_SEQUENCE, "multiple-patients": SEGMENT_SEQUENCE, "hl7apy-parse": SEGMENT_SEQUENCE,
    "msh-invalid": SEGMENT_SEQUENCE,
    "unsupported-message-type": UNSUPPORTED_TYPE, "unsupported-resource": UNSUPPORTED_TYPE,
    "unsupported-bundle": UNSUPPORTED_TYPE,
    "unsupported-event": ("201", "Unsupported event code"),
    "unsupported-processing-id": ("202", "Unsupported processing id"),
    "unsupported-version": ("203", "Unsupported version id"),
    "duplicate-control-id": ("205", "Duplicate key identifier"),
}
# ACK control ids: unique per process start (random prefix) and per ACK (sequence), and cheap.
_ACK_ID_PREFIX = uuid.uuid4().hex[:8]
_ACK_SEQUENCE = itertools.count(1)
_SEGMENT_END = re.compile(r"\r\n|\r|\n")
_SEGMENT_END_BYTES = re.compile(rb"[\r\n]")
_LOCATION = re.compile(
    r"^(?P<segment>[A-Z][A-Z0-9]{2})(?:\[(?P<occurrence>[1-9]\d*)\])?(?:-(?P<field>\d+)(?:\.(?P<component>\d+))?)?")


class WireError(Exception):
    """The bytes are not an HL7 v2 message we can even acknowledge properly."""


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """The MSH fields the listener needs to acknowledge, deduplicate and route; no patient data."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # "ADT^A01"
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str

    @property
    def sender(self) -> str:
        """MSH-3|MSH-4: with MSH-10, what makes a message a retransmission of another."""
        return f"{self.sending_application}|{self.sending_facility}"

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15/16 valued means enhanced acknowledgement: commit-level CA/CE/CR."""
        return bool(self.accept_ack_type or self.application_ack_type)


def codec_for(charset_field: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when unknown."""
    name = charset_field.split("^")[0].strip().upper()
    codec = CHARSETS.get(name)
    if codec is None:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            return None
    return codec


def _msh_fields(text: str) -> list[str]:
    start = text.find("MSH")
    if start < 0 or len(text) < start + 8:
        raise WireError("no MSH segment at the start of the message")
    separator = text[start + 3]
    segment = _SEGMENT_END.split(text[start:], maxsplit=1)[0]
    return segment.split(separator)


def _msh_bytes(raw: bytes) -> bytes:
    raw = raw.lstrip()
    end = _SEGMENT_END_BYTES.search(raw)
    return raw[: end.start() if end else len(raw)]


def read_header(raw: bytes) -> MessageHeader:
    """The MSH of undecoded bytes (its fields are ASCII), to choose a charset or answer an unreadable message."""
    return parse_header(_msh_bytes(raw).decode("latin-1"))


def header_is_ascii(raw: bytes) -> bool:
    """Whether read_header already gave the MSH exactly as any ASCII-based charset decodes it."""
    return _msh_bytes(raw).isascii()


def decode(raw: bytes, codec: str) -> str:
    """Strictly decode, compose (NFC) and end every segment with \\r, so stored and screened text is canonical.

    Legacy Vietnamese code pages (cp1258) send combining tone marks, and the same name must compare
    equal whichever charset it arrived in; senders end segments with \\r, \\n or \\r\\n.
    """
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        raise WireError(f"message is not valid {codec} (MSH-18 or the sender's configured charset)") from None
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def parse_header(text: str) -> MessageHeader:
    """Read MSH; raises WireError when there is no usable MSH."""
    fields = _msh_fields(text)
    fields += [""] * (21 - len(fields))
    encoding = fields[1] or "^~\\&"
    component = encoding[0]
    msh9 = fields[8].split(component)
    message_type = "^".join(part for part in msh9[:2] if part)
    return MessageHeader(
        field_separator=text[text.find("MSH") + 3],
        encoding_characters=encoding,
        sending_application=fields[2], sending_facility=fields[3],
        receiving_application=fields[4], receiving_facility=fields[5],
        message_type=message_type, control_id=fields[9], processing_id=fields[10],
        version=fields[11].split(component)[0], accept_ack_type=fields[14], application_ack_type=fields[15],
        charset=fields[17],
    )


def escape(text: str, encoding: str = "^~\\&") -> str:
    """HL7 escape sequences for text placed inside a field."""
    component, repetition, escape_char, subcomponent = (encoding + "^~\\&")[:4]
    out = text.replace(escape_char, f"{escape_char}E{escape_char}")
    for char, code in (("|", "F"), (component, "S"), (repetition, "R"), (subcomponent, "T")):
        out = out.replace(char, f"{escape_char}{code}{escape_char}")
    return out.replace("\r", " ").replace("\n", " ")


def _error_location(location: str) -> str:
    """ERR-2 (segment^sequence^field^repetition^component) from `PID-3`, `OBX[10]-5` or `PID-3.1`."""
    match = _LOCATION.match(location)
    if not match:
        return ""
    parts = [match["segment"], match["occurrence"] or "1"]
    if match["field"]:
        parts += [match["field"], "1"]
        if match["component"]:
            parts.append(match["component"])
    return "^".join(parts)


def build_ack(header: MessageHeader | None, code: str, text: str = "", issues: tuple[Issue, ...] = (),
              control_id: str = "", now: datetime | None = None) -> str:
    """An ACK whose MSA echoes the message's control id and whose ERR segments name each failing field."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    enc = header.encoding_characters if header else "^~\\&"
    sep = header.field_separator if header else "|"
    event = header.message_type.split("^")[1] if header and "^" in header.message_type else ""
    msh = [
        "MSH", enc,
        header.receiving_application if header else "HBGW", header.receiving_facility if header else "",
        header.sending_application if header else "", header.sending_facility if header else "",
        stamp, "", f"ACK^{event}^ACK" if event else "ACK", control_id or f"{_ACK_ID_PREFIX}{next(_ACK_SEQUENCE)}",
        header.processing_id if header else "P", header.version if header and header.version else "2.5",
        "", "", "", "", "", header.charset if header else "",
    ]
    segments = [sep.join(msh).rstrip(sep),
                sep.join(["MSA", code, header.control_id if header else "", escape(text, enc)]).rstrip(sep)]
    for issue in issues:
        hl7_code, hl7_text = HL7_ERROR_CODES.get(issue.code, INTERNAL_ERROR)
        severity = "W" if issue.severity == "warning" else "E"
        segments.append(sep.join([
            "ERR", "", _error_location(issue.location), f"{hl7_code}^{hl7_text}^HL70357", severity,
            f"{escape(issue.code, enc)}^{escape(issue.message, enc)}^HBGW", "", "", escape(
                f"{issue.location}: {issue.message}", enc),
        ]))
    return "\r".join(segments) + "\r"
