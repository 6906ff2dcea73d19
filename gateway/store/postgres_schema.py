"""The PostgreSQL schema as an ordered list of migrations; the table hbgw_schema records how far a database is.

The tables mirror the SQLite schema (schema.py) column for column, so both backends answer alike; times are
seconds since the epoch from the database server's clock, which every node shares, so leases do not depend on
the nodes' clocks agreeing.
"""
from __future__ import annotations

import asyncpg

from gateway.store.interface import SchemaTooNewError

MIGRATION_LOCK = 0x4842_4757  # "HBGW": one advisory lock key, so nodes starting together migrate once

MIGRATIONS: tuple[str, ...] = (
    # 1: inbox, documents, outbox, receipts, operator audit trail, and the nodes serving from this database
    """
    CREATE FUNCTION hbgw_now() RETURNS double precision LANGUAGE sql VOLATILE
        AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

    CREATE TABLE messages (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source         text             NOT NULL,   -- mllp | fhir
        sender         text             NOT NULL,   -- MSH-3^MSH-4 or the FHIR client name
        control_id     text             NOT NULL,   -- MSH-10 or Bundle.identifier
        message_type   text             NOT NULL,
        correlation_id text             NOT NULL,
        received_at    double precision NOT NULL,
        state          text             NOT NULL,   -- received | mapped | dead | discarded
        attempts       integer          NOT NULL DEFAULT 0,
        lease_until    double precision NOT NULL DEFAULT 0,
        lease_owner    bigint,                      -- the node holding the lease (nodes.id)
        reason         text,
        payload        bytea,                       -- sealed; NULL once purged
        ack            bytea            NOT NULL,   -- sent again, byte for byte, on a retransmission
        finished_at    double precision,
        purged_at      double precision,
        content_digest text             NOT NULL DEFAULT '',
        UNIQUE (source, sender, control_id)
    );
    CREATE INDEX messages_work ON messages (id) WHERE state = 'received';
    CREATE INDEX messages_finished ON messages (state, finished_at);
    CREATE INDEX messages_lease ON messages (lease_owner) WHERE state = 'received';

    CREATE TABLE documents (
        document_id  text             NOT NULL,
        version      integer          NOT NULL,
        kind         text             NOT NULL,
        patient_key  text             NOT NULL,
        message_id   bigint           NOT NULL REFERENCES messages (id),
        created_at   double precision NOT NULL,
        bundle       bytea,                         -- sealed; NULL once purged
        purged_at    double precision,
        PRIMARY KEY (document_id, version)
    );
    CREATE INDEX documents_message ON documents (message_id);

    CREATE TABLE outbox (
        id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel           text             NOT NULL,
        idempotency_key   text             NOT NULL,
        document_id       text             NOT NULL,
        version           integer          NOT NULL,
        patient_key       text             NOT NULL,
        content_type      text             NOT NULL,
        first_received_at double precision NOT NULL, -- when the hospital's message was acknowledged
        created_at        double precision NOT NULL,
        state             text             NOT NULL, -- pending | in_flight | delivered | dead | superseded
                                                     -- | discarded
        attempts          integer          NOT NULL DEFAULT 0,
        next_attempt_at   double precision NOT NULL,
        lease_until       double precision NOT NULL DEFAULT 0,
        lease_owner       bigint,
        reason            text,
        finished_at       double precision,
        body              bytea,                     -- sealed; NULL once purged
        purged_at         double precision,
        UNIQUE (channel, idempotency_key)
    );
    CREATE INDEX outbox_work ON outbox (id) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX outbox_patient ON outbox (patient_key, id) WHERE state IN ('pending', 'in_flight');
    CREATE INDEX outbox_document ON outbox (document_id, channel, state);
    CREATE INDEX outbox_finished ON outbox (state, finished_at);
    CREATE INDEX outbox_lease ON outbox (lease_owner) WHERE state = 'in_flight';

    CREATE TABLE receipts (
        outbox_id      bigint PRIMARY KEY REFERENCES outbox (id),
        channel        text             NOT NULL,
        transaction_id text             NOT NULL,
        received_at    text             NOT NULL,
        result_code    text             NOT NULL,
        raw            text             NOT NULL,
        archived_at    double precision NOT NULL
    );

    CREATE TABLE operator_actions (                  -- who did what to which queued item, and when
        id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at       double precision NOT NULL,
        operator text             NOT NULL,
        action   text             NOT NULL,          -- retry | discard | replay | show-payload
        item     text             NOT NULL,          -- inbox:ID or outbox:ID
        detail   text             NOT NULL DEFAULT ''
    );

    CREATE TABLE nodes (                             -- gateway nodes serving now (or dead, not yet swept)
        id         bigint           PRIMARY KEY,     -- also the key of the advisory lock the node holds
        name       text             NOT NULL,
        started_at double precision NOT NULL
    );
    """,
    # 2: signed bodies in a table of their own (deleted on delivery), each delivery attempt with its outcome,
    # and indexes for the operator console's searches (as SQLite's migrations 4 and 5)
    """
    CREATE TABLE outbox_bodies (
        outbox_id bigint PRIMARY KEY REFERENCES outbox (id),
        body      bytea  NOT NULL                    -- sealed; deleted on delivery, or purged by retention
    );
    INSERT INTO outbox_bodies (outbox_id, body) SELECT id, body FROM outbox WHERE body IS NOT NULL;
    ALTER TABLE outbox DROP COLUMN body;
    CREATE INDEX outbox_age ON outbox (state, first_received_at);

    CREATE TABLE submission_attempts (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        outbox_id bigint           NOT NULL REFERENCES outbox (id),
        at        double precision NOT NULL,
        outcome   text             NOT NULL,         -- delivered | retry | dead
        reason    text             NOT NULL DEFAULT ''
    );
    CREATE INDEX submission_attempts_outbox ON submission_attempts (outbox_id, id);
    -- Byte order for the console's prefix searches (`HIS` finds `HIS|BV`), whatever the database's locale.
    ALTER TABLE messages ALTER COLUMN control_id TYPE text COLLATE "C", ALTER COLUMN sender TYPE text COLLATE "C",
        ALTER COLUMN message_type TYPE text COLLATE "C";
    CREATE INDEX messages_control ON messages (control_id);
    CREATE INDEX messages_received ON messages (received_at);
    CREATE INDEX messages_sender ON messages (sender, received_at);
    CREATE INDEX outbox_channel ON outbox (channel, state);
    CREATE INDEX operator_actions_item ON operator_actions (item);
    """,
    # 3: documents waiting for a site mapping (as SQLite's migration 7)
    """
    CREATE TABLE parked_documents (
        document_id       text             PRIMARY KEY,
        version           integer          NOT NULL, -- the latest version; it is the one built once mapped
        channel           text             NOT NULL,
        codes             text             NOT NULL, -- the unmapped site codes, "ward:NOI-TM item:KB01"
        first_received_at double precision NOT NULL, -- the oldest acknowledgement it holds (delivery clock)
        parked_at         double precision NOT NULL
    );
    """,
    # 4: what the portal files a submission under, as the builder signed it (as SQLite's migration 9)
    """
    ALTER TABLE outbox ADD COLUMN file_type text NOT NULL DEFAULT '',
        ADD COLUMN facility_code text NOT NULL DEFAULT '';
    """,
)


async def migrate(connection: asyncpg.Connection) -> int:
    """Bring the database up to the newest schema, all or nothing; returns the version it is at.

    The version is read under an advisory lock, so nodes and CLIs starting together migrate once.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute("CREATE TABLE IF NOT EXISTS hbgw_schema (version integer NOT NULL)")
        current = await connection.fetchval("SELECT max(version) FROM hbgw_schema") or 0
        if current > len(MIGRATIONS):
            raise SchemaTooNewError(
                f"database schema version {current} is newer than this gateway knows ({len(MIGRATIONS)}):"
                " a newer gateway wrote this database; run that version, or restore a backup made for this one")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await connection.execute(MIGRATIONS[version - 1])
            await connection.execute("INSERT INTO hbgw_schema (version) VALUES ($1)", version)
    return len(MIGRATIONS)
