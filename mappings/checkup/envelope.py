"""The QĐ 2062 packaging of one health-check form as a KHAMSUCKHOE envelope (portal.hub.packaging).

The form's groups go, in form order, into the sub-files (LOAIHOSO XML1, XML2, ...) of packaging.json, each
NOIDUNGFILE holding its groups' XML itself; an empty CHUKYDONVI closes THONGTINHOSO for the facility
signature. The CKS_* elements travel inside their groups, so the form's signatures are made the same way.
"""
from __future__ import annotations

import copy
import json
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from lxml import etree


@cache
def packaging() -> dict[str, Any]:
    """The sub-file table (packaging.json) with its sources."""
    table: dict[str, Any] = json.loads(
        resources.files("mappings.checkup").joinpath("packaging.json").read_text(encoding="utf-8"))
    return table


def build_envelope(form_xml: bytes, facility_id: str, created: date) -> bytes:
    """The unsigned KHAMSUCKHOE envelope of one form (facility_id: the 13-digit id, as the vendor's example)."""
    form = etree.fromstring(form_xml)
    table = packaging()
    root = etree.Element(table["root"])
    etree.SubElement(etree.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = facility_id
    records = etree.SubElement(root, "THONGTINHOSO")
    etree.SubElement(records, "NGAYLAP").text = created.strftime("%Y%m%d")
    etree.SubElement(records, "SOLUONGHOSO").text = "1"
    record = etree.SubElement(etree.SubElement(records, "DANHSACHHOSO"), "HOSO")
    for kind, groups in table["files"]:
        found = [group for group in form if group.tag in groups]
        if not found:
            continue
        file_node = etree.SubElement(record, "FILEHOSO")
        etree.SubElement(file_node, "LOAIHOSO").text = kind
        content = etree.SubElement(file_node, "NOIDUNGFILE")
        content.extend(copy.deepcopy(group) for group in found)
    etree.SubElement(records, "CHUKYDONVI")
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")
