"""1,000 hostile connections from one host (idle, or dribbling a frame or a request head) against the real
gateway's two listeners: other senders are still served, and the stalled connections are closed."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from tests.adapters.test_fhir_api import FHIR_JSON, corpus_bundle, post
from tests.e2e.harness import gateway_in_process
from tests.gateway.intake_harness import ack_segments, exchange, hl7
from tests.tls_certs import make_pki

HOSTILE = 1000
ATTACKER = "127.0.0.2"  # another loopback address: the per-host limit tells it from the real senders
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def gateway(tmp_path: Path):
    async with gateway_in_process(tmp_path, HBGW_MLLP__FRAME_TIMEOUT_SECONDS="2",
                                  HBGW_HTTP__REQUEST_TIMEOUT_SECONDS="2") as running:
        yield running


async def flood(port: int, first_bytes: bytes) -> list[Connection]:
    """Open HOSTILE connections from the attacker's address, in waves the listen backlog can take; every
    other one starts a frame or request it never finishes."""
    opened: list[Connection] = []
    for wave in range(0, HOSTILE, 100):
        opened += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
                                         for _ in range(wave, wave + 100)))
    for index, (_, writer) in enumerate(opened):
        if index % 2:
            writer.write(first_bytes)
    return opened


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 60) == b""
    except ConnectionError:
        return True


def refused(gateway: Gateway, metric: str, reason: str) -> float:
    return gateway.metrics.registry.get_sample_value(f"healthbook_gateway_{metric}_refused_total",
                                                     {"reason": reason}) or 0.0


async def test_a_flooding_host_cannot_lock_out_other_senders(gateway: Gateway) -> None:
    assert gateway.mllp is not None and gateway.http_port is not None
    mllp_port, http_port = gateway.mllp.port, gateway.http_port
    mllp_flood = await flood(mllp_port, START_BLOCK + b"MSH|^~\\&|SLOW")
    http_flood = await flood(http_port, b"POST /fhir HTTP/1.1\r\nHost: gw\r\n")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)
        ack = ack_segments(await exchange(reader, writer, hl7("FAIR1")))
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{http_port}/fhir/metadata",
                                                                   timeout=aiohttp.ClientTimeout(total=60)) as got:
            http_status = got.status
        assert ack["MSA"][0][1] == "AA" and http_status == 200
        # the attacker's admitted connections never complete a frame or request: the server closes them all
        assert all(await asyncio.gather(*(closed_by_server(r) for r, _ in mllp_flood + http_flood)))
        # each hostile connection was refused at once or admitted (16 or 32 at a time) and closed when late
        mllp_late, http_late = refused(gateway, "mllp", "frame_timeout"), refused(gateway, "http", "request_timeout")
        assert refused(gateway, "mllp", "max_connections_per_host") + mllp_late == HOSTILE and mllp_late >= 16
        assert refused(gateway, "http", "max_connections_per_host") + http_late == HOSTILE and http_late >= 32
        # the real sender's connection, silent between frames, is only subject to the idle timeout
        writer.write(START_BLOCK + hl7("FAIR2").encode() + END_BLOCK)
        assert ack_segments((await reader.readuntil(END_BLOCK))[1:-2])["MSA"][0][1:3] == ["AA", "FAIR2"]
        writer.close()
    finally:
        for _, hostile in mllp_flood + http_flood:
            hostile.close()


async def test_the_guarded_https_listener_still_names_the_client_certificate(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki", client_cn="his-bvdk")
    async with gateway_in_process(
            tmp_path, HBGW_MLLP__ENABLED="false", HBGW_HTTP__TLS__ENABLED="true",
            HBGW_HTTP__TLS__CERT_FILE=str(pki.server_cert), HBGW_HTTP__TLS__KEY_FILE=str(pki.server_key),
            HBGW_HTTP__TLS__CLIENT_CA_FILE=str(pki.ca),
            HBGW_HTTP__FHIR_SENDERS='[{"name": "his-bvdk-fhir", "client_cert_cn": "his-bvdk"}]') as gateway:
        connector = aiohttp.TCPConnector(ssl=pki.client_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            status, _, _ = await post(http, f"https://127.0.0.1:{gateway.http_port}/fhir", corpus_bundle(), FHIR_JSON)
    assert status == 200
