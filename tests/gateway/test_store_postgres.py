"""Several gateway nodes on one real PostgreSQL database: claims, dedupe, per-patient order, takeover, migrations.

Each "node" is a PostgresStore opened as owner, as `serve` opens it; they run concurrently in one event loop,
each with its own connections, so the database sees two clients exactly as with two processes.
"""
from __future__ import annotations

import asyncio
import base64
import os
import random
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from adapters.portal.base import Receipt, Submission
from gateway.config import load_settings
from gateway.encryption import PayloadCipher
from gateway.store import Inbound, PostgresStore, SchemaTooNewError, open_store, postgres_nodes
from gateway.store.postgres_schema import MIGRATIONS
from mappings.model import Document
from tests.store_backends import KEY

RECEIPT = Receipt("TX", "2026-03-12T08:30:00+07:00", "000")


def inbound(control_id: str, ack: bytes = b"ACK") -> Inbound:
    return Inbound("mllp", "HIS|BV", control_id, "ADT^A01", "cid", b"MSH|payload", ack)


def node(dsn: str, lease_seconds: float = 60) -> PostgresStore:
    return PostgresStore(dsn, PayloadCipher(KEY), lease_seconds=lease_seconds, pool_size=4)


async def rows(dsn: str, sql: str, *args: object) -> list[tuple]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def mapped(store: PostgresStore, control_id: str, documents: list[tuple[str, str]]) -> None:
    """A message mapped into version-1 documents (document id, patient) with one submission each."""
    stored = await store.store_inbound(inbound(control_id))
    await store.commit_mapping(
        stored.message_id, [Document(doc, 1, "episode", patient, {"id": doc}) for doc, patient in documents],
        [Submission("bhxh_xml130", f"{doc}:v1", doc, 1, b"<signed/>", "application/xml") for doc, _ in documents])


async def test_nodes_register_and_a_clean_stop_leaves(postgres_dsn: str) -> None:
    a, b = await node(postgres_dsn).open(owner=True), await node(postgres_dsn).open(owner=True)
    try:
        assert sorted(r[0] for r in await rows(postgres_dsn, "SELECT id FROM nodes")) == sorted([a.node, b.node])
    finally:
        await a.close()
    assert [r[0] for r in await rows(postgres_dsn, "SELECT id FROM nodes")] == [b.node]
    await b.close()


async def test_a_retransmission_to_another_node_gets_the_original_ack(postgres_dsn: str) -> None:
    a, b = await node(postgres_dsn).open(owner=True), await node(postgres_dsn).open(owner=True)
    try:
        first = await a.store_inbound(inbound("C1", ack=b"ORIGINAL"))
        again = await b.store_inbound(inbound("C1", ack=b"NEW"))
        assert again.duplicate and again.ack == b"ORIGINAL" and again.message_id == first.message_id
        # The same 100 messages sent to both nodes at the same moment: each kept once, one ACK per message.
        ids = [f"R{number}" for number in range(100)]
        random.shuffle(ids)
        results = await asyncio.gather(*(n.store_inbound(inbound(i, ack=f"ACK-{i}".encode()))
                                         for i in ids for n in (a, b)))
    finally:
        await a.close()
        await b.close()
    by_id: dict[int, set[bytes]] = {}
    for stored in results:
        by_id.setdefault(stored.message_id, set()).add(stored.ack)
    assert len(by_id) == 100 and all(len(acks) == 1 for acks in by_id.values())
    assert sum(not stored.duplicate for stored in results) == 100
    assert await rows(postgres_dsn, "SELECT count(*) FROM messages") == [(101,)]


