"""The MLLP listener: reads a connection, frames it (hl7v2.framing), calls `handle(frame)`, writes the answer."""
from __future__ import annotations

import asyncio
import ssl
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from adapters.limits import ConnectionLimits
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


class _Late(Exception):
    """A connection closed for silence: `idle_timeout` between frames, `frame_timeout` within one."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason, self.seconds = reason, seconds


class MllpServer:
    """Many concurrent connections, many messages per connection, answered in order on each."""

    def __init__(self, handler: Handler, *, host: str, port: int, max_message_bytes: int,
                 idle_timeout: float, max_connections: int, ssl_context: ssl.SSLContext | None = None,
                 on_connections: Callable[[int], None] | None = None,
                 on_refused: Callable[[str], None] | None = None, max_connections_per_host: int | None = None,
                 frame_timeout: float | None = None) -> None:
        self._handler = handler
        self._host, self._port = host, port
        self._max_bytes = max_message_bytes
        self._idle = idle_timeout
        self._frame_timeout = min(frame_timeout or idle_timeout, idle_timeout)
        self._limits = ConnectionLimits(max_connections, max_connections_per_host or max_connections)
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
        """Stop accepting and cancel every connection's task. A handler cut short may already have done its
        work without its answer being sent; the sender's resend is the handler's to answer again."""
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
        refused = self._limits.admit(host)
        if refused is not None:
            log.warning("mllp_connection_refused", reason=refused, limit=self._limits.total
                        if refused == "max_connections" else self._limits.per_host)
            self._on_refused(refused)
            writer.close()
            return
        self._connections.add(task)
        self._on_connections(len(self._connections))
        client_cn = peer_common_name(writer.get_extra_info("peercert"))
        try:
            await self._answer_frames(reader, writer, Frame(b"", host, port, client_cn))
        except _Late as late:
            log.info(f"mllp_{late.reason}", seconds=late.seconds)
            self._on_refused(late.reason)
        except (ConnectionError, ssl.SSLError):
            pass
        except Exception as exc:  # noqa: BLE001 - the handler could not answer (e.g. the disk refused): no ACK, the sender resends
            where = traceback.extract_tb(exc.__traceback__)[-1]
            # The exception text may quote the message's bytes, so only its type and place are logged.
            log.error("mllp_handler_failed", error=type(exc).__name__, at=f"{where.filename}:{where.lineno}")
            self._on_refused("handler_error")
        finally:
            self._limits.release(host)
            self._connections.discard(task)
            self._on_connections(len(self._connections))
            writer.close()

    async def _answer_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, base: Frame) -> None:
        """Answer each message in order until the sender closes.

        The first frame, and each frame once its first bytes arrived, must be whole within the frame timeout;
        between frames a connection may stay silent for the idle timeout.
        """
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder(self._max_bytes)
        late = _Late("frame_timeout", self._frame_timeout)
        deadline = loop.time() + self._frame_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):  # no task per read, unlike wait_for
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                raise late from None
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
                late = _Late("idle_timeout", self._idle)
                deadline = loop.time() + self._idle
            if late.reason == "idle_timeout" and decoder.cut_off():  # a new frame started: it must end soon
                late = _Late("frame_timeout", self._frame_timeout)
                deadline = min(deadline, loop.time() + self._frame_timeout)
