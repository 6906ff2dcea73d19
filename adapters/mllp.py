"""The MLLP listener: reads a connection, frames it (hl7v2.framing), calls `handle(frame)`, writes the answer."""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from adapters.tls import peer_common_name
from mappings.hl7v2.framing import FrameDecoder, wrap

READ_CHUNK = 64 * 1024

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One message as read from a connection; `oversize` frames carry only their first bytes."""

    data: bytes
    peer_host: str
    peer_port: int
    client_cn: str = ""
    oversize: bool = False


Handler = Callable[[Frame], Awaitable[bytes]]  # the answer to write back; b"" writes nothing


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
        """Listen; each connection's memory stays bounded by the message limit (the decoder discards the rest)."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port, ssl=self._ssl)

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
        client_cn = peer_common_name(writer.get_extra_info("peercert"))
        try:
            await self._answer_frames(reader, writer, Frame(b"", host, port, client_cn))
        except TimeoutError:
            log.info("mllp_idle_timeout", idle_seconds=self._idle)
            self._on_refused("idle_timeout")
        except (ConnectionError, ssl.SSLError):
            pass
        except Exception:  # the handler could not answer (e.g. the disk refused): no ACK, the sender resends
            log.exception("mllp_handler_failed")
            self._on_refused("handler_error")
        finally:
            self._connections.discard(task)
            self._on_connections(len(self._connections))
            writer.close()

    async def _answer_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, base: Frame) -> None:
        """Answer each message in order until the sender closes; each must be whole within the idle timeout."""
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder(self._max_bytes)
        deadline = loop.time() + self._idle
        while True:
            async with asyncio.timeout_at(deadline):  # no task per read, unlike wait_for
                data = await reader.read(READ_CHUNK)
            if not data:
                if cut_off := decoder.cut_off():
                    log.warning("mllp_incomplete_frame", received_bytes=cut_off)
                return
            messages = decoder.feed(data)
            for message in messages:
                if message.oversize:
                    log.warning("mllp_message_too_large", limit_bytes=self._max_bytes)
                    self._on_refused("message_too_large")
                answer = await self._handler(Frame(message.data, base.peer_host, base.peer_port, base.client_cn,
                                                   message.oversize))
                if answer:  # b"": the sender asked for no acknowledgement (MSH-15 NE)
                    writer.write(wrap(answer))
                    await writer.drain()
            if messages:
                deadline = loop.time() + self._idle