async def test_one_node_maps_at_a_time_and_another_takes_over_when_it_dies(postgres_dsn: str) -> None:
    """Mapping in acknowledgement order needs one mapper: two would build one episode's versions apart."""
    a, b = await node(postgres_dsn).open(owner=True), await node(postgres_dsn).open(owner=True)
    await asyncio.gather(*(a.store_inbound(inbound(f"C{number}")) for number in range(300)))
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    async def drain(name: str, store: PostgresStore) -> None:
        for _ in range(100):
            claimed[name] += [message.id for message in await store.claim_messages(7)]
            await asyncio.sleep(0)

    try:
        await asyncio.gather(drain("a", a), drain("b", b))
        everything = claimed["a"] + claimed["b"]
        assert len(everything) == len(set(everything)) == 300
        mapper, other = (a, b) if claimed["a"] else (b, a)
        assert not claimed["b" if mapper is a else "a"]  # the other node mapped nothing
        assert mapper.nodes is not None and mapper.nodes.connection is not None
        await rows(postgres_dsn, "SELECT pg_terminate_backend($1, 10000)", mapper.nodes.connection.get_server_pid())
        late = await other.store_inbound(inbound("LATE"))
        assert await mapper.claim_messages(10) == []  # it knows it lost its lock
        assert [message.id for message in await other.claim_messages(10)] == [late.message_id]
    finally:
        await a.close()
        await b.close()


async def test_one_patient_never_has_two_submissions_in_flight_across_nodes(postgres_dsn: str) -> None:
    a, b = await node(postgres_dsn).open(owner=True), await node(postgres_dsn).open(owner=True)
    patients = [f"p{number}" for number in range(4)]
    # Both nodes map at once; a patient's documents go in under its lock, so ids follow commit order.
    # Each message brings three documents of one patient, so neighbouring outbox rows share a patient.
    await asyncio.gather(*(mapped(store, f"M{number}", [(f"D{number}.{k}-{patients[number % 4]}", patients[number % 4])
                                                        for k in range(3)])
                           for number, store in zip(range(12), [a, b] * 6)))
    in_flight: set[str] = set()
    delivered: dict[str, list[int]] = {patient: [] for patient in patients}
    violations: list[str] = []

    async def worker(store: PostgresStore) -> None:
        while claimed := await store.claim_submissions(1):
            [item] = claimed
            patient = item.submission.document_id.split("-")[1]
            if patient in in_flight:
                violations.append(patient)
            in_flight.add(patient)
            await asyncio.sleep(random.random() / 200)  # the portal takes a moment
            in_flight.discard(patient)
            delivered[patient].append(item.id)
            await store.mark_delivered(item.id, RECEIPT)

    try:
        await asyncio.gather(*(worker(store) for store in (a, b, a, b)))
    finally:
        await a.close()
        await b.close()
    assert violations == []
    assert all(len(ids) == 9 and ids == sorted(ids) for ids in delivered.values())


async def test_a_dead_nodes_work_is_taken_over_at_once_a_live_nodes_only_when_its_lease_runs_out(
        postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_nodes, "SWEEP_SECONDS", 0.0)
    dying, hung = node(postgres_dsn, lease_seconds=3600), node(postgres_dsn, lease_seconds=0.5)
    await dying.open(owner=True)
    await hung.open(owner=True)
    survivor = await node(postgres_dsn).open(owner=True)
    try:
        await mapped(survivor, "M1", [("A", "p1"), ("B", "p2")])
        await survivor.store_inbound(inbound("C2"))
        assert len(await dying.claim_messages(1)) == 1  # the dying node maps (it asked first)
        assert len(await dying.claim_submissions(1)) == 1 and len(await hung.claim_submissions(1)) == 1
        assert await survivor.claim_messages(10) == [] and await survivor.claim_submissions(10) == []
        # The dying node's connection ends as with kill -9; the hung node keeps its connection but not its lease.
        assert dying.nodes is not None and dying.nodes.connection is not None
        await rows(postgres_dsn, "SELECT pg_terminate_backend($1, 10000)", dying.nodes.connection.get_server_pid())
        taken_over = await survivor.claim_messages(10), await survivor.claim_submissions(10)
        assert [len(taken) for taken in taken_over] == [1, 1]  # the dying node's at once, not in an hour
        await asyncio.sleep(0.6)
        assert len(await survivor.claim_submissions(10)) == 1  # the hung node's after its lease
        assert {r[0] for r in await rows(postgres_dsn, "SELECT id FROM nodes")} == {hung.node, survivor.node}
    finally:
        for store in (dying, hung, survivor):
            await store.close()


