"""The MLLP listener over real sockets: framing across partial reads, limits, and it keeps serving."""
from __future__ import annotations

import asyncio

import pytest

from adapters.mllp import Frame, MllpServer
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK


async def echo_handler(frame: Frame) -> bytes:
    tag = b"BIG" if frame.oversize else b"OK"
    return tag + b":" + frame.data[:20]


async def start(**overrides) -> tuple[MllpServer, list[str]]:
    refused: list[str] = []
    options = {"host": "127.0.0.1", "port": 0, "max_message_bytes": 1000, "idle_timeout": 5, "max_connections": 4,
               "on_refused": refused.append}
    options.update(overrides)
    server = MllpServer(echo_handler, **options)
    await server.start()
    return server, refused


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    data = await asyncio.wait_for(reader.readuntil(END_BLOCK), 5)
    assert data.startswith(START_BLOCK)
    return data[1:-2]


async def test_frames_split_across_many_reads_and_many_per_connection() -> None:
    server, _ = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    wire = b"".join(START_BLOCK + f"MSH|^~\\&|m{i}".encode() + END_BLOCK for i in range(3))
    for byte in wire:  # one byte at a time: the worst partial reads
        writer.write(bytes([byte]))
        await writer.drain()
    answers = [await read_frame(reader) for _ in range(3)]
    writer.close()
    await server.stop()
    assert answers == [b"OK:MSH|^~\\&|m0", b"OK:MSH|^~\\&|m1", b"OK:MSH|^~\\&|m2"]


async def test_noise_before_the_start_block_is_dropped() -> None:
    server, _ = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"\r\n" + START_BLOCK + b"MSH|x" + END_BLOCK)
    answer = await read_frame(reader)
    writer.close()
    await server.stop()
    assert answer == b"OK:MSH|x"


async def test_oversize_message_is_answered_and_the_connection_keeps_serving() -> None:
    server, refused = await start(max_message_bytes=100)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(START_BLOCK + b"MSH|big|" + b"x" * 5000 + END_BLOCK + START_BLOCK + b"MSH|small" + END_BLOCK)
    big = await read_frame(reader)
    small = await read_frame(reader)
    writer.close()
    await server.stop()
    assert big.startswith(b"BIG:MSH|big|") and small == b"OK:MSH|small"
    assert refused == ["message_too_large"]


async def test_idle_connection_is_closed_and_others_keep_working() -> None:
    server, refused = await start(idle_timeout=0.2)
    idle_reader, _idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed by the server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(START_BLOCK + b"MSH|after" + END_BLOCK)
    assert await read_frame(reader) == b"OK:MSH|after"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # silent after its frame: closed again
    writer.close()
    await server.stop()
    assert refused == ["frame_timeout", "idle_timeout"]  # no first frame; then silence between frames


async def test_connections_beyond_the_cap_are_refused_and_the_rest_served() -> None:
    server, refused = await start(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    for reader, writer in held:  # make sure both are registered before the third arrives
        writer.write(START_BLOCK + b"MSH|held" + END_BLOCK)
        await read_frame(reader)
    extra_reader, _ = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(extra_reader.read(), 5) == b""
    reader, writer = held[0]
    writer.write(START_BLOCK + b"MSH|still" + END_BLOCK)
    assert await read_frame(reader) == b"OK:MSH|still"
    for _, w in held:
        w.close()
    await server.stop()
    assert refused == ["max_connections"]


@pytest.mark.parametrize("count", [1, 16])
async def test_many_concurrent_connections(count: int) -> None:
    server, _ = await start(max_connections=32)

    async def client(n: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(START_BLOCK + f"MSH|c{n}".encode() + END_BLOCK)
        answer = await read_frame(reader)
        writer.close()
        return answer

    answers = await asyncio.gather(*(client(n) for n in range(count)))
    await server.stop()
    assert sorted(answers) == sorted(f"OK:MSH|c{n}".encode() for n in range(count))
