"""What the emulator checks in a BHXH submission, as the portal would (the hub side: hub.py, checkup.py, xmldsig.py)."""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from lxml import etree
from signxml import XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature as InvalidXmlSignature

DS = "{http://www.w3.org/2000/09/xmldsig#}"
FILE_TYPES = {f"XML{number}" for number in range(1, 16)} | {"CHECKIN"}


class Rejection(Exception):
    """A submission the portal refuses; `signature` marks a signature that did not verify."""

    def __init__(self, reason: str, *, signature: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signature = signature


def _parse(xml: bytes, what: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        return etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as exc:
        raise Rejection(f"{what} is not well-formed XML: {exc}") from None


def _b64(text: str | None, where: str) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(f"{where} is not valid base64") from None


def _verify_xml_signature(xml: bytes, cert_pem: bytes | None) -> etree._Element:
    root = _parse(xml, "envelope")
    signatures = root.findall(f"CHUKYDONVI/{DS}Signature")
    if len(signatures) != 1:
        raise Rejection("CHUKYDONVI must hold exactly one ds:Signature", signature=True)
    if cert_pem is None:
        embedded = signatures[0].findtext(f".//{DS}X509Certificate")
        if not embedded:
            raise Rejection("signature carries no X509Certificate", signature=True)
        cert_pem = (b"-----BEGIN CERTIFICATE-----\n" + embedded.strip().encode("ascii")
                    + b"\n-----END CERTIFICATE-----\n")
    try:
        result = XMLVerifier().verify(xml, x509_cert=cert_pem.decode("ascii"))
    except (InvalidXmlSignature, InvalidInput, ValueError) as exc:
        raise Rejection(f"XML signature does not verify: {exc}", signature=True) from None
    signed = result.signed_xml if not isinstance(result, list) else result[0].signed_xml
    if signed is None or signed.tag != "GIAMDINHHS":
        raise Rejection("the signature does not cover the GIAMDINHHS envelope", signature=True)
    return signed


def check_envelope(xml: bytes, cert_pem: bytes | None, idempotency_key: str) -> dict[str, Any]:
    """Validate a signed GIAMDINHHS envelope; return what was signed (facility code, MA_LK values, files)."""
    root = _parse(xml, "envelope")
    if root.tag != "GIAMDINHHS":
        raise Rejection(f"root element must be GIAMDINHHS, not {root.tag}")
    signed = _verify_xml_signature(xml, cert_pem)
    facility = (signed.findtext("THONGTINDONVI/MACSKCB") or "").strip()
    if len(facility) != 5:
        raise Rejection("THONGTINDONVI/MACSKCB must be the 5-character facility code")
    if not re.fullmatch(r"\d{8}", (signed.findtext("THONGTINHOSO/NGAYLAP") or "").strip()):
        raise Rejection("THONGTINHOSO/NGAYLAP must be the creation date yyyyMMdd")
    records = signed.findall("THONGTINHOSO/DANHSACHHOSO/HOSO")
    declared = (signed.findtext("THONGTINHOSO/SOLUONGHOSO") or "").strip()
    if not records or declared != str(len(records)):
        raise Rejection(f"THONGTINHOSO/SOLUONGHOSO is {declared!r} but the envelope holds {len(records)} HOSO")
    episode_ids: set[str] = set()
    file_types: list[str] = []
    for number, record in enumerate(records, start=1):
        for file_node in record.findall("FILEHOSO"):
            kind = (file_node.findtext("LOAIHOSO") or "").strip().upper()
            if kind not in FILE_TYPES:
                raise Rejection(f"HOSO[{number}]/FILEHOSO/LOAIHOSO {kind!r} is not XML1..XML15")
            table = _parse(_b64(file_node.findtext("NOIDUNGFILE"), f"HOSO[{number}] {kind} NOIDUNGFILE"),
                           f"HOSO[{number}] {kind} table")
            file_types.append(kind)
            episode_ids.update((node.text or "").strip() for node in table.iter("MA_LK"))
        if not record.findall("FILEHOSO"):
            raise Rejection(f"HOSO[{number}] has no FILEHOSO")
    if any(len(value) > 100 or not value for value in episode_ids):
        raise Rejection("MA_LK must be 1 to 100 characters")
    document_id = idempotency_key.rsplit(":v", 1)[0]
    if episode_ids and document_id not in episode_ids:
        raise Rejection("Idempotency-Key does not name an MA_LK of this envelope")
    return {"facility": facility, "episodes": sorted(episode_ids), "files": file_types}
