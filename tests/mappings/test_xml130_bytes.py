"""The XML 130 tables, envelope and check-in are written as strings: byte for byte what ElementTree wrote."""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from mappings.xml130 import build_envelope
from mappings.xml130.checkin import build_checkin, checkin_row
from mappings.xml130.checkin import layout as checkin_layout
from mappings.xml130.layout import XML_DECLARATION, XML_INVALID, field_names, layouts, render
from tests.mappings.claim_samples import INPATIENT_FACILITY, inpatient_document, site

TRICKY = ["", "plain", "a & b", "<b>bold</b>", "x > y", "Nguyễn Văn Ánh", "line\nbreak\r\ttab", "\"quoted\" 'x'",
          "bell\x07 and \ufffe", "emoji \U0001F600", "&amp; already", "]]>", "  spaced  "]


def _element_tree(root_tag: str, list_tag: str, row_tag: str, names: list[str],
                  rows: list[dict[str, str]], signature: bool = False) -> bytes:
    """The table as the gateway wrote it with ElementTree before (the reference)."""
    root = ET.Element(root_tag)
    parent = ET.SubElement(root, list_tag) if list_tag else root
    for row in rows:
        target = ET.SubElement(parent, row_tag) if row_tag else parent
        for name in names:
            ET.SubElement(target, name).text = XML_INVALID.sub("", row.get(name, ""))
    if signature:
        ET.SubElement(root, "CHUKYDONVI")
    return XML_DECLARATION + ET.tostring(root, encoding="utf-8", xml_declaration=False)


@pytest.mark.parametrize("table", sorted(name for name in layouts() if name.startswith("XML")))
def test_every_table_renders_as_element_tree_did(table: str) -> None:
    names = field_names(table)
    rows = [{name: TRICKY[(number + row) % len(TRICKY)] for number, name in enumerate(names)} for row in range(3)]
    rows.append({})  # a row of blanks: every element present and empty
    layout = layouts()[table]
    assert render(table, rows) == _element_tree(layout["root"], layout["list"], layout["row"], names, rows)
    assert render(table, []) == _element_tree(layout["root"], layout["list"], layout["row"], names, [])


def test_envelope_is_as_element_tree_wrote_it() -> None:
    tables = {"XML1": b"<a>1</a>", "XML3": "Ánh & <b>".encode(), "XML10": b""}
    now = datetime(2026, 3, 12, 20, 0, tzinfo=UTC)
    root = ET.Element("GIAMDINHHS")
    ET.SubElement(ET.SubElement(root, "THONGTINDONVI"), "MACSKCB").text = INPATIENT_FACILITY.bhxh_code
    info = ET.SubElement(root, "THONGTINHOSO")
    ET.SubElement(info, "NGAYLAP").text = "20260313"  # 03:00 on the 13th in Vietnam
    ET.SubElement(info, "SOLUONGHOSO").text = "1"
    record = ET.SubElement(ET.SubElement(info, "DANHSACHHOSO"), "HOSO")
    for name in ("XML1", "XML3", "XML10"):
        file = ET.SubElement(record, "FILEHOSO")
        ET.SubElement(file, "LOAIHOSO").text = name
        ET.SubElement(file, "NOIDUNGFILE").text = base64.b64encode(tables[name]).decode("ascii")
    ET.SubElement(root, "CHUKYDONVI")
    assert build_envelope(tables, INPATIENT_FACILITY, now) == XML_DECLARATION + ET.tostring(root, encoding="utf-8")


def test_checkin_is_as_element_tree_wrote_it() -> None:
    document = inpatient_document()
    rules = checkin_layout()
    for stage in ("visit", "inpatient"):
        row = checkin_row(document, INPATIENT_FACILITY, stage, site())
        expected = _element_tree(rules["root"], rules["list"], rules["row"], rules["fields"], [row], signature=True)
        assert build_checkin(document, INPATIENT_FACILITY, stage, site()) == expected
