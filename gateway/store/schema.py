"""The SQLite schema as an ordered list of migrations; PRAGMA user_version records how far a file is."""
from __future__ import annotations

import sqlite3

from gateway.store.interface import SchemaTooNewError

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
        state          TEXT    NOT NULL,             -- received | mapped | dead | discarded
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
                                                     -- | discarded
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
    # 2: operator audit trail, purge marks, and indexes for dead-letter listing and retention
    """
    ALTER TABLE messages ADD COLUMN purged_at REAL;
    ALTER TABLE documents ADD COLUMN purged_at REAL;
    ALTER TABLE outbox ADD COLUMN purged_at REAL;
    CREATE INDEX messages_finished ON messages (state, finished_at);
    CREATE INDEX outbox_finished ON outbox (state, finished_at);
    CREATE INDEX documents_message ON documents (message_id);

    CREATE TABLE operator_actions (                  -- who did what to which queued item, and when
        id       INTEGER PRIMARY KEY,
        at       REAL NOT NULL,
        operator TEXT NOT NULL,
        action   TEXT NOT NULL,                      -- retry | discard | replay | show-payload
        item     TEXT NOT NULL,                      -- inbox:ID or outbox:ID
        detail   TEXT NOT NULL DEFAULT ''
    );
    """,
    # 3: a digest of each message's content, to tell a retransmission from a reused control id
    """
    ALTER TABLE messages ADD COLUMN content_digest TEXT NOT NULL DEFAULT '';
    """,
    # 4: documents waiting for a site mapping (a ward, item, lab or category code the settings lack)
    """
    CREATE TABLE parked_documents (
        document_id       TEXT    PRIMARY KEY,
        version           INTEGER NOT NULL,         -- the latest version; it is the one built once mapped
        channel           TEXT    NOT NULL,
        codes             TEXT    NOT NULL,         -- the unmapped site codes, "ward:NOI-TM item:KB01"
        first_received_at REAL    NOT NULL,         -- the oldest acknowledgement it holds (delivery clock)
        parked_at         REAL    NOT NULL
    );
    """,
)


def _statements(script: str) -> list[str]:
    """Split a migration into whole statements (sqlite3.complete_statement knows about comments and strings)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def migrate(connection: sqlite3.Connection) -> int:
    """Bring a database file up to the newest schema, all or nothing; returns the version it is at.

    The version is read under the write lock, so a CLI and a gateway starting together migrate once.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        (current,) = connection.execute("PRAGMA user_version").fetchone()
        if current > len(MIGRATIONS):
            raise SchemaTooNewError(
                f"database schema version {current} is newer than this gateway knows ({len(MIGRATIONS)}):"
                " a newer gateway wrote this file; run that version, or restore a backup made for this one")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return len(MIGRATIONS)
