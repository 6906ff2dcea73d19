"""The facility signer: one certificate, one RSA key (in memory or on a token), two signature formats."""
from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import CanonicalizationMethod, XMLSigner, methods
from signxml.exceptions import InvalidInput

from adapters.portal.wire import hub_signing_input

DS_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"
SIGNATURE_ELEMENT = "CHUKYDONVI"
# Inclusive C14N 1.0 is what the Vietnamese signing tools and the BHXH portal verify.
C14N = CanonicalizationMethod.CANONICAL_XML_1_0


class SigningError(Exception):
    """The facility cannot sign: a one-line reason that never contains key material."""


class RsaSigningKey(Protocol):
    """What a private key must do for us (and for signxml): PKCS#1 v1.5 signatures."""

    def sign(self, data: bytes, padding: AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes: ...


def subject_of(certificate: x509.Certificate) -> str:
    """The certificate subject in RFC 4514 form, for error messages and logs."""
    return certificate.subject.rfc4514_string()


def check_validity(certificate: x509.Certificate, now: datetime | None = None) -> None:
    """Refuse a certificate outside its validity period: portals reject what it signs."""
    now = now or datetime.now(UTC)
    if now > certificate.not_valid_after_utc:
        raise SigningError(
            f"signing certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            f" (subject {subject_of(certificate)})")
    if now < certificate.not_valid_before_utc:
        raise SigningError(
            f"signing certificate is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            f" (subject {subject_of(certificate)})")


def _parse_xml(xml: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
    try:
        return etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise SigningError(f"envelope is not well-formed XML: {exc}") from None


class Signer:
    """Signs XML 130 envelopes and hub messages with the facility's certificate and key."""

    def __init__(self, certificate: x509.Certificate, key: RsaSigningKey, source: str) -> None:
        if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
            raise SigningError(f"signing certificate must hold an RSA key (subject {subject_of(certificate)})")
        self.certificate = certificate
        self.certificate_pem: bytes = certificate.public_bytes(Encoding.PEM)
        self.source = source
        self._key = key
        self._check_key_matches()
        # One XMLSigner and one KeyInfo (the certificate in X509Data, as signxml writes it) for every signature
        self._xml_signer = XMLSigner(method=methods.enveloped, signature_algorithm="rsa-sha256",
                                     digest_algorithm="sha256", c14n_algorithm=C14N)
        self._key_info = etree.Element(f"{{{DS_NAMESPACE}}}KeyInfo", nsmap={"ds": DS_NAMESPACE})
        x509_data = etree.SubElement(self._key_info, f"{{{DS_NAMESPACE}}}X509Data")
        etree.SubElement(x509_data, f"{{{DS_NAMESPACE}}}X509Certificate").text = "".join(
            f"{line}\n" for line in self.certificate_pem.decode("ascii").splitlines()[1:-1])

    @property
    def not_after(self) -> datetime:
        """When the certificate expires (UTC), for the expiry metric and alerts."""
        return self.certificate.not_valid_after_utc

    @property
    def subject(self) -> str:
        return subject_of(self.certificate)

    def _sign_rsa_sha256(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _check_key_matches(self) -> None:
        probe = b"healthbook-gateway key/certificate check"
        public_key = self.certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(self._sign_rsa_sha256(probe), probe, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SigningError(f"signing key does not match the certificate (subject {self.subject})") from None

    def sign_xml_envelope(self, xml: bytes) -> bytes:
        """Put an enveloped XML-DSig (RSA-SHA256, certificate in X509Data) inside the empty CHUKYDONVI."""
        check_validity(self.certificate)
        root = _parse_xml(xml)
        targets = root.findall(f".//{SIGNATURE_ELEMENT}")
        if len(targets) != 1:
            raise SigningError(f"envelope must hold exactly one {SIGNATURE_ELEMENT} element, found {len(targets)}")
        return self._sign_inside(root, targets[0], "envelope")

    def close(self) -> None:
        """Release the key's token session, if it has one; in-memory keys need nothing."""
        close = getattr(self._key, "close", None)
        if close is not None:
            close()

    def sign_hub_message(self, header: dict[str, Any], data: str | dict[str, Any], sort_keys: bool = False) -> str:
        """The hub's base64 RSA/SHA-256 signature over the hashed header and data (see adapters.portal.wire)."""
        check_validity(self.certificate)
        return base64.b64encode(self._sign_rsa_sha256(hub_signing_input(header, data, sort_keys))).decode("ascii")

    def sign_into(self, xml: bytes, index: int, element: str) -> bytes:
        """Sign the document into its index-th (0-based) empty `element`: an enveloped XML-DSig over the whole
        document as it stands (URI="", RSA-SHA256, C14N 1.0, certificate in X509Data). The ds: prefix, not the
        default namespace of the QĐ 1551 PL02 examples: signxml's default-namespace mode signs a SignedInfo
        that differs from the one a verifier re-reads; both forms are the same XML-DSig to a verifier."""
        check_validity(self.certificate)
        root = _parse_xml(xml)
        targets = [node for node in root.iter(element)]
        if index >= len(targets):
            raise SigningError(f"the document has no {element} number {index + 1}")
        return self._sign_inside(root, targets[index], element)

    def _sign_inside(self, root: etree._Element, target: etree._Element, what: str) -> bytes:
        """An enveloped XML-DSig over the whole document (RSA-SHA256, C14N 1.0, certificate in X509Data),
        placed in the empty `target`."""
        if len(target) or (target.text or "").strip():
            raise SigningError(f"{target.tag} must be empty before signing")
        etree.SubElement(target, f"{{{DS_NAMESPACE}}}Signature", Id="placeholder", nsmap={"ds": DS_NAMESPACE})
        try:
            # signxml only calls key.sign(data, padding, algorithm), which a token key provides too; it moves
            # the KeyInfo it is given into the signature, so each signature gets its own copy
            signed = self._xml_signer.sign(root, key=cast(rsa.RSAPrivateKey, self._key), cert=[self.certificate],
                                           key_info=copy.deepcopy(self._key_info))
        except InvalidInput as exc:
            raise SigningError(f"cannot sign {what}: {exc}") from None
        return etree.tostring(signed, xml_declaration=True, encoding="utf-8")
