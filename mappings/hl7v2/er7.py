"""The one ER7 reader: segments, fields, repetitions, components and escapes, without hl7apy.

The screen and the mapping read whole messages with `read`; the MLLP intake and the ACK builder read only
the header with `header_segment`, which tolerates what `read` refuses so that such a message can still be
answered by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
FRAMING = "\x0b\x1c"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The encoding characters declared in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment; `fields[n]` is field n as raw ER7 text (for MSH, fields[1] is the field separator)."""

    name: str
    fields: tuple[str, ...]

    def field(self, number: int) -> str:
        return self.fields[number] if number < len(self.fields) else ""


@dataclass(frozen=True, slots=True)
class Er7Message:
    """A message split into segments, with its delimiters."""

    delimiters: Delimiters
    segments: tuple[Segment, ...]

    def first(self, name: str) -> Segment | None:
        return next((segment for segment in self.segments if segment.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [segment for segment in self.segments if segment.name == name]


def read(message: str) -> Er7Message | None:
    """Split a message on any of the \\r, \\n, \\r\\n terminators; None when it does not start with MSH."""
    text = message.strip(FRAMING + "\r\n \t")
    if not text.startswith("MSH") or len(text) < 8:
        return None
    sep = text[3]
    encoding = text[4:8].split(sep, 1)[0]
    if len(encoding) < 3:
        return None
    delimiters = Delimiters(sep, encoding[0], encoding[1], encoding[2], encoding[3] if len(encoding) > 3 else "&")
    segments = []
    for line in SEGMENT_SPLIT.split(text):
        if not line:
            continue
        parts = line.split(sep)
        if parts[0] == "MSH":
            parts.insert(1, sep)
        segments.append(Segment(parts[0], tuple(parts)))
    return Er7Message(delimiters, tuple(segments))


def header_segment(text: str) -> Segment | None:
    """MSH wherever it first occurs, however malformed, so that any message with a header can be answered.

    Fields are numbered as in `read` (MSH-1 is the separator); None when there is no MSH followed by at
    least four characters.
    """
    start = text.find("MSH")
    if start < 0 or len(text) < start + 8:
        return None
    sep = text[start + 3]
    parts = SEGMENT_SPLIT.split(text[start:], maxsplit=1)[0].split(sep)
    return Segment("MSH", (parts[0], sep, *parts[1:]))


def repetitions(raw: str, d: Delimiters) -> list[str]:
    """The repetitions of a raw field, still escaped."""
    return raw.split(d.repetition) if raw else []


def component(raw: str, number: int, d: Delimiters) -> str:
    """Component `number` (1-based) of the first repetition, unescaped and trimmed; first subcomponent only.

    For codes, identifiers and times, where surrounding blanks carry no meaning.
    """
    if not raw:
        return ""
    if d.repetition in raw:
        raw = raw.split(d.repetition, 1)[0]
    parts = raw.split(d.component, number)
    if number > len(parts):
        return ""
    value = parts[number - 1]
    if d.subcomponent in value:
        value = value.split(d.subcomponent, 1)[0]
    if d.escape in value:
        value = unescape(value, d)
    return value.strip()


def text(raw: str, number: int, d: Delimiters) -> str:
    """Component `number` of the first repetition of a text field, unescaped, a literal '&' kept."""
    parts = raw.split(d.repetition, 1)[0].split(d.component)
    return unescape(parts[number - 1], d) if number <= len(parts) else ""


def unescape(text: str, d: Delimiters) -> str:
    """Replace HL7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\) by the characters they stand for."""
    if d.escape not in text:
        return text
    esc = re.escape(d.escape)
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": d.escape,
              ".br": "\n", "H": "", "N": ""}

    def replace(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in simple:
            return simple[body]
        if body.startswith("X") and len(body) % 2 == 1:
            try:
                return bytes.fromhex(body[1:]).decode("utf-8")
            except ValueError:
                return match.group(0)
        return match.group(0)

    return re.sub(f"{esc}([^{esc}]*){esc}", replace, text)


def escape(value: str, encoding: str = "^~\\&") -> str:
    """HL7 escape sequences for text placed inside a field (MSH-2 `encoding`), on one line."""
    full = encoding + "^~\\&"
    component, repetition, escape_char, subcomponent = full[0], full[1], full[2], full[3]
    out = value.replace(escape_char, f"{escape_char}E{escape_char}")
    for char, code in (("|", "F"), (component, "S"), (repetition, "R"), (subcomponent, "T")):
        out = out.replace(char, f"{escape_char}{code}{escape_char}")
    return out.replace("\r", " ").replace("\n", " ")
