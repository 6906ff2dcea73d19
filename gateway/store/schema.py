"""The SQLite schema as an ordered list of migrations; PRAGMA user_version records how far a file is."""
from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: inbox, documents, outbox, receipts
    """
    CREATE TABLE messages (
        id             INTEGER PRIMARY KEY,
        source         TEXT    NOT NULL,             -- mllp | fhir
        sender         TEXT    NOT NULL,             -- MSH-3^MSH-4 or the FHIR client name
        control_id     TEXT    NOT NULL,             -- MSH-10 or Bundle.identifier
        message_type   TEXT    NOT NULL,
        correlation_id TEXT    NOT NULL,
        received_at    REAL    NOT NULL,
        state          TEXT    NOT NULL,             -- received | mapped | dead
        attempts       INTEGER NOT NULL DEFAULT 0,
        lease_until    REAL    NOT NULL DEFAULT 0,
        reason         TEXT,
        payload        BLOB,                         -- sealed; NULL once purged
        ack            BLOB    NOT NULL,             -- sent again, byte for byte, on a retransmission
        finished_at    REAL,
        UNIQUE (source, sender, control_id)
    );
    CREATE INDEX messages_work ON messages (state, id);

    CREATE TABLE documents (
        document_id  TEXT    NOT NULL,
        version      INTEGER NOT NULL,
        kind         TEXT    NOT NULL,
        patient_key  TEXT    NOT NULL,
        message_id   INTEGER NOT NULL REFERENCES messages (id),
        created_at   REAL    NOT NULL,
        bundle       BLOB,                           -- sealed; NULL once purged
        PRIMARY KEY (document_id, version)
    );

    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        channel         TEXT    NOT NULL,
        idempotency_key TEXT    NOT NULL,
        document_id     TEXT    NOT NULL,
        version         INTEGER NOT NULL,
        patient_key     TEXT    NOT NULL,
        content_type    TEXT    NOT NULL,
        first_received_at REAL  NOT NULL,            -- when the hospital's message was acknowledged
        created_at      REAL    NOT NULL,
        state           TEXT    NOT NULL,            -- pending | in_flight | delivered | dead | superseded
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL    NOT NULL,
        lease_until     REAL    NOT NULL DEFAULT 0,
        reason          TEXT,
        finished_at     REAL,
        body            BLOB,                        -- sealed; NULL once purged
        UNIQUE (channel, idempotency_key)
    );
    CREATE INDEX outbox_work ON outbox (state, next_attempt_at, id);
    CREATE INDEX outbox_patient ON outbox (patient_key, id);
    CREATE INDEX outbox_document ON outbox (document_id, channel, state);

    CREATE TABLE receipts (
        outbox_id      INTEGER PRIMARY KEY REFERENCES outbox (id),
        channel        TEXT NOT NULL,
        transaction_id TEXT NOT NULL,
        received_at    TEXT NOT NULL,
        result_code    TEXT NOT NULL,
        raw            TEXT NOT NULL,
        archived_at    REAL NOT NULL
    );
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring a database file up to the newest schema; returns the version it is at."""
    (current,) = connection.execute("PRAGMA user_version").fetchone()
    if current > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {current} is newer than this gateway ({len(MIGRATIONS)})")
    for version in range(current + 1, len(MIGRATIONS) + 1):
        connection.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\nPRAGMA user_version = {version};\nCOMMIT;")
    return len(MIGRATIONS)
