"""The facility key on a real PKCS#11 token (SoftHSM2): sign on the token, verify with signxml/cryptography."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute, CertificateType, ObjectClass
from pydantic import SecretStr
from signxml import XMLVerifier

from adapters.portal.emulator.xmldsig import verify_form
from adapters.portal.wire import hub_signing_input
from gateway.config import SigningSettings
from gateway.signing import Signer, SigningError, load_signer
from gateway.signing.pkcs11 import open_library
from gateway.signing.sources import generate_self_signed

TOKEN_LABEL = "hbgw-test"
KEY_LABEL = "facility"
PIN = "246810"
ENVELOPE = (b"<GIAMDINHHS><THONGTINDONVI><MACSKCB>40001</MACSKCB></THONGTINDONVI>"
            b"<CHUKYDONVI/></GIAMDINHHS>")


def softhsm_module() -> Path | None:
    """Debian's SoftHSM2 module, at its usual path or wherever dpkg installed it."""
    usual = Path("/usr/lib/softhsm/libsofthsm2.so")
    if usual.exists():
        return usual
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "softhsm2"], capture_output=True, text=True, check=False).stdout
        for line in listing.splitlines():
            if line.endswith("libsofthsm2.so") and Path(line).exists():
                return Path(line)
    return None


@dataclass(frozen=True)
class Token:
    module: Path
    cert_file: Path
    expired_cert_file: Path

    def settings(self, **changes: object) -> SigningSettings:
        values: dict[str, object] = {"source": "pkcs11", "pkcs11_module": self.module,
                                     "pkcs11_token_label": TOKEN_LABEL, "pkcs11_pin": SecretStr(PIN),
                                     "pkcs11_key_label": KEY_LABEL}
        values.update(changes)
        return SigningSettings(**values)


@pytest.fixture(scope="session")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """A SoftHSM2 token in a temp dir holding the facility key (imported) and its certificate."""
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("softhsm2 is not installed (make system-deps installs it)")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        env = dict(os.environ)
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", PIN,
                        "--so-pin", "13579"], check=True, capture_output=True, env=env)
        now = datetime.now(UTC)
        certificate, key = generate_self_signed("Benh vien Token", now - timedelta(days=1), now + timedelta(days=90))
        expired, _ = generate_self_signed("Benh vien Token", now - timedelta(days=400), now - timedelta(days=1), key)
        key_file = directory / "key.pem"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        subprocess.run(["softhsm2-util", "--import", str(key_file), "--token", TOKEN_LABEL, "--label", KEY_LABEL,
                        "--id", "01", "--pin", PIN], check=True, capture_output=True, env=env)
        key_file.unlink()
        der = certificate.public_bytes(serialization.Encoding.DER)
        with open_library(module).get_token(token_label=TOKEN_LABEL).open(user_pin=PIN, rw=True) as session:
            session.create_object({Attribute.CLASS: ObjectClass.CERTIFICATE,
                                   Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                                   Attribute.TOKEN: True, Attribute.LABEL: KEY_LABEL, Attribute.VALUE: der,
                                   Attribute.SUBJECT: certificate.subject.public_bytes()})
        cert_file, expired_file = directory / "cert.pem", directory / "expired.pem"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        expired_file.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
        yield Token(module, cert_file, expired_file)


@pytest.fixture
def token_signer(token: Token) -> Iterator[Callable[..., Signer]]:
    """Load signers from the token and close their sessions after the test, so the token logs out."""
    opened: list[Signer] = []

    def load(**changes: object) -> Signer:
        opened.append(load_signer(token.settings(**changes)))
        return opened[-1]
    yield load
    for signer in opened:
        signer.close()


def test_token_signs_an_envelope_that_signxml_verifies(token: Token, token_signer: Callable[..., Signer]) -> None:
    signer = token_signer()
    assert signer.source == "pkcs11"
    signed = signer.sign_xml_envelope(ENVELOPE)
    result = XMLVerifier().verify(signed, x509_cert=token.cert_file.read_text())
    assert result.signed_xml.findtext("THONGTINDONVI/MACSKCB") == "40001"


def test_token_signs_a_hub_message_that_cryptography_verifies(token: Token,
                                                              token_signer: Callable[..., Signer]) -> None:
    signer = token_signer(pkcs11_cert_file=token.cert_file)
    header = {"sender_id": "4000000000123", "msg_id": "K:v1"}
    signature = base64.b64decode(signer.sign_hub_message(header, "e30="))
    public_key = signer.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, hub_signing_input(header, "e30="), padding.PKCS1v15(), hashes.SHA256())


def test_a_token_key_signs_a_health_check_form_slot_the_hub_emulator_verifies(
        token: Token, token_signer: Callable[..., Signer]) -> None:
    """A doctor's (or the facility's) key on a USB token signs inside the QĐ 1551 form like a PEM key."""
    signer = token_signer(pkcs11_cert_file=token.cert_file)
    form = b"<TREN_18><KET_LUAN><PHAN_LOAI_SK>1</PHAN_LOAI_SK><CKS_NGUOI_KET_LUAN/><CKS_BENH_VIEN/></KET_LUAN>" \
        b"</TREN_18>"
    signed = signer.sign_into(signer.sign_into(form, 0, "CKS_NGUOI_KET_LUAN"), 0, "CKS_BENH_VIEN")
    assert verify_form(signed, token.cert_file.read_bytes()) == {"CKS_BENH_VIEN": 1, "CKS_NGUOI_KET_LUAN": 1}


def test_a_second_signer_in_the_same_process_shares_the_login(token_signer: Callable[..., Signer]) -> None:
    first, second = token_signer(), token_signer()
    assert first.sign_hub_message({}, "e30=") == second.sign_hub_message({}, "e30=")


def test_wrong_pin_is_refused_without_echoing_it(token: Token) -> None:
    with pytest.raises(SigningError) as caught:
        load_signer(token.settings(pkcs11_pin=SecretStr("999999")))
    assert "Pin" in str(caught.value) and "999999" not in str(caught.value)


def test_unknown_key_label_is_refused(token: Token) -> None:
    with pytest.raises(SigningError, match="no usable RSA private key labelled 'nobody'"):
        load_signer(token.settings(pkcs11_key_label="nobody", pkcs11_cert_file=token.cert_file))


def test_unknown_token_is_refused(token: Token) -> None:
    with pytest.raises(SigningError, match="cannot open token 'absent'"):
        load_signer(token.settings(pkcs11_token_label="absent"))


def test_expired_certificate_for_the_token_key_is_refused(token: Token) -> None:
    with pytest.raises(SigningError, match="expired on"):
        load_signer(token.settings(pkcs11_cert_file=token.expired_cert_file))


def test_a_token_that_stops_signing_is_a_signing_error_the_pipeline_waits_out(token: Token) -> None:
    signer = load_signer(token.settings())
    signer.close()  # as when the token is pulled out: its session is gone
    with pytest.raises(SigningError, match="the token refused to sign"):
        signer.sign_hub_message({}, "e30=")
