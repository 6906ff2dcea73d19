"""The gateway nodes serving from one PostgreSQL database: who is alive, who maps, whose work to take over.

Each serving node holds, on a connection of its own, an advisory lock on its id (a row in `nodes`) for as
long as it lives. PostgreSQL drops the lock with the connection when the node's process dies, so the others
see at once that its leases are orphaned and release them (sweep), instead of waiting for them to expire.
The node that maps holds a second advisory lock on the same connection; it too goes with the node.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from gateway.logs import get_logger
from gateway.store import postgres_admin
from gateway.store.interface import StoreUnavailable

log = get_logger(__name__)
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
SWEEP_SECONDS = 2.0  # how often a serving node looks for dead nodes whose leases it can take over
MAPPING_LOCK = 0  # advisory lock (NODE_LOCK_CLASS, 0) of the node that maps; node ids start at 1
Transaction = Callable[..., Awaitable[Any]]


def describe(exc: BaseException) -> str:
    """One line for the log and the caller: the server's message, never the DSN (it may hold a password)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class NodeMembership:
    """This process as one of the nodes serving from the database."""

    def __init__(self, dsn: str, transaction: Transaction) -> None:
        self._dsn = dsn
        self._transaction = transaction  # runs fn(connection, *args) in a pooled transaction
        self.connection: asyncpg.Connection | None = None  # holds this node's advisory locks
        self.node = 0
        self._mapper = False
        self._swept_at = 0.0

    async def join(self) -> None:
        """Register under a fresh id, holding an advisory lock on it while alive."""
        connection = await asyncpg.connect(self._dsn)
        node = 0
        while not node:
            candidate = secrets.randbelow(2**31 - 2) + 1
            if await connection.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                         postgres_admin.NODE_LOCK_CLASS, candidate):
                node = candidate
        await connection.execute(
            "INSERT INTO nodes (id, name, started_at) VALUES ($1, $2, hbgw_now())"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, started_at = excluded.started_at",
            node, f"{socket.gethostname()}:{os.getpid()}")
        self.connection, self.node, self._mapper = connection, node, False
        log.info("store_node_registered", node=node)

    async def leave(self) -> None:
        """Hand this node's leases to the others at once and let go of its locks."""
        if self.connection is None:
            return
        try:
            async with self.connection.transaction():
                await postgres_admin.release_node(self.connection, self.node)
        except DRIVER_ERRORS:
            log.warning("store_node_release_failed", node=self.node)  # the others take over after it
        await self.connection.close()
        self.connection = None

    async def sweep(self) -> None:
        """Take over the leases of nodes that died; rejoin under a new id if this node's own lock was lost."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = loop.time()
        if self.connection is None or self.connection.is_closed():
            log.warning("store_node_connection_lost", node=self.node)  # its leases are taken over by the others
            try:
                await self.join()
            except DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"cannot rejoin the nodes on PostgreSQL: {describe(exc)}") from exc
        messages, submissions = await self._transaction(postgres_admin.take_over_dead_nodes, self.node)
        if messages or submissions:
            log.warning("store_leases_taken_over", messages=messages, submissions=submissions)

    async def may_map(self) -> bool:
        """Whether this node maps: one node at a time does (the holder of the mapping lock), so one episode's
        messages are applied in the order they were acknowledged, as on a single gateway. When that node
        dies its lock goes with its connection, and the next node to ask takes mapping over."""
        connection = self.connection
        if connection is None or connection.is_closed():
            self._mapper = False
            return False
        if not self._mapper:
            try:
                self._mapper = await connection.fetchval("SELECT pg_try_advisory_lock($1, $2)",
                                                         postgres_admin.NODE_LOCK_CLASS, MAPPING_LOCK)
            except DRIVER_ERRORS as exc:
                raise StoreUnavailable(f"store operation failed: {describe(exc)}") from exc
            if self._mapper:
                log.info("store_mapping_node", node=self.node)
        return self._mapper
