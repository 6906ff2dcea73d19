"""A real intake for tests: MLLP listener on a free port, real SqliteStore on a tmp SQLite file, the real screen."""
from __future__ import annotations

import asyncio
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.mllp import MllpServer
from adapters.tls import server_ssl_context
from gateway.config import MllpSettings
from gateway.encryption import PayloadCipher
from gateway.intake import Hl7Intake
from gateway.metrics import Metrics
from gateway.store import SqliteStore
from mappings.hl7v2 import screen as real_screen
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from mappings.model import Issue

KEY = b"k" * 32


def hl7(control_id: str, *, sender: str = "HIS_BVDK", facility: str = "BVDK^4000000000123^L",
        pid3: str = "040085012345^^^BCA^NNVNM", message_type: str = "ADT^A01", msh15: str = "", msh16: str = "",
        charset: str = "UNICODE UTF-8", name: str = "NGUYEN^AN", terminator: str = "\r",
        processing_id: str = "P") -> str:
    """One small HL7 v2 message the real screen accepts, with the fields the intake looks at."""
    msh = ["MSH", "^~\\&", sender, facility, "HBGW", "BYT", "20260312083015", "", message_type, control_id,
           processing_id,
           "2.5", "", "", msh15, msh16, "VNM", charset]
    segments = ["|".join(msh), "EVN|A01|20260312083000", f"PID|1||{pid3}||{name}||19850214|M",
                "PV1|1|I|NOI^P302||||||||||||||||VV1" + "|" * 25 + "20260312082500"]
    return terminator.join(segments) + terminator


@dataclass
class Intake:
    """The running intake, and ways to talk to it and to look at its file."""

    server: MllpServer
    store: SqliteStore
    path: Path
    client_ssl: ssl.SSLContext | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.server.port, ssl=self.client_ssl)

    async def send(self, message: str | bytes, encoding: str = "utf-8") -> bytes:
        """Send one message on a new connection and return the raw ACK."""
        reader, writer = await self.connect()
        try:
            return await exchange(reader, writer, message, encoding)
        finally:
            writer.close()

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the database file with a separate connection, as any other process would."""
        with sqlite3.connect(self.path) as db:
            return db.execute(sql, params).fetchall()

    def stored_payload(self, control_id: str) -> str:
        [(sealed,)] = self.rows("SELECT payload FROM messages WHERE control_id = ?", (control_id,))
        return PayloadCipher(KEY).open(sealed, b"messages").decode("utf-8")


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: str | bytes,
                   encoding: str = "utf-8") -> bytes:
    """Write one framed message and read one framed answer."""
    data = message.encode(encoding) if isinstance(message, str) else message
    writer.write(START_BLOCK + data + END_BLOCK)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(END_BLOCK), 10)
    assert answer.startswith(START_BLOCK)
    return answer[1:-2]


def ack_segments(ack: bytes, encoding: str = "utf-8") -> dict[str, list[list[str]]]:
    """The ACK's segments by name, each split into fields."""
    segments: dict[str, list[list[str]]] = {}
    for line in ack.decode(encoding).split("\r"):
        if line:
            segments.setdefault(line[:3], []).append(line.split("|"))
    return segments


@asynccontextmanager
async def running_intake(tmp_path: Path, screen: Callable[[str], list[Issue]] = real_screen,
                         client_ssl: ssl.SSLContext | None = None, **settings: Any) -> AsyncIterator[Intake]:
    """Start store, intake and listener with these MLLP settings; stop them in reverse."""
    mllp = MllpSettings.model_validate({"port": 0, **settings})
    path = tmp_path / "gateway.db"
    store = await SqliteStore(path, PayloadCipher(KEY)).open()
    intake = Hl7Intake(store, Metrics(), mllp, screen)
    server = MllpServer(intake.store_and_ack, host="127.0.0.1", port=0, max_message_bytes=mllp.max_message_bytes,
                        idle_timeout=mllp.idle_timeout_seconds, max_connections=mllp.max_connections,
                        ssl_context=server_ssl_context(mllp.tls))
    await server.start()
    try:
        yield Intake(server, store, path, client_ssl)
    finally:
        await server.stop()
        await store.close()