async def test_the_schema_is_versioned_and_a_newer_database_is_refused_untouched(postgres_dsn: str) -> None:
    store = await node(postgres_dsn).open()
    await store.close()
    again = await node(postgres_dsn).open()  # migrating twice changes nothing
    await again.close()
    assert await rows(postgres_dsn, "SELECT version FROM hbgw_schema ORDER BY version") == [
        (version,) for version in range(1, len(MIGRATIONS) + 1)]  # each applied once
    await rows(postgres_dsn, "INSERT INTO hbgw_schema (version) VALUES (99)")
    with pytest.raises(SchemaTooNewError, match="version 99 is newer than this gateway knows"):
        await node(postgres_dsn).open()
    assert await rows(postgres_dsn, "SELECT max(version) FROM hbgw_schema") == [(99,)]


async def test_a_failed_migration_leaves_the_database_as_it_was(postgres_dsn: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = await node(postgres_dsn).open()
    await store.close()
    monkeypatch.setattr("gateway.store.postgres_schema.MIGRATIONS",
                        (*MIGRATIONS, "ALTER TABLE messages ADD COLUMN x integer; BROKEN;"))
    with pytest.raises(Exception, match="cannot open store"):
        await node(postgres_dsn).open()
    assert await rows(postgres_dsn, "SELECT max(version) FROM hbgw_schema") == [(len(MIGRATIONS),)]
    assert await rows(postgres_dsn, "SELECT count(*) FROM information_schema.columns"
                                    " WHERE table_name = 'messages' AND column_name = 'x'") == [(0,)]


async def test_open_store_chooses_postgresql_from_the_settings(postgres_dsn: str) -> None:
    settings = load_settings(None, {"HBGW_STORE__BACKEND": "postgresql", "HBGW_STORE__DSN": postgres_dsn,
                                    "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode()})
    store = await open_store(settings.store, owner=True)
    try:
        assert isinstance(store, PostgresStore)
        stored = await store.store_inbound(inbound("C1"))
        [claimed] = await store.claim_messages(1)
    finally:
        await store.close()
    assert claimed.id == stored.message_id and claimed.payload == b"MSH|payload"


async def test_the_operator_cli_works_on_the_shared_database(postgres_dsn: str) -> None:
    store = await node(postgres_dsn).open()
    try:
        stored = await store.store_inbound(inbound("C1"))
        await store.dead_letter_message(stored.message_id, "PID-3 required")
    finally:
        await store.close()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
    env.update({"HBGW_STORE__BACKEND": "postgresql", "HBGW_STORE__DSN": postgres_dsn,
                "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode()})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "healthbook-gateway"), *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    listed, retried, status = cli("dlq", "list"), cli("dlq", "retry", "inbox:1"), cli("status")
    assert listed.returncode == 0 and "inbox:1" in listed.stdout and "PID-3 required" in listed.stdout
    assert retried.returncode == 0, retried.stderr
    assert status.returncode == 0, status.stderr
    assert postgres_dsn not in status.stdout + status.stderr + listed.stderr + retried.stdout
    assert await rows(postgres_dsn, "SELECT state FROM messages") == [("received",)]
    assert [r[0] for r in await rows(postgres_dsn, "SELECT action FROM operator_actions")] == ["retry"]


async def test_a_database_of_the_first_schema_is_upgraded_and_keeps_its_queued_work(
        postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.store.postgres_schema.MIGRATIONS", MIGRATIONS[:1])
    first = await node(postgres_dsn).open()  # creates the first schema only
    await first.close()
    sealed = PayloadCipher(KEY).seal(b"<signed/>", b"outbox")
    await rows(postgres_dsn, "INSERT INTO outbox (channel, idempotency_key, document_id, version, patient_key,"
                             " content_type, first_received_at, created_at, state, next_attempt_at, body) VALUES"
                             " ('bhxh_xml130', 'D1:v1', 'D1', 1, 'p1', 'application/xml', 1, 1, 'pending', 0, $1)",
               sealed)
    monkeypatch.setattr("gateway.store.postgres_schema.MIGRATIONS", MIGRATIONS)
    upgraded = await node(postgres_dsn).open()
    try:
        [claimed] = await upgraded.claim_submissions(10)
    finally:
        await upgraded.close()
    assert claimed.submission.body == b"<signed/>"  # its body moved to outbox_bodies, still sealed
    assert await rows(postgres_dsn, "SELECT max(version) FROM hbgw_schema") == [(len(MIGRATIONS),)]
