"""Throwaway certificate authorities and certificates for TLS tests, written as PEM files."""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """A CA plus a server certificate for 127.0.0.1 and a client certificate, all as files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_certificate: bool = True) -> ssl.SSLContext:
        """A client context trusting this CA, presenting the client certificate when asked to."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, client_cn: str = "his-bvdk", prefix: str = "") -> Pki:
    """A fresh CA in `directory` that issued a server certificate and one client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(f"{prefix}test CA", ca_key, _name(f"{prefix}test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    files = {}
    for label, cert in (("ca", ca_cert),
                        ("server", _issue("127.0.0.1", server_key, ca_cert.subject, ca_key, server=True)),
                        ("client", _issue(client_cn, client_key, ca_cert.subject, ca_key))):
        files[label] = directory / f"{prefix}{label}.pem"
        files[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(files["ca"], files["server"], _write_key(server_key, directory / f"{prefix}server.key"),
               files["client"], _write_key(client_key, directory / f"{prefix}client.key"))
