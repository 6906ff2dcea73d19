"""The unsigned GIAMDINHHS envelope carrying the XML 130 tables of one episode."""
from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from datetime import datetime

from mappings.canonical import VN_TZ
from mappings.model import FacilityInfo
from mappings.xml130.layout import XML_DECLARATION

TABLE_NAME = re.compile(r"XML([1-9]|1[0-5])")


def _table_number(name: str) -> int:
    return int(name.removeprefix("XML"))


def build_envelope(tables: dict[str, bytes], facility: FacilityInfo, created_at: datetime) -> bytes:
    """Wrap the tables for the BHXH portal; CHUKYDONVI is left empty for the signer to fill."""
    unknown = [name for name in tables if not TABLE_NAME.fullmatch(name)]
    if unknown or not tables:
        raise ValueError("tables must be a non-empty mapping of XML1..XML15")
    moment = created_at.astimezone(VN_TZ) if created_at.tzinfo else created_at
    root = ET.Element("GIAMDINHHS")
    ET.SubElement(ET.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = facility.bhxh_code
    info = ET.SubElement(root, "THONGTINHOSO")
    ET.SubElement(info, "NGAYLAP").text = moment.strftime("%Y%m%d")  # creation date; table date-times are yyyyMMddHHmm
    ET.SubElement(info, "SOLUONGHOSO").text = "1"
    record = ET.SubElement(ET.SubElement(info, "DANHSACHHOSO"), "HOSO")
    for name in sorted(tables, key=_table_number):
        file = ET.SubElement(record, "FILEHOSO")
        ET.SubElement(file, "LOAIHOSO").text = name
        ET.SubElement(file, "NOIDUNGFILE").text = base64.b64encode(tables[name]).decode("ascii")
    ET.SubElement(root, "CHUKYDONVI")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False, short_empty_elements=True)
    return XML_DECLARATION + body
