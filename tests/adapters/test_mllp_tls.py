"""MLLP over TLS on real sockets: server certificate, optional and required client certificates."""
from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from adapters.mllp import Frame, MllpServer
from adapters.tls import server_ssl_context
from gateway.config import TlsSettings
from mappings.hl7v2.framing import END_BLOCK, START_BLOCK
from tests.tls_certs import Pki, make_pki


async def cn_handler(frame: Frame) -> bytes:
    return b"CN=" + frame.client_cn.encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def start(pki: Pki, *, client_ca: bool, require: bool) -> MllpServer:
    settings = TlsSettings(enabled=True, cert_file=pki.server_cert, key_file=pki.server_key,
                           client_ca_file=pki.ca if client_ca else None, require_client_cert=require)
    server = MllpServer(cn_handler, host="127.0.0.1", port=0, max_message_bytes=1000, idle_timeout=5,
                        max_connections=4, ssl_context=server_ssl_context(settings))
    await server.start()
    return server


async def exchange(server: MllpServer, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    try:
        writer.write(START_BLOCK + b"MSH|^~\\&|tls" + END_BLOCK)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(END_BLOCK), 5)
    finally:
        writer.close()
    return answer[1:-2]


async def test_server_certificate_only(pki: Pki) -> None:
    server = await start(pki, client_ca=False, require=False)
    try:
        assert await exchange(server, pki.client_context(with_certificate=False)) == b"CN="
    finally:
        await server.stop()


async def test_optional_client_certificate_names_the_sender_when_given(pki: Pki) -> None:
    server = await start(pki, client_ca=True, require=False)
    try:
        assert await exchange(server, pki.client_context()) == b"CN=his-bvdk"
        assert await exchange(server, pki.client_context(with_certificate=False)) == b"CN="
    finally:
        await server.stop()


async def test_required_client_certificate_refuses_clients_without_one(pki: Pki) -> None:
    server = await start(pki, client_ca=True, require=True)
    try:
        assert await exchange(server, pki.client_context()) == b"CN=his-bvdk"
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await exchange(server, pki.client_context(with_certificate=False))
        assert await exchange(server, pki.client_context()) == b"CN=his-bvdk"  # and it keeps serving
    finally:
        await server.stop()


async def test_client_certificate_from_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path, client_cn="intruder", prefix="other-")
    context = pki.client_context(with_certificate=False)
    context.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
    server = await start(pki, client_ca=True, require=True)
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await exchange(server, context)
    finally:
        await server.stop()


def test_tls_settings_must_be_complete() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file"):
        TlsSettings(enabled=True)
    with pytest.raises(ValueError, match="client_ca_file"):
        TlsSettings(require_client_cert=True)
