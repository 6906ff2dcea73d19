"""Schema migrations on real files: an old file is upgraded in place, a newer one is refused untouched."""
from __future__ import annotations

import base64
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.encryption import PayloadCipher
from gateway.store import SchemaTooNewError, SqliteStore
from gateway.store.schema import MIGRATIONS, migrate

KEY = b"s" * 32
LOOKUP = PayloadCipher(KEY).lookup_digest


def version_one_file(path: Path) -> None:
    """A database as the first release left it, with one acknowledged message in it."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO messages (source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack) VALUES ('mllp', 'HIS|BV', 'OLD1', 'ADT^A01', 'c', 1.0, 'received', ?, ?)",
                   (PayloadCipher(KEY).seal(b"MSH|old", b"messages"), b"ACK-OLD"))


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


async def test_an_old_file_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    version_one_file(path)
    store = await SqliteStore(path, PayloadCipher(KEY)).open()
    try:
        [claimed] = await store.claim_messages(10)
    finally:
        await store.close()
    assert claimed.payload == b"MSH|old"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT count(*) FROM operator_actions").fetchone()[0] == 0
    assert {"purged_at"} <= columns(path, "messages") & columns(path, "outbox") & columns(path, "documents")
    assert {"file_type", "facility_code"} <= columns(path, "outbox")


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "gw.db", isolation_level=None) as db:
        assert migrate(db, LOOKUP) == migrate(db, LOOKUP) == len(MIGRATIONS)


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.db"
    version_one_file(path)
    monkeypatch.setattr("gateway.store.schema.MIGRATIONS", (*MIGRATIONS, "ALTER TABLE messages ADD COLUMN x;\nBROKEN;"))
    with sqlite3.connect(path, isolation_level=None) as db, pytest.raises(sqlite3.OperationalError):
        migrate(db, LOOKUP)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "purged_at" not in columns(path, "messages")


async def test_a_file_from_a_newer_gateway_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    version_one_file(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNewError, match="version 99 is newer than this gateway knows"):
        await SqliteStore(path, PayloadCipher(KEY)).open()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert "purged_at" not in columns(path, "messages")


def test_the_cli_names_the_problem_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    version_one_file(path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
    env.update({"HBGW_STORE__PATH": str(path), "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode()})
    result = subprocess.run([str(Path(sys.executable).parent / "healthbook-gateway"), "status"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "schema version 99 is newer" in result.stderr


async def test_an_upgraded_file_keeps_its_counts_and_each_patients_place_in_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    version_one_file(path)
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA user_version = 3")
        for migration in MIGRATIONS[1:3]:
            db.executescript(migration)
        for number, (patient, state) in enumerate([("p1", "delivered"), ("p1", "pending"), ("p1", "pending"),
                                                   ("p2", "in_flight"), ("p2", "pending"), ("p3", "dead")], 1):
            db.execute("INSERT INTO outbox (channel, idempotency_key, document_id, version, patient_key, content_type,"
                       " first_received_at, created_at, state, next_attempt_at, body)"
                       " VALUES ('c', ?, ?, 1, ?, 't', 1, 1, ?, 0, ?)",
                       (f"K{number}", f"D{number}", patient, state, PayloadCipher(KEY).seal(b"<x/>", b"outbox")))
    store = await SqliteStore(path, PayloadCipher(KEY)).open(owner=True)  # the owner re-queues what was in flight
    try:
        depths = await store.queue_depths()
        claimed = [item.submission.document_id for item in await store.claim_submissions(10)]
    finally:
        await store.close()
    assert depths == {("inbox", "received"): 1, ("outbox", "delivered"): 1, ("outbox", "pending"): 4,
                      ("outbox", "dead"): 1}
    assert sorted(claimed) == ["D2", "D4"]  # the first undelivered of p1 and of p2; the dead one holds no one


def test_the_heads_of_line_and_the_counts_follow_every_change_to_the_outbox(tmp_path: Path) -> None:
    rng = random.Random(12)
    with sqlite3.connect(tmp_path / "gw.db", isolation_level=None) as db:
        migrate(db, LOOKUP)
        for step in range(600):
            if step % 3 == 0:
                db.execute("INSERT INTO outbox (channel, idempotency_key, document_id, version, patient_key,"
                           " content_type, first_received_at, created_at, state, next_attempt_at)"
                           " VALUES ('c', ?, 'd', 1, ?, 't', 0, 0, 'pending', ?)",
                           (f"K{step}", f"P{rng.randint(1, 6)}", rng.random()))
            else:
                db.execute("UPDATE outbox SET state = ?, next_attempt_at = ?, lease_until = ? WHERE id = ?",
                           (rng.choice(["pending", "in_flight", "delivered", "dead", "superseded"]), rng.random(),
                            rng.random(), rng.randint(1, step // 3 + 1)))
            heads: dict[str, tuple[int, float]] = {}
            for outbox_id, patient, state, next_attempt_at, lease_until in db.execute(
                    "SELECT id, patient_key, state, next_attempt_at, lease_until FROM outbox ORDER BY id"):
                if state in ("pending", "in_flight") and patient not in heads:
                    heads[patient] = (outbox_id, next_attempt_at if state == "pending" else lease_until)
            assert {patient: (outbox_id, due) for patient, outbox_id, due in db.execute(
                "SELECT patient_key, outbox_id, due_at FROM outbox_heads")} == heads, f"step {step}"
            assert dict(db.execute("SELECT state, count FROM queue_counts WHERE queue = 'outbox' AND count != 0")) == \
                dict(db.execute("SELECT state, count(*) FROM outbox GROUP BY state")), f"step {step}"
