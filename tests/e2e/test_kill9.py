"""Soak: kill -9 the gateway again and again under load; every acknowledged message arrives exactly once.

Several senders (python-hl7's real MLLPClient, one thread each) send ADT^A01 messages, each with its own
visit number, so each acknowledged message becomes exactly one document and one portal key. A sender whose
connection dies resends the same message (same MSH-10) until it gets an answer, as a hospital system does.
A FHIR client does the same with transaction Bundles over HTTP (same Bundle.identifier on a resend), so the
FHIR intake's "2xx only once it is on disk" is held to the same promise.
Meanwhile the gateway process is killed with SIGKILL at random moments and restarted, and every third time
only its mapping workers are killed, as the OOM killer would, while it keeps serving. At the end the
outbox must drain, and the portal emulator (a separate process that outlives every kill) must have
accepted every acknowledged message's key, none of them twice, and nothing we did not send.
Duration: HEALTHBOOK_SOAK_SECONDS (20 s; CI sets 15).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from hl7.client import MLLPClient

from mappings.fhir_in import map_fhir
from mappings.hl7v2 import map_message
from tests.adapters.test_fhir_api import corpus_bundle
from tests.conftest import free_port
from tests.e2e.harness import GatewayProcess, http_json, mapping_workers, wait_until
from tests.gateway.intake_harness import ack_segments, hl7

pytestmark = pytest.mark.slow

SOAK_SECONDS = float(os.environ.get("HEALTHBOOK_SOAK_SECONDS", "20"))
SENDERS = 4
SEND_INTERVAL = 0.1  # per sender: keeps the total within what mapping and signing drain in the budget
FHIR_INTERVAL = 0.2  # a Bundle costs more to validate and map than an ADT
DRAIN_SECONDS = 60.0


class Sender(threading.Thread):
    """One hospital interface: sends its messages in order, resending each until it is answered."""

    def __init__(self, number: int, gateway: GatewayProcess, stop: threading.Event) -> None:
        super().__init__(name=f"sender-{number}", daemon=True)
        self.number = number
        self.gateway = gateway
        self.stop = stop
        self.sent: dict[str, str] = {}  # control id -> message, everything ever put on the wire
        self.acked: list[str] = []
        self.resends = 0

    def run(self) -> None:
        sequence = 0
        client: MLLPClient | None = None
        while not self.stop.is_set():
            control_id = f"S{self.number}N{sequence:05d}"
            text = message(control_id, sequence * SENDERS + self.number)
            self.sent[control_id] = text
            while not self.stop.is_set():
                try:
                    client = client or self._connect()
                    answer = client.send_message(text.encode("utf-8"))
                    if not answer:
                        raise ConnectionError("closed without an answer")
                except OSError:
                    if client is not None:
                        client.close()
                    client = None
                    self.resends += 1
                    time.sleep(0.1)
                    continue
                if ack_segments(answer.strip(b"\x0b\x1c\r"))["MSA"][0][1] == "AA":
                    self.acked.append(control_id)
                break
            sequence += 1
            time.sleep(SEND_INTERVAL)
        if client is not None:
            client.close()

    def _connect(self) -> MLLPClient:
        client = MLLPClient("127.0.0.1", self.gateway.mllp_port)
        client.socket.settimeout(10)
        return client


class FhirSender(threading.Thread):
    """One FHIR client: posts its transaction Bundles in order, resending each until it gets a 2xx."""

    def __init__(self, gateway: GatewayProcess, stop: threading.Event) -> None:
        super().__init__(name="fhir-sender", daemon=True)
        self.gateway = gateway
        self.stop = stop
        self.sent: list[str] = []
        self.acked: list[str] = []
        self.refused: list[tuple[str, int]] = []
        self.resends = 0

    def run(self) -> None:
        sequence = 0
        while not self.stop.is_set():
            control_id = f"F{sequence:05d}"
            body = json.dumps(bundle(control_id, sequence)).encode("utf-8")
            self.sent.append(control_id)
            while not self.stop.is_set():
                request = urllib.request.Request(f"{self.gateway.http_url}/fhir", data=body, method="POST",
                                                 headers={"Content-Type": "application/fhir+json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status = response.status
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError:
                    status = 0
                if status in (200, 201):
                    self.acked.append(control_id)
                    break
                if 0 < status < 500:  # a refusal is final: resending cannot help, and it is a test failure
                    self.refused.append((control_id, status))
                    break
                self.resends += 1
                time.sleep(0.1)
            sequence += 1
            time.sleep(FHIR_INTERVAL)


def bundle(control_id: str, sequence: int) -> dict[str, Any]:
    """The corpus visit as its own episode (visit number = control id) of one of many patients."""
    sent = deepcopy(CORPUS_BUNDLE)
    sent["identifier"]["value"] = control_id
    cccd = f"048190{sequence % 1000:06d}"
    for entry in sent["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["identifier"][0]["value"] = cccd
            entry["request"]["url"] = f"Patient?identifier=urn:hbgw:id:cccd|{cccd}"
        elif resource["resourceType"] == "Encounter":
            resource["identifier"][0]["value"] = control_id
    return sent


def fhir_key(control_id: str) -> str:
    """The portal key of a FHIR sender's Bundle (checked against the real mapping at the start)."""
    return f"pkdk-danang_{control_id}:v1"


