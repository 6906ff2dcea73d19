"""Lookups of personal values are keyed (HMAC), old bare hashes are rekeyed, and every file made is private."""
from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.portal.base import Submission
from gateway.config import SigningSettings, StoreSettings
from gateway.encryption import PayloadCipher, load_cipher
from gateway.fhir_intake import control_id, update_key
from gateway.intake import _replay_id
from gateway.signing import load_signer
from gateway.store import EncodedDocument, Inbound, MappingOutcome, SqliteStore
from gateway.store.schema import MIGRATIONS
from mappings.model import Document
from mappings.vn.identifiers import patient_key

KEY = b"q" * 32
CCCD = "001190001234"
CRITERIA = f"identifier=urn:hbgw:id:cccd|{CCCD}"
REPLAYED = f"MSH|^~\\&|HIS|BV\rPID|1||{CCCD}^^^BCA^NNVNM\r"
PATIENT = {"resourceType": "Patient"}


def bare(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def every_text(path: Path) -> str:
    """Every text value in the lookup columns, to search for a bare hash."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT patient_key FROM documents UNION ALL SELECT patient_key FROM outbox"
                          " UNION ALL SELECT content_digest FROM messages UNION ALL SELECT control_id FROM messages")
        return " ".join(str(row[0]) for row in rows)


async def map_one(store: SqliteStore, control: str, doc_id: str, version: int) -> None:
    """One acknowledged message mapped to one document of the CCCD patient and its submission."""
    stored = await store.store_inbound(Inbound("mllp", "HIS|BV", control, "ADT^A01", "c", b"MSH|x", b"ACK",
                                               content_digest=bare(control)))
    claimed = await store.claim_messages(10)
    assert stored.message_id in [message.id for message in claimed]
    await store.finish_messages([MappingOutcome(
        stored.message_id, [EncodedDocument.of(Document(doc_id, version, "episode", patient_key("cccd", CCCD),
                                                        {"id": doc_id}))],
        [Submission("bhxh_xml130", f"{doc_id}:v{version}", doc_id, version, b"<x/>", "application/xml")])])


async def test_patient_keys_and_digests_are_keyed_never_bare(tmp_path: Path) -> None:
    store = await SqliteStore(tmp_path / "gw.db", PayloadCipher(KEY)).open()
    try:
        await map_one(store, "C1", "D1", 1)
        fhir = control_id(PATIENT, CRITERIA, store.lookup_digest)
        await store.store_inbound(Inbound("fhir", "his", fhir, "Patient", "c", b"{}", b"{}"))
    finally:
        await store.close()
    text = every_text(tmp_path / "gw.db")
    for guessable in (patient_key("cccd", CCCD), bare("C1"), bare(CRITERIA), CCCD):
        assert guessable not in text
    with sqlite3.connect(tmp_path / "gw.db") as db:
        (stored_key,) = db.execute("SELECT patient_key FROM documents").fetchone()
    assert stored_key == PayloadCipher(KEY).lookup_digest(patient_key("cccd", CCCD))
    assert stored_key != PayloadCipher(b"w" * 32).lookup_digest(patient_key("cccd", CCCD))
    assert stored_key != hmac.new(KEY, patient_key("cccd", CCCD).encode(), hashlib.sha256).hexdigest()  # derived


def version_three_file(path: Path) -> None:
    """A store as an earlier release left it: bare SHA-256 lookups, one delivery pending for the patient."""
    with sqlite3.connect(path, isolation_level=None) as db:
        for script in MIGRATIONS[:3]:
            db.executescript(script)
        db.execute("PRAGMA user_version = 3")
        cipher = PayloadCipher(KEY)
        db.execute("INSERT INTO messages (id, source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack, content_digest) VALUES (1, 'mllp', 'HIS|BV', 'OLD1', 'ADT^A01', 'c', 1.0,"
                   " 'mapped', ?, X'41434B', ?)", (cipher.seal(b"MSH|old", b"messages"), bare("OLD1")))
        db.execute("INSERT INTO messages (id, source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack) VALUES (2, 'fhir', 'his', ?, 'Patient', 'c', 1.0, 'mapped', NULL, X'7B7D')",
                   (f"Patient?sha256:{bare(CRITERIA)}",))
        db.execute("INSERT INTO messages (id, source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack) VALUES (3, 'replay', 'HIS|BV', ?, 'ADT^A01', 'c', 1.0, 'mapped', NULL,"
                   " X'41434B')", ("R1~replay:" + bare(REPLAYED)[:20],))
        db.execute("INSERT INTO messages (id, source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack) VALUES (5, 'replay', 'HIS|BV', ?, 'ADT^A01', 'c', 1.0, 'mapped', NULL,"
                   " X'41434B')", ("replay:" + bare("an older release's replay")[:20],))
        db.execute("INSERT INTO messages (id, source, sender, control_id, message_type, correlation_id, received_at,"
                   " state, payload, ack) VALUES (4, 'fhir', 'his', ?, 'Patient', 'c', 1.0, 'mapped', NULL,"
                   " X'7B7D')", (f"Patient/sha256:{bare(CCCD)[:40]}/_history/7",))
        db.execute("INSERT INTO documents (document_id, version, kind, patient_key, message_id, created_at, bundle)"
                   " VALUES ('OLD', 1, 'episode', ?, 1, 1.0, NULL)", (patient_key("cccd", CCCD),))
        db.execute("INSERT INTO outbox (id, channel, idempotency_key, document_id, version, patient_key, content_type,"
                   " first_received_at, created_at, state, next_attempt_at, body) VALUES (1, 'bhxh_xml130', 'OLD:v1',"
                   " 'OLD', 1, ?, 'application/xml', 1.0, 1.0, 'pending', 1e12, ?)",
                   (patient_key("cccd", CCCD), cipher.seal(b"<old/>", b"outbox")))


async def test_the_migration_rekeys_old_rows_so_they_still_match_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    version_three_file(path)
    store = await SqliteStore(path, PayloadCipher(KEY)).open()
    try:
        text = every_text(path)
        assert patient_key("cccd", CCCD) not in text and bare("OLD1") not in text and bare(REPLAYED)[:20] not in text
        assert bare(CCCD)[:40] not in text and bare("an older release's replay")[:20] not in text
        await map_one(store, "NEW1", "NEW", 1)
        # the old row is not due yet; the new one of the same patient must wait behind it: the keys match
        assert await store.claim_submissions(10) == []
        again = await store.store_inbound(Inbound(
            "fhir", "his", control_id(PATIENT, CRITERIA, store.lookup_digest), "Patient", "c", b"{}", b"{}"))
        assert again.duplicate and again.message_id == 2
        put = await store.store_inbound(Inbound(
            "fhir", "his", update_key("Patient", CCCD, store.lookup_digest) + "/_history/7", "Patient", "c", b"{}",
            b"{}"))
        assert put.duplicate and put.message_id == 4
        replayed = await store.store_inbound(Inbound(
            "replay", "HIS|BV", _replay_id("R1", REPLAYED, store.lookup_digest), "ADT^A01", "c", b"MSH|r", b"ACK"))
        assert replayed.duplicate and replayed.message_id == 3
        retransmitted = await store.store_inbound(Inbound("mllp", "HIS|BV", "OLD1", "ADT^A01", "c", b"MSH|old",
                                                          b"ACK2", content_digest=bare("OLD1")))
        assert retransmitted.duplicate and retransmitted.same_content
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        keys = {row[0] for row in db.execute("SELECT patient_key FROM outbox")}
    assert keys == {PayloadCipher(KEY).lookup_digest(patient_key("cccd", CCCD))}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most careless umask: anything created without an explicit mode is world-writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


async def test_every_file_and_folder_the_gateway_creates_is_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data" / "var"
    settings = StoreSettings(path=data / "gw.db")
    store = await SqliteStore(settings.path, load_cipher(settings)).open(owner=True)
    try:
        await map_one(store, "C1", "D1", 1)
        load_signer(SigningSettings(source="dev", dev_dir=data / "dev-cert")).close()
        made = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "data").rglob("*")}
        made["data"] = stat.S_IMODE((tmp_path / "data").stat().st_mode)
    finally:
        await store.close()
    assert {"gw.db", "gw.db-wal", "gw.db-shm", "gw.db.lock", "store.key", "dev-cert", "dev-cert.pem"} <= set(made)
    assert {name: mode for name, mode in made.items() if mode not in (0o600, 0o700)} == {}
