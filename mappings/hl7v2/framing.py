"""MLLP framing without sockets: bytes in, messages out (VT message FS CR), and the frame around an answer.

A block is what comes before an end block (FS CR); the message is what follows its last start byte (VT),
so noise between frames is dropped. A block longer than the limit is discarded as it arrives, keeping only
its first bytes, enough to read its MSH and answer it by name.
"""
from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
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

    def feed(self, data: bytes) -> list[Decoded]:
        """The messages whose frames the new bytes complete, in order."""
        buffer = self._buffer
        buffer += data
        out: list[Decoded] = []
        while True:
            end = buffer.find(END_BLOCK, self._searched)
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
            del buffer[: end + len(END_BLOCK)]
            self._searched = self._dropped = 0

    def _overflow(self) -> None:
        """With no end block yet: remember how far was searched, and discard a block grown past the limit."""
        buffer = self._buffer
        searched = max(len(buffer) - (len(END_BLOCK) - 1), 0)  # an end block may straddle two chunks
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
