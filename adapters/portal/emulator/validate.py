"""What the emulator checks in a BHXH submission, as the portal would (the hub side: hub.py, checkup.py, xmldsig.py)."""
from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from lxml import etree
from signxml import XMLVerifier
from signxml.exceptions import InvalidInput
from signxml.exceptions import InvalidSignature as InvalidXmlSignature

DS = "{http://www.w3.org/2000/09/xmldsig#}"
FILE_TYPES = {f"XML{number}" for number in range(1, 16)}


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


def _verify_xml_signature(xml: bytes, cert_pem: bytes | None, root_tag: str) -> etree._Element:
    """The signed element, once its enveloped signature in CHUKYDONVI verifies and covers `root_tag`."""
    root = _parse(xml, root_tag)
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
    if signed is None or signed.tag != root_tag:
        raise Rejection(f"the signature does not cover the {root_tag} document", signature=True)
    return signed


def _episode_ids(table: etree._Element) -> set[str]:
    ids = {(node.text or "").strip() for node in table.iter("MA_LK")}
    if not ids or any(len(value) > 100 or not value for value in ids):
        raise Rejection("MA_LK must be 1 to 100 characters")
    return ids


def check_envelope(xml: bytes, cert_pem: bytes | None) -> dict[str, Any]:
    """Validate a signed GIAMDINHHS envelope; return what was signed (facility code, MA_LK values, files)."""
    root = _parse(xml, "envelope")
    if root.tag != "GIAMDINHHS":
        raise Rejection(f"root element must be GIAMDINHHS, not {root.tag}")
    signed = _verify_xml_signature(xml, cert_pem, "GIAMDINHHS")
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
            episode_ids |= _episode_ids(table)
        if not record.findall("FILEHOSO"):
            raise Rejection(f"HOSO[{number}] has no FILEHOSO")
    return {"facility": facility, "episodes": sorted(episode_ids), "files": file_types}


@cache
def checkin_layout() -> dict[str, Any]:
    """The XML0 field list the gateway also builds from (mappings/xml130/xml0.json), read as data."""
    loaded: dict[str, Any] = json.loads(
        resources.files("mappings.xml130").joinpath("xml0.json").read_text(encoding="utf-8"))
    return loaded


def check_checkin(xml: bytes, cert_pem: bytes | None) -> dict[str, Any]:
    """Validate a signed XML0 check-in: root, row list, every field in order, its own signature."""
    layout = checkin_layout()
    root = _parse(xml, "check-in")
    if root.tag != layout["root"]:
        raise Rejection(f"root element must be {layout['root']}, not {root.tag}")
    signed = _verify_xml_signature(xml, cert_pem, layout["root"])
    rows = signed.findall(f"{layout['list']}/{layout['row']}")
    if not rows:
        raise Rejection(f"{layout['list']} holds no {layout['row']}")
    facilities: set[str] = set()
    for number, row in enumerate(rows, start=1):
        names = [child.tag for child in row]
        if names != layout["fields"]:
            raise Rejection(f"{layout['row']}[{number}] must hold {', '.join(layout['fields'])} in that order")
        facility = (row.findtext("MA_CSKCB") or "").strip()
        if len(facility) != 5:
            raise Rejection(f"{layout['row']}[{number}]/MA_CSKCB must be the 5-character facility code")
        if not re.fullmatch(r"\d{12}", (row.findtext("NGAY_VAO") or "").strip()):
            raise Rejection(f"{layout['row']}[{number}]/NGAY_VAO must be yyyyMMddHHmm")
        facilities.add(facility)
    if len(facilities) != 1:
        raise Rejection("every TRANG_THAI_KCB of one check-in must be of one facility")
    return {"facility": facilities.pop(), "episodes": sorted(_episode_ids(signed)), "files": ["XML0"]}
