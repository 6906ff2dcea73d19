"""The MSH header as the listener reads it, before and after choosing a charset, and the message's text.

Errors are values: a message without a usable MSH, or whose bytes do not fit the charset, gives an Issue
the intake answers with, never an exception.
"""
from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from dataclasses import dataclass

from mappings.hl7v2.er7 import header_segment
from mappings.model import Issue

# MSH-18 values (HL7 table 0211) to Python codecs.
CHARSETS = {
    "": "", "ASCII": "ascii", "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "UTF-8": "utf-8", "UNICODE UTF-16": "utf-16",
    "CP1258": "cp1258", "WINDOWS-1258": "cp1258",
}
DEFAULT_ENCODING = "^~\\&"
NO_HEADER = Issue("MSH", "msh-invalid", "no MSH segment at the start of the message")
_SEGMENT_END_BYTES = re.compile(rb"[\r\n]")
# Control characters are shown as "?" in the header the ACK echoes and the log names; the screen refuses them.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


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

    @property
    def application_id(self) -> str:
        """MSH-3.1, the sending system's name, which senders' allowlist and charset rules are keyed by."""
        return self.sending_application.split(self.encoding_characters[0])[0]

    @property
    def facility_ids(self) -> list[str]:
        """MSH-4.1 and MSH-4.2 (the facility's name and its id), either of which may name the sender."""
        return self.sending_facility.split(self.encoding_characters[0])[:2]

    @property
    def processing_mode(self) -> str:
        """MSH-11.1: P for production, T for training, D for debugging."""
        return self.processing_id.split(self.encoding_characters[0])[0].strip()


def codec_for(charset_field: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when unknown."""
    name = charset_field.split("^")[0].strip().upper()
    codec = CHARSETS.get(name)
    if codec is None:
        try:
            codec = codecs.lookup(name).name
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            return None
    return codec


def _msh_bytes(raw: bytes) -> bytes:
    raw = raw.lstrip()
    end = _SEGMENT_END_BYTES.search(raw)
    return raw[: end.start() if end else len(raw)]


def read_header(raw: bytes) -> MessageHeader | Issue:
    """The MSH of undecoded bytes (its fields are ASCII), to choose a charset or answer an unreadable message."""
    return parse_header(_msh_bytes(raw).decode("latin-1"))


def header_is_ascii(raw: bytes) -> bool:
    """Whether read_header already gave the MSH exactly as any ASCII-based charset decodes it."""
    return _msh_bytes(raw).isascii()


def decode(raw: bytes, codec: str) -> str | Issue:
    """Strictly decode, compose (NFC) and end every segment with \\r, so stored and screened text is canonical.

    Legacy Vietnamese code pages (cp1258) send combining tone marks, and the same name must compare
    equal whichever charset it arrived in; senders end segments with \\r, \\n or \\r\\n.
    """
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return Issue("MSH-18", "charset-mismatch",
                     f"message is not valid {codec} (MSH-18 or the sender's configured charset)")
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def parse_header(text: str) -> MessageHeader | Issue:
    """Read MSH from text, or the issue that there is no usable MSH."""
    msh = header_segment(text)
    if msh is None:
        return NO_HEADER
    f = tuple(_CONTROL.sub("?", value) for value in msh.fields[:19]) + ("",) * (19 - len(msh.fields))  # MSH-n
    encoding = f[2] or DEFAULT_ENCODING
    component = encoding[0]
    msh9 = [part.strip() for part in f[9].split(component)]  # a stray blank must not reach the ACK's MSH-9
    return MessageHeader(
        field_separator=f[1], encoding_characters=encoding,
        sending_application=f[3], sending_facility=f[4], receiving_application=f[5], receiving_facility=f[6],
        message_type="^".join(part for part in msh9[:2] if part), control_id=f[10], processing_id=f[11],
        version=f[12].split(component)[0].strip(), accept_ack_type=f[15].strip().upper(),
        application_ack_type=f[16].strip().upper(), charset=f[18],
    )


def content_digest(text: str) -> str:
    """What makes two messages the same: every byte but MSH-7, which some systems restamp on a resend."""
    first, terminator, rest = text.partition("\r")
    fields = first.split(first[3:4] or "|")
    if len(fields) > 6:
        fields[6] = ""
    return hashlib.sha256((first[3:4].join(fields) + terminator + rest).encode("utf-8")).hexdigest()
