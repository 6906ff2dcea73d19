"""Where the facility certificate and key come from: a dev pair, PEM files, PKCS#12 or a PKCS#11 token."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from gateway.config import SigningSettings
from gateway.files import private_dir, write_private
from gateway.logs import get_logger
from gateway.signing.signer import Signer, SigningError, check_validity

log = get_logger(__name__)

DEV_CERT_NAME = "dev-cert.pem"
DEV_KEY_NAME = "dev-key.pem"
DEV_VALIDITY = timedelta(days=730)


def _secret(value: SecretStr | None) -> bytes | None:
    return value.get_secret_value().encode("utf-8") if value is not None else None


def _read(path: Path | None, setting: str) -> bytes:
    if path is None:
        raise SigningError(f"signing.{setting} is required for this signing source")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"signing.{setting}: cannot read {path}: {exc.strerror}") from None


def load_certificate(data: bytes, setting: str) -> x509.Certificate:
    """Read a PEM or DER certificate, naming the setting when it is neither."""
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise SigningError(f"signing.{setting}: not a PEM or DER X.509 certificate") from None


def _rsa_key(key: object, setting: str) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError(f"signing.{setting}: the private key must be RSA")
    return key


def generate_self_signed(common_name: str, not_before: datetime, not_after: datetime,
                         key: rsa.RSAPrivateKey | None = None) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed RSA-2048 certificate, for the dev source and for tests of validity periods."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
    ])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _load_dev(settings: SigningSettings) -> Signer:
    directory = Path(settings.dev_dir)
    cert_path, key_path = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    now = datetime.now(UTC)
    if cert_path.exists() and key_path.exists():
        certificate = load_certificate(cert_path.read_bytes(), "dev_dir")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if now <= certificate.not_valid_after_utc:
            log.warning("signing.dev_certificate", note="development certificate, not for production",
                        subject=certificate.subject.rfc4514_string(), path=str(cert_path))
            return Signer(certificate, _rsa_key(key, "dev_dir"), "dev")
    private_dir(directory)
    certificate, key = generate_self_signed("healthbook-gateway development certificate (not for production)",
                                            now - timedelta(minutes=5), now + DEV_VALIDITY)
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    log.warning("signing.dev_certificate_generated", note="development certificate, not for production",
                subject=certificate.subject.rfc4514_string(), path=str(cert_path))
    return Signer(certificate, key, "dev")


def _load_pem(settings: SigningSettings) -> Signer:
    certificate = load_certificate(_read(settings.cert_file, "cert_file"), "cert_file")
    check_validity(certificate)
    try:
        key = serialization.load_pem_private_key(_read(settings.key_file, "key_file"),
                                                 password=_secret(settings.key_password))
    except (ValueError, TypeError):
        raise SigningError("signing.key_file: not a PEM private key, or signing.key_password is wrong") from None
    return Signer(certificate, _rsa_key(key, "key_file"), "pem")


def _load_pkcs12(settings: SigningSettings) -> Signer:
    data = _read(settings.pkcs12_file, "pkcs12_file")
    try:
        key, certificate, _chain = pkcs12.load_key_and_certificates(data, _secret(settings.pkcs12_password))
    except ValueError:
        raise SigningError("signing.pkcs12_file: not a PKCS#12 file, or signing.pkcs12_password is wrong") from None
    if certificate is None or key is None:
        raise SigningError("signing.pkcs12_file: must hold both the certificate and its private key")
    check_validity(certificate)
    return Signer(certificate, _rsa_key(key, "pkcs12_file"), "pkcs12")


def load_signer(settings: SigningSettings) -> Signer:
    """Load the facility signer once at start-up; a bad certificate or key stops start-up with one line."""
    if settings.source == "dev":
        return _load_dev(settings)
    if settings.source == "pem":
        return _load_pem(settings)
    if settings.source == "pkcs12":
        return _load_pkcs12(settings)
    from gateway.signing.pkcs11 import load_pkcs11_signer
    return load_pkcs11_signer(settings)
