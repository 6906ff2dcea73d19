"""What an operator sees of a running gateway: version, backlog at start and stop, per-sender and host metrics."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from gateway.config import SenderRule
from gateway.encryption import PayloadCipher
from gateway.metrics import Metrics
from gateway.store import Inbound, SqliteStore
from tests.conftest import CORPUS
from tests.e2e.harness import BIN, GatewayProcess, http_text, wait_until

HEALTH_CHECK = CORPUS / "hl7v2" / "oru_r01_health_check.hl7"
SENDERS = [{"name": "his-checkup", "sending_application": "KSK_PKDK", "silent_after_minutes": 30}]


def _samples(metrics_text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics_text) for sample in family.samples}


def _log_events(gateway: GatewayProcess, event: str) -> list[dict]:
    events = []
    for line in gateway.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and json.loads(line).get("event") == event:
            events.append(json.loads(line))
    return events


def _fail_the_portal(gateway: GatewayProcess) -> None:
    request = urllib.request.Request(f"{gateway.emulator_url}/_emulator/faults", method="POST",
                                     data=json.dumps({"fail_rate": 1.0}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert json.loads(answer.read())["fail_rate"] == 1.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A demo gateway that names one sender, whose portal fails: what it is sent stays pending."""
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"),
                             extra_env={"HBGW_MLLP__ALLOWED_SENDERS": json.dumps(SENDERS)})
    try:
        process.start()
        _fail_the_portal(process)
        assert "MSA|AA" in process.mllp_send(HEALTH_CHECK)
        yield process
    finally:
        process.stop()


def test_version_is_the_installed_one() -> None:
    result = subprocess.run([str(BIN / "healthbook-gateway"), "--version"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == f"healthbook-gateway {version('healthbook-gateway')}"


def test_messages_count_under_the_configured_sender_with_its_silence_limit(gateway: GatewayProcess) -> None:
    samples = _samples(http_text(f"{gateway.http_url}/metrics"))
    sender = frozenset({("source", "mllp"), ("sender", "his-checkup")})
    assert samples[("healthbook_gateway_sender_messages_total", sender | {("outcome", "accepted")})] == 1
    assert samples[("healthbook_gateway_sender_messages_total", sender | {("outcome", "refused")})] == 0
    assert samples[("healthbook_gateway_sender_silence_limit_seconds", sender)] == 1800
    assert {dict(labels)["sender"] for name, labels in samples if name.startswith("healthbook_gateway_sender_")} \
        == {"his-checkup"}, "no series for senders the settings do not name"


def test_process_database_and_disk_metrics_carry_real_values(gateway: GatewayProcess) -> None:
    samples = _samples(http_text(f"{gateway.http_url}/metrics"))
    database = gateway.workdir / "var" / "gateway.db"
    assert samples[("healthbook_gateway_store_size_bytes", frozenset({("file", "database")}))] > 0
    assert ("healthbook_gateway_store_size_bytes", frozenset({("file", "wal")})) in samples
    free = samples[("healthbook_gateway_store_free_disk_bytes", frozenset())]
    disk = os.statvfs(database.parent)
    assert 0 < free <= disk.f_blocks * disk.f_frsize
    assert samples[("process_resident_memory_bytes", frozenset())] > 0
    assert any(name == "python_info" and ("implementation", "CPython") in labels for name, labels in samples)


def test_stop_and_start_log_the_backlog(gateway: GatewayProcess) -> None:
    wait_until(lambda: gateway.queue_depths().get(("outbox", "pending"), 0) >= 1, 60,
               what="the health check's document pending while the portal fails")
    assert gateway.stop() == 0
    [stopped] = _log_events(gateway, "gateway_stopped")
    assert stopped["backlog_pending"] >= 1 and stopped["backlog_dead"] == 0
    gateway.start()
    started = _log_events(gateway, "gateway_started")
    assert len(started) == 2
    assert started[0]["backlog_pending"] == 0 and started[1]["backlog_pending"] == stopped["backlog_pending"]
    assert set(started[1]) >= {"backlog_received", "backlog_pending", "backlog_dead", "version"}


async def test_dead_letters_count_in_the_oldest_pending_age(tmp_path: Path) -> None:
    """A refused record misses the 24-hour deadline too: the deadline alerts must see it."""
    store = await SqliteStore(tmp_path / "gw.db", PayloadCipher(b"k" * 32)).open()
    try:
        assert await store.oldest_pending_received_at() is None
        stored = await store.store_inbound(Inbound("mllp", "HIS|BV", "C1", "ADT^A01", "cid", b"MSH|x", b"ACK"))
        await store.dead_letter_message(stored.message_id, "PID-3 required")
        with sqlite3.connect(tmp_path / "gw.db") as db:
            [(received_at,)] = db.execute("SELECT received_at FROM messages").fetchall()
        assert await store.oldest_pending_received_at() == received_at
    finally:
        await store.close()


def test_sender_labels_stay_within_the_configured_senders() -> None:
    metrics = Metrics()
    metrics.watch_senders("mllp", [("his-adt", 600.0), ("his-adt", 1200.0), ("lab", 0.0)])
    metrics.count_sender("mllp", "his-adt", accepted=False)
    metrics.count_sender("mllp", "KSK_PKDK", accepted=True)  # not named in the settings
    metrics.count_sender("fhir", "his-adt", accepted=True)  # named for MLLP only
    value = metrics.registry.get_sample_value
    assert value("healthbook_gateway_sender_messages_total", {"source": "mllp", "sender": "his-adt",
                                                               "outcome": "refused"}) == 1
    assert value("healthbook_gateway_sender_messages_total", {"source": "mllp", "sender": "other",
                                                               "outcome": "accepted"}) == 1
    assert value("healthbook_gateway_sender_messages_total", {"source": "fhir", "sender": "other",
                                                               "outcome": "accepted"}) == 1
    assert value("healthbook_gateway_sender_messages_total", {"source": "mllp", "sender": "lab",
                                                               "outcome": "accepted"}) == 0
    assert value("healthbook_gateway_sender_silence_limit_seconds", {"source": "mllp", "sender": "his-adt"}) == 1200
    assert value("healthbook_gateway_sender_silence_limit_seconds", {"source": "mllp", "sender": "lab"}) is None


def test_store_file_metrics_follow_the_files(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    database.write_bytes(b"d" * 4096)
    metrics = Metrics()
    metrics.record_store_files(database)
    value = metrics.registry.get_sample_value
    assert value("healthbook_gateway_store_size_bytes", {"file": "database"}) == 4096
    assert value("healthbook_gateway_store_size_bytes", {"file": "wal"}) == 0
    (tmp_path / "gateway.db-wal").write_bytes(b"w" * 1000)
    metrics.record_store_files(database)
    assert value("healthbook_gateway_store_size_bytes", {"file": "wal"}) == 1000
    assert value("healthbook_gateway_store_free_disk_bytes") > 0


def test_a_sender_name_must_be_a_short_label_and_not_other() -> None:
    assert SenderRule(sending_application="KSK_PKDK").label == "KSK_PKDK"
    assert SenderRule(name="his-adt", sending_application="KSK_PKDK").label == "his-adt"
    assert SenderRule(address="10.0.0.0/8").label == "10.0.0.0/8"
    for bad in ("his adt", "other", "x" * 65):
        with pytest.raises(ValidationError):
            SenderRule(name=bad)
