"""The queue commands run as the real CLI in a subprocess against a real store file."""
from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.portal.base import Submission
from gateway.encryption import PayloadCipher
from gateway.store import Inbound, SqliteStore
from mappings.model import Document
from tests.gateway.intake_harness import hl7

KEY = b"q" * 32
CLI = Path(sys.executable).parent / "healthbook-gateway"
PAYLOAD = b"MSH|^~\\&|HIS|BV|||20260312||ADT^A01|C1|P|2.5\rPID|1||040085012345^^^BCA^NNVNM||NGUYEN^AN\r"


def run_cli(store_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
    env.update({"HBGW_STORE__PATH": str(store_path),
                "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode()})
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def doc(doc_id: str, version: int) -> Document:
    return Document(doc_id, version, "episode", "patient-key", {"resourceType": "Bundle"})


def sub(doc_id: str, version: int) -> Submission:
    return Submission("bhxh_xml130", f"{doc_id}:v{version}", doc_id, version, b"<GIAMDINHHS/>", "application/xml")


@pytest.fixture
async def store_file(tmp_path: Path) -> Path:
    """inbox:1 dead (mapping refused), inbox:2 mapped into D1 v1 (outbox:1 dead) and D2 v1 (outbox:2 dead),
    inbox:3 mapped into D2 v2 (outbox:3 dead, newer than outbox:2)."""
    path = tmp_path / "gateway.db"
    store = await SqliteStore(path, PayloadCipher(KEY)).open()
    ids = [(await store.store_inbound(Inbound("mllp", "HIS|BV", f"C{n}", "ADT^A01", "cid", PAYLOAD, b"ACK"))).message_id
           for n in (1, 2, 3)]
    await store.dead_letter_message(ids[0], "PID-3 cccd-birth-mismatch: CCCD 040085012345 does not agree with PID-7")
    await store.commit_mapping(ids[1], [doc("D1", 1), doc("D2", 1)], [sub("D1", 1), sub("D2", 1)])
    await store.commit_mapping(ids[2], [doc("D2", 2)], [sub("D2", 2)])
    for outbox_id in (1, 2, 3):
        await store.dead_letter_submission(outbox_id, "maKetQua 401: MA_LK already closed")
    await store.close()
    return path


def test_status_counts_both_queues(store_file: Path) -> None:
    result = run_cli(store_file, "status")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["inbox"] == {"dead": 1, "mapped": 2} and status["outbox"] == {"dead": 3}


def test_dlq_list_shows_both_queues_without_personal_data(store_file: Path) -> None:
    table = run_cli(store_file, "dlq", "list")
    listing = json.loads(run_cli(store_file, "dlq", "list", "--json").stdout)
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["ITEM", "inbox:1", "outbox:1", "outbox:2",
                                                                       "outbox:3"]
    assert "040085012345" not in table.stdout and "NGUYEN" not in table.stdout
    assert "CCCD [redacted] does not agree" in table.stdout
    assert [(i["ref"], i["kind"], i["subject"], i["source"]) for i in listing] == [
        ("inbox:1", "ADT^A01", "HIS|BV", ""), ("outbox:1", "bhxh_xml130", "D1:v1", "inbox:2"),
        ("outbox:2", "bhxh_xml130", "D2:v1", "inbox:2"), ("outbox:3", "bhxh_xml130", "D2:v2", "inbox:3")]


def test_dlq_show_gives_the_full_reason_and_the_payload_only_when_asked(store_file: Path) -> None:
    plain = run_cli(store_file, "dlq", "show", "inbox:1")
    with_payload = run_cli(store_file, "dlq", "show", "inbox:1", "--payload")
    assert plain.returncode == 0 and with_payload.returncode == 0, with_payload.stderr
    assert "CCCD 040085012345 does not agree" in json.loads(plain.stdout)["reason"]
    assert "NGUYEN" not in plain.stdout
    assert "PID|1||040085012345^^^BCA^NNVNM||NGUYEN^AN\n" in with_payload.stdout
    assert "audit" in with_payload.stderr
    assert rows(store_file, "SELECT action, item FROM operator_actions") == [("show-payload", "inbox:1")]


def test_dlq_retry_puts_items_back_once(store_file: Path) -> None:
    inbox = run_cli(store_file, "dlq", "retry", "inbox:1")
    outbox = run_cli(store_file, "dlq", "retry", "outbox:1")
    assert inbox.returncode == 0 and outbox.returncode == 0, inbox.stderr + outbox.stderr
    assert rows(store_file, "SELECT state, attempts, reason FROM messages WHERE id = 1") == [("received", 0, None)]
    again = run_cli(store_file, "dlq", "retry", "inbox:1")
    assert again.returncode == 1 and "inbox:1 is received, not dead" in again.stderr
    assert rows(store_file, "SELECT action, item, detail FROM operator_actions ORDER BY id") == [
        ("retry", "inbox:1", "inbox:1 re-queued"), ("retry", "outbox:1", "inbox:2 re-queued")]


def test_retrying_a_refused_submission_maps_and_signs_its_message_again(store_file: Path) -> None:
    """The signed body may carry the very mistake (certificate, facility code) the operator just fixed."""
    result = run_cli(store_file, "dlq", "retry", "outbox:1")
    assert result.returncode == 0 and "inbox:2 queued to be mapped and signed again" in result.stdout
    assert rows(store_file, "SELECT state, reason FROM outbox WHERE id = 1") == [
        ("superseded", "rebuilt from inbox:2 by dlq retry")]
    assert rows(store_file, "SELECT state FROM messages WHERE id = 2") == [("received",)]


def test_retrying_a_submission_whose_message_was_purged_points_to_replay(store_file: Path) -> None:
    with sqlite3.connect(store_file) as db:
        db.execute("UPDATE messages SET payload = NULL WHERE id = 2")
    result = run_cli(store_file, "dlq", "retry", "outbox:1")
    assert result.returncode == 1 and "purged by the retention policy" in result.stderr and "replay" in result.stderr
    assert rows(store_file, "SELECT state FROM outbox WHERE id = 1") == [("dead",)]


def test_dlq_retry_refuses_an_older_version_than_one_already_queued(store_file: Path) -> None:
    result = run_cli(store_file, "dlq", "retry", "outbox:2")
    assert result.returncode == 1 and "older version of its document than outbox:3" in result.stderr
    assert rows(store_file, "SELECT state FROM outbox WHERE id = 2") == [("dead",)]


def test_dlq_discard_keeps_the_item_as_audit(store_file: Path) -> None:
    result = run_cli(store_file, "dlq", "discard", "outbox:2", "--note", "superseded by v2 at the portal")
    assert result.returncode == 0, result.stderr
    assert rows(store_file, "SELECT state, reason FROM outbox WHERE id = 2") == [
        ("discarded", "maKetQua 401: MA_LK already closed")]
    assert rows(store_file, "SELECT action, item, detail FROM operator_actions") == [
        ("discard", "outbox:2", "superseded by v2 at the portal")]
    listed = [i["ref"] for i in json.loads(run_cli(store_file, "dlq", "list", "--json").stdout)]
    everything = json.loads(run_cli(store_file, "dlq", "list", "--json", "--all").stdout)
    assert "outbox:2" not in listed
    assert ("outbox:2", "discarded") in [(i["ref"], i["state"]) for i in everything]


@pytest.mark.parametrize("item, message", [("inbox-1", "expected inbox:ID or outbox:ID"),
                                           ("outbox:99", "there is no item outbox:99")])
def test_bad_item_names_are_refused_with_a_reason(store_file: Path, item: str, message: str) -> None:
    result = run_cli(store_file, "dlq", "show", item)
    assert result.returncode == 1 and message in result.stderr


def test_a_missing_store_is_named_and_not_created(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "nowhere" / "gateway.db", "dlq", "list")
    assert result.returncode == 1 and "no store at" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_replay_ingests_a_corrected_file_through_the_screen_once(store_file: Path, tmp_path: Path) -> None:
    corrected, still_wrong = tmp_path / "corrected.hl7", tmp_path / "mixed.hl7"
    corrected.write_text(hl7("C1", terminator="\n"), encoding="utf-8")
    still_wrong.write_text(hl7("C1", terminator="\n") + hl7("C9", pid3="", terminator="\n"), encoding="utf-8")
    first = run_cli(store_file, "replay", str(corrected))
    mixed = run_cli(store_file, "replay", str(still_wrong))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["message 1 (C1): AA stored as inbox:4",
                                         "replayed 1 messages: 1 stored, 0 duplicates, 0 refused"]
    assert "replaying: 1/1" in first.stderr
    assert mixed.returncode == 1
    assert mixed.stdout.splitlines() == ["message 1 (C1): AA already replayed as inbox:4",
                                         ("message 2 (C9): AE refused: PID-3 required: PID-3 needs a CCCD (authority"
                                          " BCA, type NNVNM) or a BHYT card (type HC); a medical record number alone"
                                          " is not enough"),
                                         "replayed 2 messages: 0 stored, 1 duplicates, 1 refused"]
    assert rows(store_file, "SELECT source, state FROM messages WHERE id = 4") == [("replay", "received")]
    (control_id,) = rows(store_file, "SELECT control_id FROM messages WHERE id = 4")[0]
    assert control_id.startswith("C1~replay:"), "a replay keeps its control id, to be found by it"
    assert rows(store_file, "SELECT action, item, detail FROM operator_actions") == [
        ("replay", "inbox:4", "from file corrected.hl7")]


def test_a_replay_run_again_after_a_busy_store_still_leaves_its_audit_record(store_file: Path,
                                                                              tmp_path: Path) -> None:
    """A busy store met after a message was stored but before its audit record makes the CLI run the replay
    again whole (queue_cli._run): the second run finds the message a duplicate and must still audit it once."""
    corrected = tmp_path / "corrected.hl7"
    corrected.write_text(hl7("C1", terminator="\n"), encoding="utf-8")
    assert run_cli(store_file, "replay", str(corrected)).returncode == 0
    with sqlite3.connect(store_file) as db:  # as if the first run stopped between the two writes
        db.execute("DELETE FROM operator_actions")
    again = run_cli(store_file, "replay", str(corrected))
    once_more = run_cli(store_file, "replay", str(corrected))
    assert again.returncode == 0 and once_more.returncode == 0, again.stderr + once_more.stderr
    assert rows(store_file, "SELECT action, item, detail FROM operator_actions") == [
        ("replay", "inbox:4", "from file corrected.hl7")]


def test_replay_of_a_missing_file_says_so(store_file: Path, tmp_path: Path) -> None:
    result = run_cli(store_file, "replay", str(tmp_path / "absent.hl7"))
    assert result.returncode == 1 and "cannot read" in result.stderr and "absent.hl7" in result.stderr


def test_dlq_show_prints_the_attempt_history(store_file: Path) -> None:
    shown = json.loads(run_cli(store_file, "dlq", "show", "outbox:1").stdout)
    assert [(a["outcome"], a["reason"]) for a in shown["attempts_history"]] == [
        ("dead", "maKetQua 401: MA_LK already closed")]


def test_the_payload_of_a_refused_submission_is_the_message_to_correct_and_replay(store_file: Path) -> None:
    result = run_cli(store_file, "dlq", "show", "outbox:1", "--payload")
    assert result.returncode == 0, result.stderr
    assert "PID|1||040085012345^^^BCA^NNVNM||NGUYEN^AN\n" in result.stdout
    assert "inbox:2, the HL7 message outbox:1 was built from" in result.stderr
    assert rows(store_file, "SELECT action, item FROM operator_actions") == [("show-payload", "inbox:2")]


def test_dlq_retry_takes_several_items_and_reports_each(store_file: Path) -> None:
    result = run_cli(store_file, "dlq", "retry", "inbox:1", "outbox:2", "outbox:3")
    assert result.returncode == 1
    assert "inbox:1: inbox:1 queued to be mapped" in result.stdout
    assert "outbox:3: inbox:3 queued to be mapped" in result.stdout
    assert "error: outbox:2: outbox:2 is an older version" in result.stderr
    assert "2 of 3 re-queued" in result.stdout
    assert rows(store_file, "SELECT id, state FROM outbox ORDER BY id") == [
        (1, "dead"), (2, "dead"), (3, "superseded")]


def test_dlq_discard_by_filter_with_a_dry_run_first(store_file: Path) -> None:
    dry = run_cli(store_file, "dlq", "discard", "--queue", "outbox", "--reason", "ma_lk already", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.split() == ["outbox:1", "outbox:2", "outbox:3"]
    assert rows(store_file, "SELECT count(*) FROM outbox WHERE state = 'dead'") == [(3,)]
    done = run_cli(store_file, "dlq", "discard", "--queue", "outbox", "--note", "test records")
    assert done.returncode == 0 and "3 of 3 discarded" in done.stdout, done.stderr
    assert rows(store_file, "SELECT count(*) FROM operator_actions WHERE action = 'discard'") == [(3,)]
    nothing = run_cli(store_file, "dlq", "retry")
    assert nothing.returncode == 1 and "name the items" in nothing.stderr


def test_retry_now_makes_a_channels_waiting_submissions_due(store_file: Path) -> None:
    with sqlite3.connect(store_file) as db:
        db.execute("UPDATE outbox SET state = 'pending', next_attempt_at = 4102444800 WHERE id IN (1, 3)")
    result = run_cli(store_file, "retry-now", "bhxh_xml130")
    assert result.returncode == 0 and "bhxh_xml130: 2 pending submissions due now" in result.stdout, result.stderr
    assert rows(store_file, "SELECT count(*) FROM outbox WHERE next_attempt_at > 4000000000") == [(0,)]
    assert rows(store_file, "SELECT action, item FROM operator_actions") == [("retry-now", "channel:bhxh_xml130")]
    unknown = run_cli(store_file, "retry-now", "nowhere")
    assert unknown.returncode == 1 and "bhxh_xml130" in unknown.stderr


def test_reading_commands_answer_while_another_process_holds_the_write_lock(store_file: Path) -> None:
    """A gateway writing a backlog holds the lock; status and dlq list must not wait for it (nor migrate)."""
    holder = sqlite3.connect(store_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        status = run_cli(store_file, "status")
        listing = run_cli(store_file, "dlq", "list")
        shown = run_cli(store_file, "dlq", "show", "outbox:1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for result in (status, listing, shown):
        assert result.returncode == 0, result.stderr
        assert "locked" not in result.stderr and "Traceback" not in result.stderr
    assert json.loads(status.stdout)["outbox"] == {"dead": 3}


def test_a_change_waits_politely_for_a_busy_store_then_goes_through(store_file: Path) -> None:
    """Another process holds the write lock past the store's own wait: one line, a wait, then success
    once the lock is let go (released here only after the command said it is waiting)."""
    holder = sqlite3.connect(store_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HBGW_")}
    env.update({"HBGW_STORE__PATH": str(store_file), "HBGW_STORE__ENCRYPTION_KEY": base64.b64encode(KEY).decode()})
    command = subprocess.Popen([str(CLI), "dlq", "retry", "inbox:1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert command.stderr is not None
        said = ""
        while "the store is busy" not in said:
            line = command.stderr.readline()
            assert line, f"the command ended without waiting: {said}"
            said += line
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0, err
    assert "Traceback" not in said + err and "1 of 1 re-queued" in out
    assert rows(store_file, "SELECT state FROM messages WHERE id = 1") == [("received",)]
