"""The store tests run against both backends: a SQLite file, and a database on the throwaway PostgreSQL server.

A test asks for the `backend` fixture, opens stores through it, and looks at the raw tables with `rows`
(SQL with `?` placeholders, run as written on either database).
"""
from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from gateway.encryption import PayloadCipher
from gateway.store import PostgresStore, SqliteStore, Store

KEY = b"k" * 32
BACKENDS = ("sqlite", "postgresql")


def _numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ..."""
    numbers = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


@dataclass
class StoreBackend:
    name: str
    path: Path  # the SQLite file
    dsn: str  # the PostgreSQL database ("" for SQLite)

    def new(self, key: bytes = KEY, **options: Any) -> SqliteStore | PostgresStore:
        """A store on this backend, not yet open (options: lease_seconds, on_batch, max_delay_ms, ...)."""
        if self.name == "sqlite":
            return SqliteStore(self.path, PayloadCipher(key), **options)
        return PostgresStore(self.dsn, PayloadCipher(key), **options)

    async def open(self, *, owner: bool = False, key: bytes = KEY, **options: Any) -> Store:
        """A store on this backend, open."""
        store: Store = await self.new(key, **options).open(owner=owner)
        return store

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the database beside the store, committed; rows as tuples."""
        if self.name == "sqlite":
            with sqlite3.connect(self.path) as db:
                return [tuple(row) for row in db.execute(sql, params).fetchall()]
        connection = await asyncpg.connect(self.dsn)
        try:
            return [tuple(row) for row in await connection.fetch(_numbered(sql), *params)]
        finally:
            await connection.close()

    async def refuse_inserts(self, table: str, reason: str) -> None:
        """A trigger that fails every insert into `table`, as a full disk or a broken database would."""
        if self.name == "sqlite":
            await self.rows(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, '{reason}'); END")
            return
        await self.rows(f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                        f" $$ BEGIN RAISE EXCEPTION '{reason}'; END $$")
        await self.rows(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()")

    async def allow_inserts(self, table: str) -> None:
        """Drop the trigger of refuse_inserts: the database works again."""
        if self.name == "sqlite":
            await self.rows("DROP TRIGGER refuse")
        else:
            await self.rows(f"DROP TRIGGER refuse ON {table}")

    async def crash(self, store: Store) -> None:
        """End a store as a killed process would: on PostgreSQL its connections drop without a goodbye."""
        if self.name == "postgresql":  # and returns once the server has seen them go (waits up to 10 s)
            await self.rows("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        await store.close()
