"""MLLP framing without sockets: any split of the bytes gives the same messages, and limits hold."""
from __future__ import annotations

import pytest

from mappings.hl7v2.framing import (
    END_BLOCK,
    HEAD_KEPT,
    START_BLOCK,
    Decoded,
    FrameDecoder,
    unwrap,
    wrap,
)

VT, FS_CR, FS = START_BLOCK, END_BLOCK, END_BLOCK[:1]


def decode_in_chunks(data: bytes, size: int, max_message_bytes: int = 1000) -> tuple[list[Decoded], int]:
    decoder = FrameDecoder(max_message_bytes)
    out = [message for start in range(0, len(data), size) for message in decoder.feed(data[start:start + size])]
    return out, decoder.cut_off()


@pytest.mark.parametrize(("wire", "messages"), [
    (VT + b"MSH|a" + FS_CR, [b"MSH|a"]),
    (VT + b"MSH|a" + FS_CR + VT + b"MSH|b" + FS_CR, [b"MSH|a", b"MSH|b"]),
    (b"\r\n" + VT + b"MSH|a" + FS_CR, [b"MSH|a"]),  # noise before the start byte is dropped
    (VT + b"junk" + VT + b"MSH|a" + FS_CR, [b"MSH|a"]),  # a frame restarted: the last start byte counts
    (b"MSH|a" + FS_CR, [b"MSH|a"]),  # no start byte: the whole block
    (VT + b"MSH|a\rb" + FS_CR, [b"MSH|a\rb"]),  # CR alone ends nothing
    (VT + b"MSH|a" + FS, [b"MSH|a"]),  # FS alone ends the frame: some senders send no CR, then wait
    (VT + b"MSH|a" + FS + VT + b"MSH|b" + FS_CR, [b"MSH|a", b"MSH|b"]),  # ... and the next frame is whole
    (VT + b"MSH|a" + FS + b"MSH|b" + FS, [b"MSH|a", b"MSH|b"]),
    (VT + b"MSH|a" + FS_CR + b"\n", [b"MSH|a"]),  # a blank after the frame is not a message
    (VT + FS_CR, [b""]),
])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
def test_messages_do_not_depend_on_how_the_bytes_arrive(wire: bytes, messages: list[bytes], size: int) -> None:
    decoded, cut_off = decode_in_chunks(wire, size)
    assert decoded == [Decoded(message) for message in messages] and cut_off == 0


@pytest.mark.parametrize("size", [1, 5, 10_000])
@pytest.mark.parametrize(("length", "oversize"), [(12, False), (13, True)])
def test_a_block_may_hold_the_limit_plus_two_bytes(size: int, length: int, oversize: bool) -> None:
    """The limit as the listener always applied it: up to max_message_bytes + 3 bytes before FS CR."""
    message = b"MSH|" + b"x" * (length - 4)
    decoded, _ = decode_in_chunks(VT + message + FS_CR + VT + b"MSH|next" + FS_CR, size, max_message_bytes=10)
    assert [d.oversize for d in decoded] == [oversize, False] and decoded[1].data == b"MSH|next"
    if not oversize:
        assert decoded[0].data == message


@pytest.mark.parametrize("size", [1, 100, 1_000_000])
def test_an_oversize_message_keeps_its_head_and_the_next_one_is_whole(size: int) -> None:
    big = b"MSH|^~\\&|HIS|BV|||2026||ADT^A01|BIG|P|2.5\r" + b"x" * 50_000
    decoded, cut_off = decode_in_chunks(VT + big + FS_CR + VT + b"MSH|small" + FS_CR, size)
    assert [d.oversize for d in decoded] == [True, False] and decoded[1].data == b"MSH|small"
    assert big.startswith(decoded[0].data) and decoded[0].data.startswith(b"MSH|^~\\&|HIS|BV|||2026||ADT^A01|BIG|")
    assert len(decoded[0].data) < HEAD_KEPT and cut_off == 0


def test_an_oversize_block_is_discarded_as_it_arrives() -> None:
    decoder = FrameDecoder(100)
    for _ in range(1000):
        assert decoder.feed(b"x" * 1000) == []
    assert decoder.cut_off() == 1_000_000
    [head] = decoder.feed(FS_CR)
    assert head.oversize and 100 < len(head.data) <= HEAD_KEPT and not head.data.strip(b"x")
    assert decoder.cut_off() == 0


@pytest.mark.parametrize(("wire", "cut_off"), [
    (b"", 0), (b"\r\n ", 0), (VT + b"MSH|a" + FS_CR + b"\n", 0),
    (VT + b"MSH|a", 6), (VT + b"MSH|a" + FS_CR + VT + b"MSH", 4), (VT + b"MSH|a\x1c", 0),  # FS alone ended it
])
def test_bytes_left_at_the_end_of_the_connection(wire: bytes, cut_off: int) -> None:
    assert decode_in_chunks(wire, 1)[1] == cut_off


def test_wrap_and_unwrap() -> None:
    assert wrap(b"MSA|AA") == VT + b"MSA|AA" + FS_CR
    assert unwrap(b"\r\n" + VT + b"MSH") == b"MSH" and unwrap(b"MSH") == b"MSH"
