"""The SQLite schema as an ordered list of migrations; PRAGMA user_version records how far a file is."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gateway.store.interface import SchemaTooNewError

_DUE = "CASE o.state WHEN 'pending' THEN o.next_attempt_at ELSE o.lease_until END"


def _counted(queue: str, table: str) -> str:
    """Triggers keeping queue_counts equal to the rows of `table` by state, whatever writes them."""
    def add(state: str, delta: int) -> str:
        return (f"INSERT INTO queue_counts (queue, state, count) VALUES ('{queue}', {state}, {delta})"
                f" ON CONFLICT (queue, state) DO UPDATE SET count = count + {delta};")
    return f"""
    CREATE TRIGGER {table}_counted_in AFTER INSERT ON {table} BEGIN {add("NEW.state", 1)} END;
    CREATE TRIGGER {table}_counted_out AFTER DELETE ON {table} BEGIN {add("OLD.state", -1)} END;
    CREATE TRIGGER {table}_counted_moved AFTER UPDATE OF state ON {table} WHEN OLD.state IS NOT NEW.state BEGIN
        {add("OLD.state", -1)} {add("NEW.state", 1)}
    END;"""


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
    # 4: work that costs the same however much the store holds: each patient's head of line, kept by
    # triggers, so claiming a submission is one index seek; item counts by state, kept by triggers, so a
    # scrape counts nothing; the age of the oldest unfinished submission by index. Signed bodies in a table
    # of their own, so the rows deleted on delivery free whole pages for new ones.
    f"""
    CREATE TABLE outbox_bodies (
        outbox_id INTEGER PRIMARY KEY REFERENCES outbox (id),
        body      BLOB    NOT NULL                   -- sealed; deleted on delivery, or purged by retention
    );
    INSERT INTO outbox_bodies (outbox_id, body) SELECT id, body FROM outbox WHERE body IS NOT NULL;
    ALTER TABLE outbox DROP COLUMN body;
    DROP INDEX outbox_work;
    DROP INDEX outbox_patient;
    CREATE INDEX outbox_unfinished ON outbox (patient_key, state, id);
    CREATE INDEX outbox_age ON outbox (state, first_received_at);

    CREATE TABLE outbox_heads (                      -- each patient's earliest pending or in-flight submission
        patient_key TEXT    PRIMARY KEY,
        outbox_id   INTEGER NOT NULL,
        due_at      REAL    NOT NULL                 -- next_attempt_at when pending, lease_until in flight
    ) WITHOUT ROWID;
    CREATE INDEX outbox_heads_due ON outbox_heads (due_at);
    INSERT INTO outbox_heads (patient_key, outbox_id, due_at)
        SELECT o.patient_key, o.id, {_DUE} FROM outbox o WHERE o.id IN (
            SELECT min(id) FROM outbox WHERE state IN ('pending', 'in_flight') GROUP BY patient_key);
    CREATE TRIGGER outbox_head_added AFTER INSERT ON outbox WHEN NEW.state IN ('pending', 'in_flight') BEGIN
        INSERT OR IGNORE INTO outbox_heads (patient_key, outbox_id, due_at)
            VALUES (NEW.patient_key, NEW.id, CASE NEW.state WHEN 'pending' THEN NEW.next_attempt_at
                                             ELSE NEW.lease_until END);
    END;
    CREATE TRIGGER outbox_head_moved AFTER UPDATE OF state, next_attempt_at, lease_until ON outbox
    WHEN OLD.state IN ('pending', 'in_flight') OR NEW.state IN ('pending', 'in_flight') BEGIN
        DELETE FROM outbox_heads WHERE patient_key = NEW.patient_key;
        INSERT INTO outbox_heads (patient_key, outbox_id, due_at)
            SELECT o.patient_key, o.id, {_DUE} FROM outbox o WHERE o.id = (SELECT min(id) FROM (
                SELECT min(id) AS id FROM outbox WHERE patient_key = NEW.patient_key AND state = 'pending'
                UNION ALL
                SELECT min(id) FROM outbox WHERE patient_key = NEW.patient_key AND state = 'in_flight'));
    END;

    CREATE TABLE queue_counts (
        queue TEXT    NOT NULL,                      -- inbox | outbox
        state TEXT    NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (queue, state)
    ) WITHOUT ROWID;
    INSERT INTO queue_counts (queue, state, count)
        SELECT 'inbox', state, count(*) FROM messages GROUP BY state
        UNION ALL SELECT 'outbox', state, count(*) FROM outbox GROUP BY state;
    {_counted("inbox", "messages")}
    {_counted("outbox", "outbox")}
    """,
    # 5: each delivery attempt with its outcome, and indexes for the operator console's searches
    """
    CREATE TABLE submission_attempts (
        id        INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES outbox (id),
        at        REAL    NOT NULL,
        outcome   TEXT    NOT NULL,                  -- delivered | retry | dead
        reason    TEXT    NOT NULL DEFAULT ''
    );
    CREATE INDEX submission_attempts_outbox ON submission_attempts (outbox_id, id);
    CREATE INDEX messages_control ON messages (control_id);
    CREATE INDEX messages_received ON messages (received_at);
    CREATE INDEX messages_sender ON messages (sender, received_at);
    CREATE INDEX outbox_channel ON outbox (channel, state);
    CREATE INDEX operator_actions_item ON operator_actions (item);
    """,
    # 6: lookups of personal values keyed with the store's secret: HMAC(key, old SHA-256), the same
    # HMAC(key, SHA-256(value)) new rows get, so that old and new rows of one patient still match; the values
    # themselves cannot be recomputed (delivered payloads are purged by retention). Truncated digests (replay
    # keys, PUT ids) are rekeyed from their kept part, as new ones are made.
    """
    UPDATE documents SET patient_key = lookup_digest(patient_key);
    UPDATE outbox SET patient_key = lookup_digest(patient_key);
    UPDATE outbox_heads SET patient_key = lookup_digest(patient_key);
    UPDATE messages SET content_digest = lookup_digest(content_digest) WHERE content_digest != '';
    UPDATE messages SET control_id = substr(control_id, 1, instr(control_id, '?sha256:') - 1) || '?key:'
        || lookup_digest(substr(control_id, instr(control_id, '?sha256:') + 8))
        WHERE source = 'fhir' AND instr(control_id, '?sha256:') > 0;
    UPDATE messages SET control_id = substr(control_id, 1, instr(control_id, '/sha256:') - 1) || '/key:'
        || substr(lookup_digest(substr(control_id, instr(control_id, '/sha256:') + 8, 40)), 1, 40)
        || substr(control_id, instr(control_id, '/sha256:') + 48)
        WHERE source = 'fhir' AND instr(control_id, '/sha256:') > 0;
    UPDATE messages SET control_id = 'replay:' || substr(lookup_digest(substr(control_id, 8)), 1, 20)
        WHERE source = 'replay' AND control_id LIKE 'replay:%';
    UPDATE messages SET control_id = substr(control_id, 1, instr(control_id, '~replay:') - 1) || '~replay:'
        || substr(lookup_digest(substr(control_id, instr(control_id, '~replay:') + 8, 20)), 1, 20)
        WHERE source = 'replay' AND instr(control_id, '~replay:') > 0;
    """,
    # 7: documents waiting for a site mapping (a ward, item, lab or category code the settings lack)
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
    # 8: an acknowledgement's commit touches as few pages as it can (each is a whole page written to the WAL
    # and fsynced before the ACK): the console's search indexes leave out messages still 'received' (the
    # backlog, which the mapping stage indexes when it finishes them, searched through messages_work), and
    # the retention index leaves out unfinished ones. Queries name the same condition to use them
    # (sqlite_browse.message_search).
    """
    DROP INDEX messages_control;
    DROP INDEX messages_received;
    DROP INDEX messages_finished;
    DROP INDEX messages_sender;
    CREATE INDEX messages_control ON messages (control_id) WHERE state <> 'received';
    CREATE INDEX messages_received ON messages (received_at) WHERE state <> 'received';
    CREATE INDEX messages_sender ON messages (sender, received_at) WHERE state <> 'received';
    CREATE INDEX messages_finished ON messages (state, finished_at) WHERE finished_at IS NOT NULL;
    """,
    # 9: what the portal files a submission under (BHXH loaiHoSo, facility code), as the builder signed it;
    # '' on rows written before: the channel reads them from the signed body
    """
    ALTER TABLE outbox ADD COLUMN file_type TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN facility_code TEXT NOT NULL DEFAULT '';
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


def migrate(connection: sqlite3.Connection, lookup_digest: Callable[[str], str]) -> int:
    """Bring a database file up to the newest schema, all or nothing; returns the version it is at.

    The version is read under the write lock, so a CLI and a gateway starting together migrate once.
    Migrations call `lookup_digest(text)` in SQL: the store's keyed digest (PayloadCipher.lookup_digest).
    """
    connection.create_function("lookup_digest", 1, lookup_digest, deterministic=True)
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
