"""Facility signer from dev, PEM and PKCS#12 sources: validity, signatures verified independently."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from lxml import etree
from pydantic import SecretStr
from signxml import XMLVerifier
from structlog.testing import capture_logs

from gateway.config import SigningSettings
from gateway.metrics import Metrics
from gateway.signing import Signer, SigningError, load_signer, record_certificate_expiry
from gateway.signing.sources import generate_self_signed

DS = "{http://www.w3.org/2000/09/xmldsig#}"
ENVELOPE = (b"<GIAMDINHHS><THONGTINDONVI><MACSKCB>40001</MACSKCB></THONGTINDONVI>"
            b"<THONGTINHOSO><NGAYLAP>20261123</NGAYLAP></THONGTINHOSO><CHUKYDONVI/></GIAMDINHHS>")


def write_pem_pair(directory: Path, not_before: datetime, not_after: datetime,
                   password: bytes | None = None) -> SigningSettings:
    certificate, key = generate_self_signed("Benh vien Test", not_before, not_after)
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8, encryption))
    return SigningSettings(source="pem", cert_file=directory / "cert.pem", key_file=directory / "key.pem",
                           key_password=SecretStr(password.decode()) if password else None)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


def test_dev_source_generates_once_then_reuses_and_warns(tmp_path: Path) -> None:
    settings = SigningSettings(source="dev", dev_dir=tmp_path / "dev")
    with capture_logs() as logged:
        first = load_signer(settings)
        second = load_signer(settings)
    assert first.certificate == second.certificate
    assert (tmp_path / "dev" / "dev-key.pem").stat().st_mode & 0o077 == 0
    assert [entry["note"] for entry in logged] == ["development certificate, not for production"] * 2
    assert all(entry["log_level"] == "warning" for entry in logged)
    assert "PRIVATE KEY" not in repr(logged)


def test_signed_envelope_verifies_with_signxml_and_sits_inside_chukydonvi(tmp_path: Path, now: datetime) -> None:
    signer = load_signer(write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30)))
    signed = signer.sign_xml_envelope(ENVELOPE)
    root = etree.fromstring(signed)
    signature = root.find(f"CHUKYDONVI/{DS}Signature")
    assert signature is not None
    assert signature.find(f"{DS}SignedInfo/{DS}SignatureMethod").get("Algorithm").endswith("rsa-sha256")
    assert signature.find(f".//{DS}DigestMethod").get("Algorithm").endswith("sha256")
    assert signature.find(f".//{DS}X509Certificate") is not None
    result = XMLVerifier().verify(signed, x509_cert=signer.certificate_pem.decode())
    assert result.signed_xml.findtext("THONGTINDONVI/MACSKCB") == "40001"


def test_changed_envelope_no_longer_verifies(tmp_path: Path, now: datetime) -> None:
    signer = load_signer(write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30)))
    signed = signer.sign_xml_envelope(ENVELOPE).replace(b"40001", b"40009")
    with pytest.raises(Exception, match="(?i)digest|signature"):
        XMLVerifier().verify(signed, x509_cert=signer.certificate_pem.decode())


@pytest.mark.parametrize("xml, message", [
    (b"<GIAMDINHHS><THONGTINDONVI/></GIAMDINHHS>", "exactly one CHUKYDONVI"),
    (b"<GIAMDINHHS><CHUKYDONVI>x</CHUKYDONVI></GIAMDINHHS>", "must be empty"),
    (b"<GIAMDINHHS>", "not well-formed"),
])
def test_envelope_without_an_empty_signature_slot_is_refused(tmp_path: Path, now: datetime,
                                                             xml: bytes, message: str) -> None:
    signer = load_signer(write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30)))
    with pytest.raises(SigningError, match=message):
        signer.sign_xml_envelope(xml)


@pytest.mark.parametrize("sort_keys", [False, True])
def test_hub_signature_is_rsa_sha256_over_the_documented_hashes(tmp_path: Path, now: datetime,
                                                               sort_keys: bool) -> None:
    """QĐ 1551 PL02: UPPER(SHA256(compact header)) + "." + UPPER(SHA256(data)), keys as sent (or sorted)."""
    signer = load_signer(write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30)))
    header = {"version": "1.0.3", "sender_id": "4000000000123", "receiver_id": "TDLBYT", "txn_type": "sync_checkup",
              "msg_id": "K:v1", "ghi_chú": "ý"}
    data_b64 = base64.b64encode(b"<TREN_18/>").decode()
    signature = base64.b64decode(signer.sign_hub_message(header, data_b64, sort_keys))
    compact = json.dumps(header, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=False).encode("utf-8")
    expected = (hashlib.sha256(compact).hexdigest().upper() + "."
                + hashlib.sha256(data_b64.encode()).hexdigest().upper()).encode()
    public_key = signer.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, expected, padding.PKCS1v15(), hashes.SHA256())


def test_encrypted_pem_key_needs_its_password(tmp_path: Path, now: datetime) -> None:
    settings = write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30), password=b"pw-123")
    assert load_signer(settings).source == "pem"
    with pytest.raises(SigningError, match="key_password is wrong"):
        load_signer(settings.model_copy(update={"key_password": SecretStr("nope")}))


def test_expired_certificate_is_refused_with_a_clear_line(tmp_path: Path, now: datetime) -> None:
    settings = write_pem_pair(tmp_path, datetime(2024, 1, 1, tzinfo=UTC),
                              datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(SigningError) as caught:
        load_signer(settings)
    assert str(caught.value) == "signing certificate expired on 2026-01-01 00:00 UTC (subject C=VN,CN=Benh vien Test)"


def test_not_yet_valid_certificate_is_refused(tmp_path: Path, now: datetime) -> None:
    settings = write_pem_pair(tmp_path, now + timedelta(days=2), now + timedelta(days=400))
    with pytest.raises(SigningError, match="not valid before"):
        load_signer(settings)


def test_key_of_another_certificate_is_refused(tmp_path: Path, now: datetime) -> None:
    settings = write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30))
    other, _ = generate_self_signed("Other", now - timedelta(days=1), now + timedelta(days=30))
    (tmp_path / "cert.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(SigningError, match="does not match"):
        load_signer(settings)


def test_missing_files_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="signing.cert_file is required"):
        load_signer(SigningSettings(source="pem"))
    with pytest.raises(SigningError, match="signing.cert_file: cannot read"):
        load_signer(SigningSettings(source="pem", cert_file=tmp_path / "absent.pem", key_file=tmp_path / "k"))


def test_pkcs12_source_loads_certificate_and_key(tmp_path: Path, now: datetime) -> None:
    certificate, key = generate_self_signed("Benh vien P12", now - timedelta(days=1), now + timedelta(days=30))
    bundle = pkcs12.serialize_key_and_certificates(b"facility", key, certificate, None,
                                                   serialization.BestAvailableEncryption(b"p12-pass"))
    (tmp_path / "facility.p12").write_bytes(bundle)
    settings = SigningSettings(source="pkcs12", pkcs12_file=tmp_path / "facility.p12",
                               pkcs12_password=SecretStr("p12-pass"))
    signer = load_signer(settings)
    assert signer.certificate == certificate
    XMLVerifier().verify(signer.sign_xml_envelope(ENVELOPE), x509_cert=signer.certificate_pem.decode())
    with pytest.raises(SigningError, match="pkcs12_password is wrong"):
        load_signer(settings.model_copy(update={"pkcs12_password": SecretStr("bad")}))


def test_expired_pkcs12_certificate_is_refused(tmp_path: Path) -> None:
    certificate, key = generate_self_signed("Old", datetime(2020, 1, 1, tzinfo=UTC),
                                            datetime(2021, 1, 1, tzinfo=UTC))
    (tmp_path / "old.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"old", key, certificate, None, serialization.NoEncryption()))
    with pytest.raises(SigningError, match="expired on 2021-01-01"):
        load_signer(SigningSettings(source="pkcs12", pkcs12_file=tmp_path / "old.p12"))


def test_certificate_expiry_is_exported_as_a_metric(tmp_path: Path, now: datetime) -> None:
    signer: Signer = load_signer(write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30)))
    metrics = Metrics()
    record_certificate_expiry(metrics, signer)
    value = metrics.registry.get_sample_value("healthbook_gateway_certificate_expiry_timestamp_seconds")
    assert value == signer.not_after.timestamp()


def test_no_key_material_is_logged(tmp_path: Path, now: datetime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logged:
        signer = load_signer(SigningSettings(source="dev", dev_dir=tmp_path))
        signer.sign_xml_envelope(ENVELOPE)
    key_text = (tmp_path / "dev-key.pem").read_text()
    key_body = key_text.splitlines()[1]
    output = caplog.text + repr(logged)
    assert logged and "PRIVATE KEY" not in output and key_body not in output


def test_expired_dev_certificate_is_replaced_by_a_fresh_one(tmp_path: Path, now: datetime) -> None:
    old, key = generate_self_signed("old dev", now - timedelta(days=800), now - timedelta(days=1))
    (tmp_path / "dev-cert.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "dev-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    signer = load_signer(SigningSettings(source="dev", dev_dir=tmp_path))
    assert signer.certificate != old and signer.not_after > now + timedelta(days=700)


def test_a_non_rsa_key_is_refused(tmp_path: Path, now: datetime) -> None:
    settings = write_pem_pair(tmp_path, now - timedelta(days=1), now + timedelta(days=30))
    (tmp_path / "key.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SigningError, match="must be RSA"):
        load_signer(settings)


def test_a_certificate_that_expired_after_start_up_stops_signing(now: datetime) -> None:
    certificate, key = generate_self_signed("Benh vien Test", now - timedelta(days=30), now - timedelta(seconds=1))
    signer = Signer(certificate, key, "pem")
    with pytest.raises(SigningError, match="expired"):
        signer.sign_hub_message({}, "e30=")
    with pytest.raises(SigningError, match="expired"):
        signer.sign_xml_envelope(ENVELOPE)
