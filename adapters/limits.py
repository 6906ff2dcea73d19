"""Fair connection limits for the listeners: per host and in all, and a short deadline for a stalled request.

One host opening hundreds of idle connections must not lock out every other sender, and a connection that
dribbles a request (slowloris) must not hold its place for the idle timeout. The MLLP listener counts its
connections here; the HTTP listener is a TCPSite whose connections are counted and given a deadline to send
each request head.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

OnRefused = Callable[[str], None]


class ConnectionLimits:
    """How many connections are open, per host and in all, and whether one more may open."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = per_host
        self._open: Counter[str] = Counter()
        self._count = 0

    @property
    def open(self) -> int:
        return self._count

    def admit(self, host: str) -> str | None:
        """Count one more connection from `host`, or say why not (`max_connections`, `max_connections_per_host`)."""
        if self._count >= self.total:
            return "max_connections"
        if self._open[host] >= self.per_host:
            return "max_connections_per_host"
        self._open[host] += 1
        self._count += 1
        return None

    def release(self, host: str) -> None:
        """One connection from `host` closed."""
        self._open[host] -= 1
        if self._open[host] <= 0:
            del self._open[host]
        self._count -= 1


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted by the limits and closed when a request head is late."""

    def __init__(self, inner: asyncio.Protocol, guard: HttpGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._host: str | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        refused = self._guard.limits.admit(host)
        if refused is not None:
            self._guard.on_refused(refused)
            transport.abort()
            return
        self._host, self._transport = host, transport
        self._guard.guards[id(transport)] = self
        self.wait_for_request()
        self._inner.connection_made(transport)

    def wait_for_request(self) -> None:
        """Start the clock: the next request head must arrive within the request timeout."""
        self.handling_request()
        self._deadline = asyncio.get_running_loop().call_later(self._guard.request_timeout, self._late)

    def handling_request(self) -> None:
        """A request head arrived: its handling is not timed here."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._guard.on_refused("request_timeout")
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._host is None:
            return
        self.handling_request()
        self._guard.limits.release(self._host)
        self._guard.guards.pop(id(self._transport), None)
        self._host = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class HttpGuard:
    """The HTTP listener's limits and request deadlines; `middleware` goes on the application.

    The middleware stops a connection's clock while a request is handled and restarts it after, so the
    deadline covers only the wait for a request head (and doubles as the keep-alive limit).
    """

    def __init__(self, limits: ConnectionLimits, request_timeout: float, on_refused: OnRefused | None = None) -> None:
        self.limits = limits
        self.request_timeout = request_timeout
        self.on_refused = on_refused or (lambda reason: None)
        self.guards: dict[int, _GuardedConnection] = {}

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        """Pause the request deadline while this request is handled."""
        guard = self.guards.get(id(request.transport))
        if guard is None:
            return await handler(request)
        guard.handling_request()
        try:
            return await handler(request)
        finally:
            guard.wait_for_request()


class LimitedSite(web.TCPSite):
    """A TCP site whose connections are admitted and timed by an HttpGuard."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, ssl_context: ssl.SSLContext | None,
                 guard: HttpGuard) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.guard = guard

    async def start(self) -> None:
        """Listen as TCPSite does, with every connection's protocol wrapped in a guard."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedConnection(server(), self.guard), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port)
