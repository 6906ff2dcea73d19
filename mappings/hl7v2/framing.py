"""MLLP framing without sockets: bytes in, messages out (VT message FS CR), and the frame around an answer.

A block is what comes before an end byte (FS); the message is what follows its last start byte (VT), so
noise between frames is dropped. The CR that should follow FS is not waited for: some senders end a frame
with FS alone and then wait for the answer, and FS never occurs in HL7 content (a control character ER7
cannot carry), so FS alone is an unambiguous end; a CR after it is dropped as noise before the next frame.
A block longer than the limit is discarded as it arrives, keeping only its first bytes, enough to read its
MSH and answer it by name.
"""
from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
END_BYTE = b"\x1c"
HEAD_KEPT = 4096  # of an oversize message, enough to read its MSH and answer it


@dataclass(frozen=True, slots=True)
class Decoded:
    """One framed message; an `oversize` one carries only its first bytes."""

    data: bytes
    oversize: bool = False


def wrap(message: bytes) -> bytes:
    """The frame to write for one message (an ACK)."""
    return START_BLOCK + message + END_BLOCK


def unwrap(block: bytes) -> bytes:
    """The message inside a block: what follows the last start byte (noise before it is dropped)."""
    start = block.rfind(START_BLOCK)
    return block[start + 1:] if start >= 0 else block


class FrameDecoder:
    """Feed it the bytes of one connection as they arrive; it returns each message once its frame ends.

    A block may be up to `max_message_bytes` plus the start byte and two more long; memory stays bounded
    by that limit plus one chunk, whatever a sender writes.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_message_bytes + len(END_BLOCK) + 1
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer known to hold no end block
        self._head: bytes | None = None  # while an oversize block is being discarded: its first bytes
        self._dropped = 0  # bytes of that block already discarded
        self._trailer = False  # a block just ended: a CR first in the buffer is its trailer

    def feed(self, data: bytes) -> list[Decoded]:
        """The messages whose frames the new bytes complete, in order."""
        buffer = self._buffer
        buffer += data
        out: list[Decoded] = []
        self._drop_trailer()
        while True:
            end = buffer.find(END_BYTE, self._searched)
            if end < 0:
                self._overflow()
                return out
            if self._head is not None:
                out.append(Decoded(unwrap(self._head), oversize=True))
                self._head = None
            elif end > self._limit:
                out.append(Decoded(unwrap(bytes(buffer[:min(end, HEAD_KEPT)])), oversize=True))
            else:
                out.append(Decoded(unwrap(bytes(buffer[:end]))))
            del buffer[: end + len(END_BYTE)]
            self._searched = self._dropped = 0
            self._trailer = True
            self._drop_trailer()

    def _drop_trailer(self) -> None:
        """The CR of FS CR, which may arrive in the next chunk, or never."""
        if self._trailer and self._buffer:
            if self._buffer[:1] == END_BLOCK[1:]:
                del self._buffer[:1]
            self._trailer = False

    def _overflow(self) -> None:
        """With no end block yet: remember how far was searched, and discard a block grown past the limit."""
        buffer = self._buffer
        searched = len(buffer)
        if self._head is None and searched > self._limit:
            self._head = bytes(buffer[:min(searched, HEAD_KEPT)])
        if self._head is not None:
            del buffer[:searched]
            self._dropped += searched
            searched = 0
        self._searched = searched

    def cut_off(self) -> int:
        """At the end of the connection: the bytes of an unfinished frame (0 when only blanks followed the last)."""
        if self._head is None and not self._buffer.strip():
            return 0
        return self._dropped + len(self._buffer)
