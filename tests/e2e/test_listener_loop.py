"""The MLLP listener runs on an event loop of its own (gateway/listener_loop.py): a sender's acknowledgement
needs nothing from the main loop, where the pipeline works, and the message it stored still wakes the
pipeline on the main loop at once."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from gateway.app import Gateway
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from tests.e2e.harness import gateway_in_process
from tests.gateway.intake_harness import ack_segments, hl7

SLOW_POLL = "60"  # the pipeline looks for new messages on its own only this rarely: only the signal wakes it


@pytest.fixture
async def gateway(tmp_path: Path):
    async with gateway_in_process(tmp_path, HBGW_HTTP__ENABLED="false", HBGW_PIPELINE__SIGNING_PROCESSES="0",
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


async def test_an_acknowledgement_needs_nothing_from_the_main_loop(gateway: Gateway) -> None:
    assert gateway.mllp is not None
    port = gateway.mllp.port
    acks: list[bytes] = []
    answered = threading.Event()

    def sender() -> None:
        try:
            acks.append(send_and_read_ack(port, hl7("LOOP1")))
        finally:
            answered.set()

    threading.Thread(target=sender).start()
    # The main loop is held here, as a long pipeline step would hold it, until the sender has its answer: an
    # acknowledgement that needed the main loop would not come before the wait gives up.
    held = answered.wait(20)
    assert held and ack_segments(acks[0])["MSA"][0][1:3] == ["AA", "LOOP1"]

    assert gateway.store is not None
    deadline = time.monotonic() + 20  # far below the 60 s poll: the stored message woke the pipeline
    while (await gateway.store.queue_depths()).get(("inbox", "mapped"), 0) < 1:
        assert time.monotonic() < deadline, "the stored message did not wake the pipeline on the main loop"
        await asyncio.sleep(0.05)


async def test_a_stopped_gateway_closes_the_listener_and_its_loop(tmp_path: Path) -> None:
    async with gateway_in_process(tmp_path, HBGW_HTTP__ENABLED="false",
                                  HBGW_PIPELINE__SIGNING_PROCESSES="0") as running:
        assert running.mllp is not None
        port = running.mllp.port
        assert ack_segments(await asyncio.to_thread(send_and_read_ack, port, hl7("STOP1")))["MSA"][0][1] == "AA"
    assert not [thread for thread in threading.enumerate() if thread.name == "mllp-listener"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
