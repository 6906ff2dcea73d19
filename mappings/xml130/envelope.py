"""The unsigned GIAMDINHHS envelope carrying the XML 130 tables of one episode."""
from __future__ import annotations

import base64
import re
from datetime import datetime

from mappings.canonical import VN_TZ
from mappings.model import FacilityInfo
from mappings.xml130.layout import document_bytes, element, escaped

TABLE_NAME = re.compile(r"XML([1-9]|1[0-5])")


def _table_number(name: str) -> int:
    return int(name.removeprefix("XML"))


def build_envelope(tables: dict[str, bytes], facility: FacilityInfo, created_at: datetime) -> bytes:
    """Wrap the tables for the BHXH portal; CHUKYDONVI is left empty for the signer to fill."""
    unknown = [name for name in tables if not TABLE_NAME.fullmatch(name)]
    if unknown or not tables:
        raise ValueError("tables must be a non-empty mapping of XML1..XML15")
    moment = created_at.astimezone(VN_TZ) if created_at.tzinfo else created_at
    files = "".join(element("FILEHOSO", element("LOAIHOSO", name)
                            + element("NOIDUNGFILE", base64.b64encode(tables[name]).decode("ascii")))
                    for name in sorted(tables, key=_table_number))
    info = (element("NGAYLAP", moment.strftime("%Y%m%d"))  # creation date; table date-times are yyyyMMddHHmm
            + element("SOLUONGHOSO", "1") + element("DANHSACHHOSO", element("HOSO", files)))
    unit = element("THONGTINDONVI", element("MACSKCB", escaped(facility.bhxh_code)))
    return document_bytes(element("GIAMDINHHS", unit + element("THONGTINHOSO", info) + element("CHUKYDONVI", "")))
