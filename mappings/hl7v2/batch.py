"""HL7 v2 batches (FHS/BHS ... BTS/FTS): split into messages, and the acknowledgement batch that answers them.

HL7 v2.5 chapter 2.10.3 lets a batch be acknowledged message by message inside a batch of ACKs whose BHS-12
(reference batch control id) names the batch; the gateway answers every message (not only the failed ones),
so that each sender can match each MSA-2 to its own MSH-10 whatever its acknowledgement agreement says.
Works on bytes: a batch is split before its messages are decoded, each in its own charset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

BATCH_STARTS = (b"FHS", b"BHS")
_LINES = re.compile(rb"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_ENVELOPE = "latin-1"  # the header fields are echoed byte for byte, whatever their charset


@dataclass(slots=True)
class Batch:
    """One BHS and its messages; `header` is "" for messages that came with no BHS. `problems`: content of
    the batch that is in no message (a segment before any MSH), or a BTS-1 count that does not match."""

    header: str = ""
    messages: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BatchFile:
    """An FHS file (or a lone BHS batch): `file_header` is "" when the frame started with BHS."""

    file_header: str = ""
    batches: list[Batch] = field(default_factory=list)


def is_batch(raw: bytes) -> bool:
    """Whether a frame holds a batch rather than one message."""
    return raw.lstrip()[:3] in BATCH_STARTS


def split_batch(raw: bytes) -> BatchFile:
    """The batches and messages of a batch frame; each message is its segments joined by CR. Lines that belong
    to no message, and a batch trailer that counts other than the messages found, are the batch's problems."""
    out = BatchFile()
    current: list[bytes] | None = None
    for line in _LINES.split(raw.strip()):
        name = line[:3]
        if name == b"FHS":
            out.file_header = line.decode(_ENVELOPE)
        elif name == b"BHS":
            out.batches.append(Batch(line.decode(_ENVELOPE)))
            current = None
        elif name == b"MSH":
            if not out.batches:
                out.batches.append(Batch())
            current = [line]
            out.batches[-1].messages.append(b"")
        elif name == b"BTS":
            current = None
            if out.batches:
                _check_count(out.batches[-1], line)
        elif name == b"FTS":
            current = None
        elif current is not None:
            if line:
                current.append(line)
        elif line.strip():
            if not out.batches:
                out.batches.append(Batch())
            out.batches[-1].problems.append(f"{_article(_segment_name(name))} outside any message"
                                            " (each message starts with an MSH segment)")
        if current is not None:
            out.batches[-1].messages[-1] = b"\r".join(current) + b"\r"
    return out


def _segment_name(name: bytes) -> str:
    """A segment name as a problem may quote it: three letters or digits, else a placeholder."""
    text = name.decode(_ENVELOPE)
    return text if _SEGMENT_NAME.fullmatch(text) else "unnamed"


def _article(name: str) -> str:
    return f"{'an' if name[0] in 'AEFHILMNORSX' else 'a'} {name} segment"


def _check_count(batch: Batch, trailer: bytes) -> None:
    """BTS-1, the sender's count of the batch's messages, when it gives one, must be what was found."""
    sep = trailer[3:4]
    count = trailer[4:].split(sep, 1)[0].split(b"^", 1)[0].strip() if sep else b""
    if count.isdigit() and int(count) != len(batch.messages):
        batch.problems.append(f"BTS-1 counts {int(count)} message(s), the batch holds {len(batch.messages)}")


def _answer_header(received: str, name: str, control_id: str, stamp: str) -> str:
    """FHS or BHS of the answer: sender and receiver swapped, our own control id, theirs as the reference."""
    sep = received[3:4] or "|"
    fields = received.split(sep)
    fields = fields + [""] * (12 - len(fields))  # fields[n] is BHS-(n+1), as BHS-1 is the separator itself
    return sep.join([name, fields[1] or "^~\\&", fields[4], fields[5], fields[2], fields[3], stamp, "", "", "",
                     control_id, fields[10]]).rstrip(sep)


def batch_ack(received: BatchFile, acks: list[list[bytes]], *, control_id: str, now: datetime) -> bytes:
    """The acknowledgement batch: FHS/BHS naming the received file and batches, one ACK per message, counts."""
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    lines: list[bytes] = []
    if received.file_header:
        lines.append(_answer_header(received.file_header, "FHS", control_id, stamp).encode(_ENVELOPE))
    for number, (batch, answers) in enumerate(zip(received.batches, acks, strict=True), start=1):
        sep = batch.header[3:4] or "|"
        if batch.header:
            lines.append(_answer_header(batch.header, "BHS", f"{control_id}.{number}", stamp).encode(_ENVELOPE))
        lines += [ack.rstrip(b"\r") for ack in answers]
        if batch.header:
            lines.append(f"BTS{sep}{len(answers)}".encode(_ENVELOPE))
    if received.file_header:
        sep = received.file_header[3:4] or "|"
        lines.append(f"FTS{sep}{len(received.batches)}".encode(_ENVELOPE))
    return b"\r".join(lines) + b"\r"
