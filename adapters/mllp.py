"""The MLLP listener: frames bytes (VT ... FS CR), calls `handle(frame)`, and writes back what it returns."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from adapters.tls import peer_common_name

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
HEAD_KEPT = 4096  # of an oversize message, enough to read its MSH and answer it

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One message as read from a connection; `oversize` frames carry only their first bytes."""

    data: bytes
    peer_host: str
    peer_port: int
    client_cn: str = ""
    oversize: bool = False


Handler = Callable[[Frame], Awaitable[bytes]]


class MllpServer:
    """Many concurrent connections, many messages per connection, answered in order on each."""

    def __init__(self, handler: Handler, *, host: str, port: int, max_message_bytes: int,
                 idle_timeout: float, max_connections: int, ssl_context: ssl.SSLContext | None = None,
                 on_connections: Callable[[int], None] | None = None,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self._handler = handler
        self._host, self._port = host, port
        self._max_bytes = max_message_bytes
        self._idle = idle_timeout
        self._max_connections = max_connections
        self._ssl = ssl_context
        self._on_connections = on_connections or (lambda count: None)
        self._on_refused = on_refused or (lambda reason: None)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port, which differs from the configured one when that was 0 (tests, benchmarks)."""
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Listen; the stream limit makes an oversize message a LimitOverrunError instead of unbounded memory."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, ssl=self._ssl, limit=self._max_bytes + len(END_BLOCK) + 1)

    async def stop(self) -> None:
        """Stop accepting, let messages in progress finish their ACK, then close."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        host, port = writer.get_extra_info("peername")[:2]
        if len(self._connections) >= self._max_connections:
            log.warning("mllp_connection_refused", reason="max_connections", limit=self._max_connections)
            self._on_refused("max_connections")
            writer.close()
            return
        self._connections.add(task)
        self._on_connections(len(self._connections))
        frame_base = Frame(b"", host, port, peer_common_name(writer.get_extra_info("peercert")))
        try:
            while True:
                frame = await self._read_frame(reader, frame_base)
                if frame is None:
                    break
                answer = await self._handler(frame)
                writer.write(START_BLOCK + answer + END_BLOCK)
                await writer.drain()
        except TimeoutError:
            log.info("mllp_idle_timeout", idle_seconds=self._idle)
            self._on_refused("idle_timeout")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:  # the handler could not answer (e.g. the disk refused): no ACK, the sender resends
            log.exception("mllp_handler_failed")
            self._on_refused("handler_error")
        finally:
            self._connections.discard(task)
            self._on_connections(len(self._connections))
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader, base: Frame) -> Frame | None:
        """The next framed message, or None at a clean end of the connection."""
        head = b""
        oversize = False
        while True:
            try:
                async with asyncio.timeout(self._idle):  # no task per read, unlike wait_for
                    chunk = await reader.readuntil(END_BLOCK)
                break
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip() or head:
                    log.warning("mllp_incomplete_frame", received_bytes=len(exc.partial) + len(head))
                return None
            except asyncio.LimitOverrunError as exc:
                oversize = True
                discarded = await reader.readexactly(exc.consumed)
                head = head or discarded[:HEAD_KEPT]
        if oversize:
            log.warning("mllp_message_too_large", limit_bytes=self._max_bytes)
            self._on_refused("message_too_large")
            return Frame(_unwrap(head), base.peer_host, base.peer_port, base.client_cn, oversize=True)
        return Frame(_unwrap(chunk[: -len(END_BLOCK)]), base.peer_host, base.peer_port, base.client_cn)


def _unwrap(block: bytes) -> bytes:
    """The message inside a block: what follows the last start byte (noise before it is dropped)."""
    start = block.rfind(START_BLOCK)
    return block[start + 1:] if start >= 0 else block
