"""The emulator's own check of the XML signatures inside a health-check form, written apart from the signer.

Signatures are applied in document order, each over the whole document as it stood (URI="" with the
enveloped-signature transform), so signature k covers signatures 1..k-1 and none after it. To check
signature k the later ones are taken out, then its digest and RSA-SHA256 value are recomputed with
inclusive C14N 1.0. The facility's CKS_BENH_VIEN (and an envelope's CHUKYDONVI) signature must carry the
configured certificate.
"""
from __future__ import annotations

import base64
import binascii
import copy
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

DS = "{http://www.w3.org/2000/09/xmldsig#}"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"


class SignatureProblem(Exception):
    """A signature that is malformed or does not verify; the reason names its CKS_* element."""


def _algorithm(node: etree._Element, path: str) -> str:
    found = node.find(path)
    return "" if found is None else str(found.get("Algorithm", ""))


def _certificate(signature: etree._Element, where: str) -> x509.Certificate:
    text = "".join((signature.findtext(f".//{DS}X509Certificate") or "").split())
    try:
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise SignatureProblem(f"{where}: the signature carries no readable X509Certificate") from None


def _check_one(document: etree._Element, signature: etree._Element, where: str) -> x509.Certificate:
    info = signature.find(f"{DS}SignedInfo")
    references = [] if info is None else info.findall(f"{DS}Reference")
    if info is None or len(references) != 1:
        raise SignatureProblem(f"{where}: SignedInfo with exactly one Reference is required")
    reference = references[0]
    transforms = [t.get("Algorithm") for t in reference.findall(f"{DS}Transforms/{DS}Transform")]
    if (_algorithm(info, f"{DS}CanonicalizationMethod") != C14N
            or _algorithm(info, f"{DS}SignatureMethod") != RSA_SHA256
            or reference.get("URI") != "" or transforms not in ([ENVELOPED], [ENVELOPED, C14N])
            or _algorithm(reference, f"{DS}DigestMethod") != SHA256):
        raise SignatureProblem(f"{where}: expected an enveloped RSA-SHA256 signature of the whole document (URI=\"\")"
                               " with C14N 1.0 and SHA-256")
    without = copy.deepcopy(document)
    position = list(document.iter(f"{DS}Signature")).index(signature)
    mine = list(without.iter(f"{DS}Signature"))[position]
    parent = mine.getparent()
    if parent is None:
        raise SignatureProblem(f"{where}: a signature cannot be the document itself")
    parent.remove(mine)
    digest = base64.b64encode(hashlib.sha256(etree.tostring(without, method="c14n")).digest()).decode("ascii")
    if digest != "".join((reference.findtext(f"{DS}DigestValue") or "").split()):
        raise SignatureProblem(f"{where}: the document changed after it was signed (digest mismatch)")
    certificate = _certificate(signature, where)
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureProblem(f"{where}: the signing certificate is not RSA")
    try:
        value = base64.b64decode("".join((signature.findtext(f"{DS}SignatureValue") or "").split()), validate=True)
        key.verify(value, etree.tostring(info, method="c14n"), padding.PKCS1v15(), hashes.SHA256())
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureProblem(f"{where}: the signature value does not verify") from None
    return certificate


def verify_form(xml: bytes, facility_cert_pem: bytes | None) -> dict[str, int]:
    """Check every signature in the form, last first; how many each CKS_* element holds, or SignatureProblem."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    count = len(list(root.iter(f"{DS}Signature")))
    signed: dict[str, int] = {}
    for k in reversed(range(count)):
        document = copy.deepcopy(root)
        signatures = list(document.iter(f"{DS}Signature"))
        for later in signatures[k + 1:]:
            later.getparent().remove(later)
        slot = signatures[k].getparent()
        group = slot.getparent() if slot is not None else None
        where = f"{group.tag}/{slot.tag}" if slot is not None and group is not None else "Signature"
        if slot is None or not (str(slot.tag).startswith("CKS_") or slot.tag == "CHUKYDONVI"):
            raise SignatureProblem(f"{where}: a signature must sit in a CKS_* element (or an envelope's CHUKYDONVI)")
        certificate = _check_one(document, signatures[k], where)
        if slot.tag in ("CKS_BENH_VIEN", "CHUKYDONVI") and facility_cert_pem is not None \
                and certificate != x509.load_pem_x509_certificate(facility_cert_pem):
            raise SignatureProblem(f"{where}: not signed with the facility certificate")
        signed[str(slot.tag)] = signed.get(str(slot.tag), 0) + 1
    return signed