def fhir_keys(control_ids: list[str]) -> set[str]:
    """Each Bundle's episode, and its XML0 check-in (the visit has chargeable items), as the emulator keys them."""
    return {key for control_id in control_ids for key in (fhir_key(control_id), f"XML0/{fhir_key(control_id)}")}


CORPUS_BUNDLE = corpus_bundle()


def message(control_id: str, sequence: int) -> str:
    """An admission whose visit number (PV1-19) is its control id, so it makes a document of its own,
    for one of many patients, so that per-patient ordering does not serialise the whole soak."""
    return hl7(control_id, pid3=f"040085{sequence % 1000:06d}^^^BCA^NNVNM").replace("|VV1", f"|V{control_id}")


def document_key(text: str) -> str:
    """The portal key a message produces, by the real mapping: its episode document, first version."""
    [fragment] = map_message(text).fragments
    return f"{fragment.document_id}:v1"


def expected_key(control_id: str) -> str:
    """document_key without the cost of mapping (checked against it at the start of the test)."""
    return f"4000000000123_V{control_id}:v1"


def start_emulator(port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([str(Path(sys.executable).parent / "healthbook-gateway"), "portal-emulator",
                                "--port", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: http_json(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1.0), 30, what="emulator")
    return process


def test_every_acknowledged_message_arrives_exactly_once_across_kill9(tmp_path: Path) -> None:
    assert document_key(message("S9N00001", 7)) == expected_key("S9N00001")
    [fragment] = map_fhir(bundle("F00007", 7)).fragments
    assert f"{fragment.document_id}:v1" == fhir_key("F00007")
    emulator_port = free_port()
    emulator = start_emulator(emulator_port, tmp_path / "emulator.log")
    gateway = GatewayProcess(tmp_path / "gateway", command="serve", emulator_port=emulator_port,
                             extra_env={"HBGW_EMULATOR__ENABLED": "false"})
    stop = threading.Event()
    senders = [Sender(n, gateway, stop) for n in range(SENDERS)]
    fhir = FhirSender(gateway, stop)
    kills = worker_kills = 0
    try:
        gateway.start()
        for sender in senders:
            sender.start()
        fhir.start()
        deadline = time.monotonic() + SOAK_SECONDS
        while time.monotonic() < deadline or kills < 3:  # a short budget still kills 3 times, one a worker
            time.sleep(random.uniform(1.0, 3.0))
            if kills % 3 == 2:  # the OOM killer's usual choice: a worker process (mapping, signing, delivery)
                for worker in mapping_workers(gateway.process.pid):
                    os.kill(worker, signal.SIGKILL)
                    worker_kills += 1
            else:
                gateway.kill9()
                gateway.start()
            kills += 1
        stop.set()
        for sender in senders:
            sender.join(timeout=30)
        fhir.join(timeout=30)
        wait_until(lambda: gateway.work_left() == 0, DRAIN_SECONDS, interval=0.5, what="the outbox to drain")
        stats = http_json(f"{gateway.emulator_url}/_emulator/stats")
    finally:
        stop.set()
        gateway.stop()
        emulator.terminate()
        emulator.wait(timeout=30)

    sent = [control_id for sender in senders for control_id in sender.sent]
    acked = [control_id for sender in senders for control_id in sender.acked]
    expected = {expected_key(control_id) for control_id in acked} | fhir_keys(fhir.acked)
    accepted = stats["accepted_keys"]
    print(f"soak {SOAK_SECONDS:.0f}s: {kills} kills ({worker_kills} of worker processes), {len(sent)} sent,"
          f" {len(acked)} acknowledged, {sum(s.resends for s in senders)} resends; FHIR {len(fhir.sent)} sent,"
          f" {len(fhir.acked)} acknowledged, {fhir.resends} resends; {len(accepted)} accepted by the portal,"
          f" {stats['duplicates']} duplicate submissions answered idempotently")
    assert kills >= 3 and worker_kills >= 1 and len(acked) >= 50  # it really ran under load across crashes
    assert len(fhir.acked) >= 3 and fhir.refused == []  # FHIR too was acknowledged across the crashes
    assert len(acked) == len(set(acked)) and len(fhir.acked) == len(set(fhir.acked))
    assert [key for key, count in Counter(accepted).items() if count > 1] == []  # nothing arrived twice
    assert sorted(expected - set(accepted)) == []  # nothing acknowledged was lost
    assert set(accepted) <= {expected_key(control_id) for control_id in sent} | fhir_keys(
        fhir.sent)  # nothing arrived unsent
