"""The listeners (MLLP, and the FHIR API with the operations endpoints) run on an event loop of their own
(gateway/listener_loop.py): a sender's acknowledgement, and a scrape, need nothing from the main loop, where
the pipeline works, and the message stored still wakes the pipeline on the main loop at once."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway import app
from gateway.app import Gateway
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from tests.adapters.test_fhir_api import FHIR_JSON, corpus_bundle
from tests.e2e.harness import gateway_in_process
from tests.gateway.intake_harness import ack_segments, hl7

SLOW_POLL = "60"  # the pipeline looks for new messages on its own only this rarely: only the signal wakes it


@pytest.fixture
async def gateway(tmp_path: Path):
    async with gateway_in_process(tmp_path, HBGW_PIPELINE__SIGNING_PROCESSES="0",
                                  HBGW_PIPELINE__POLL_INTERVAL_SECONDS=SLOW_POLL) as running:
        yield running


def send_and_read_ack(port: int, message: str) -> bytes:
    """A plain blocking sender, as a HIS is: one framed message, one framed answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(START_BLOCK + message.encode() + END_BLOCK)
        answer = b""
        while not answer.endswith(END_BLOCK):
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer[1:-2]


def http_status(url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=FHIR_JSON if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_an_acknowledgement_needs_nothing_from_the_main_loop(gateway: Gateway,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "MAIN_LOOP_PATIENCE", 0.5)
    assert gateway.mllp is not None
    port, base = gateway.mllp.port, f"http://127.0.0.1:{gateway.http_port}"
    answers: list[object] = []
    answered = threading.Event()

    def senders() -> None:
        try:
            answers.append(send_and_read_ack(port, hl7("LOOP1")))
            answers.append(http_status(f"{base}/fhir", json.dumps(corpus_bundle()).encode()))
            answers.append(http_status(f"{base}/metrics"))
            answers.append(http_status(f"{base}/healthz"))  # alive means both loops answer: not while held
        finally:
            answered.set()

    threading.Thread(target=senders).start()
    # The main loop is held here, as a long pipeline step would hold it, until the senders have their answers:
    # one that needed the main loop would not come before the wait gives up.
    held = answered.wait(20)
    assert held and len(answers) == 4
    assert ack_segments(answers[0])["MSA"][0][1:3] == ["AA", "LOOP1"]  # type: ignore[arg-type]
    assert answers[1:] == [200, 200, 503]
    assert await asyncio.to_thread(http_status, f"{base}/healthz") == 200  # the main loop answers again

    assert gateway.store is not None
    deadline = time.monotonic() + 20  # far below the 60 s poll: the stored message woke the pipeline
    while (await gateway.store.queue_depths()).get(("inbox", "mapped"), 0) < 2:
        assert time.monotonic() < deadline, "the stored message did not wake the pipeline on the main loop"
        await asyncio.sleep(0.05)


async def test_a_stopped_gateway_closes_the_listener_and_its_loop(tmp_path: Path) -> None:
    async with gateway_in_process(tmp_path, HBGW_PIPELINE__SIGNING_PROCESSES="0") as running:
        assert running.mllp is not None and running.http_port is not None
        ports = running.mllp.port, running.http_port
        assert ack_segments(await asyncio.to_thread(send_and_read_ack, ports[0], hl7("STOP1")))["MSA"][0][1] == "AA"
    assert not [thread for thread in threading.enumerate() if thread.name == "listeners"]
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
