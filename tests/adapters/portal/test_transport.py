"""Hospital networks: the portal over TLS signed by a private CA, reached through an HTTP CONNECT proxy."""
from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from adapters.portal.base import Submission, TransientPortalError
from adapters.portal.emulator import EmulatorConfig, create_emulator_app
from adapters.portal.hub import HubChannel
from gateway.config import HubChannelSettings
from gateway.signing import Signer


def _certificate(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name | None, issuer_key: rsa.RSAPrivateKey,
                 ca: bool) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class TlsPortal:
    base_url: str
    ca_file: Path


@pytest.fixture
async def tls_portal(tmp_path: Path, signer: Signer) -> AsyncIterator[TlsPortal]:
    """The emulator on HTTPS with a server certificate from a private (hospital) CA."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate("Hospital Test CA", ca_key, None, ca_key, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = _certificate("127.0.0.1", server_key, ca.subject, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    runner = web.AppRunner(create_emulator_app(EmulatorConfig(cert_pem=signer.certificate_pem)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield TlsPortal(f"https://127.0.0.1:{port}", tmp_path / "ca.pem")
    await runner.cleanup()


@dataclass
class ConnectProxy:
    """A minimal HTTP CONNECT proxy that records the targets it tunnelled to."""

    url: str = ""
    targets: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    recorded = ConnectProxy()
    tasks: set[asyncio.Task[None]] = set()

    async def tunnel(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        request = await client_reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client_writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client_writer.close()
            return
        recorded.targets.append(target)
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await client_writer.drain()
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(tunnel(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(start, "127.0.0.1", 0)
    recorded.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield recorded
    server.close()
    for task in list(tasks):
        task.cancel()
    await server.wait_closed()


async def test_portal_behind_a_private_ca_and_a_proxy_is_reached_with_the_ca_bundle(
        tls_portal: TlsPortal, proxy: ConnectProxy, make_hub: Callable[..., Submission]) -> None:
    channel = HubChannel(HubChannelSettings(base_url=tls_portal.base_url, ca_bundle=tls_portal.ca_file,
                                            proxy=proxy.url), name="moh_checkup")
    try:
        receipt = await channel.submit(make_hub("KSK-TLS"))
    finally:
        await channel.close()
    assert receipt.result_code == "CM_SUCCESS"
    assert proxy.targets and set(proxy.targets) == {tls_portal.base_url.removeprefix("https://")}


async def test_portal_certificate_from_an_unknown_ca_is_a_transient_failure(
        tls_portal: TlsPortal, make_hub: Callable[..., Submission]) -> None:
    channel = HubChannel(HubChannelSettings(base_url=tls_portal.base_url), name="moh_checkup")
    try:
        with pytest.raises(TransientPortalError) as caught:
            await channel.submit(make_hub("KSK-TLS"))
    finally:
        await channel.close()
    assert caught.value.status is None
