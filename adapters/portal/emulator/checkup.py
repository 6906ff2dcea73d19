"""The emulator's check of a QĐ 1551/2062 health-check form, against the same field lists as the builder.

It reads mappings/checkup/forms.json as data and checks on its own: root, group and element order,
unknown or missing elements, type and size, the QĐ code tables, dates, HUYET_AP and the required elements.
"""
from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from lxml import etree

from adapters.portal.emulator.validate import Rejection

NUMBER = re.compile(r"[<>]?=?-?\d+(\.\d+)?")
CODE_TABLES = {"GIOI_TINH": {"1", "2", "3"}, "DOI_TUONG": {str(n) for n in range(1, 15)},
               "NGUON_KINH_PHI": {"1", "2", "3", "4", "5", "9"}, "PHAN_LOAI_SK": {"1", "2", "3", "4", "5"}}
FORMATS = {"NGAY_SINH": re.compile(r"\d{12}"), "NGAY_VAO": re.compile(r"\d{12}"),
           "NGAY_KET_LUAN": re.compile(r"\d{12}"),
           "MA_CSKCB": re.compile(r".{5}"), "MA_GTIN_CSKCB": re.compile(r"\d{13}"),
           "HUYET_AP": re.compile(r"\d{2,3}/\d{2,3}"),
           "KET_LUAN_BENH": re.compile(r"[A-Z]\d{2}(\.[0-9A-Z]{1,2})?(;[A-Z]\d{2}(\.[0-9A-Z]{1,2})?)*")}
SIGNATURE_SLOTS = {"CKS_NGUOI_KHAM", "CKS_NGUOI_KET_LUAN", "CKS_BENH_VIEN"}


@cache
def _data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("mappings.checkup").joinpath(name).read_text(encoding="utf-8"))
    return data


def form_lists() -> dict[str, Any]:
    """Every form of mappings/checkup/forms.json by root element."""
    forms: dict[str, Any] = _data("forms.json")["forms"]
    return forms


def _text(node: etree._Element, path: str) -> str:
    return (node.findtext(path) or "").strip()


def unwrap_envelope(xml: bytes) -> bytes:
    """The form inside a KHAMSUCKHOE envelope (mappings/checkup/packaging.json), its groups back in form order."""
    root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    if not re.fullmatch(r"\d{13}", _text(root, "THONGTINDONVI/MACSKCB")):
        raise Rejection("KHAMSUCKHOE/THONGTINDONVI/MACSKCB must be the 13-digit facility id")
    if not re.fullmatch(r"\d{8}", _text(root, "THONGTINHOSO/NGAYLAP")):
        raise Rejection("KHAMSUCKHOE/THONGTINHOSO/NGAYLAP must be yyyyMMdd")
    records = root.findall("THONGTINHOSO/DANHSACHHOSO/HOSO")
    if len(records) != 1 or _text(root, "THONGTINHOSO/SOLUONGHOSO") != "1":
        raise Rejection("a KHAMSUCKHOE envelope carries one health check (SOLUONGHOSO 1, one HOSO)")
    if root.find("THONGTINHOSO/CHUKYDONVI") is None:
        raise Rejection("KHAMSUCKHOE/THONGTINHOSO/CHUKYDONVI is missing")
    home = {group: kind for kind, groups in _data("packaging.json")["files"] for group in groups}
    groups: list[etree._Element] = []
    for file_node in records[0].findall("FILEHOSO"):
        kind = _text(file_node, "LOAIHOSO")
        content = file_node.find("NOIDUNGFILE")
        for group in [] if content is None else list(content):
            if home.get(str(group.tag)) != kind:
                raise Rejection(f"{group.tag} belongs in {home.get(str(group.tag), 'no sub-file')}, not {kind}")
            groups.append(group)
    tags = {str(group.tag) for group in groups}
    for name, spec in form_lists().items():
        fixed = {group[0] for group in spec["groups"] if len(group) < 3}
        if fixed <= tags <= {group[0] for group in spec["groups"]}:
            order = {group[0]: position for position, group in enumerate(spec["groups"])}
            form = etree.Element(name)
            form.extend(sorted(groups, key=lambda node: order[str(node.tag)]))
            return etree.tostring(form)
    raise Rejection("the envelope's groups are not those of any health-check form")


def _check_value(where: str, name: str, kind: str, size: int | None, value: str) -> None:
    if size is not None and len(value) > size:
        raise Rejection(f"{where}: longer than {size} characters")
    if kind == "N" and not NUMBER.fullmatch(value):
        raise Rejection(f"{where}: not a number")
    if name in CODE_TABLES and value not in CODE_TABLES[name]:
        raise Rejection(f"{where}: not a QĐ 1551 code")
    if name in FORMATS and not FORMATS[name].fullmatch(value):
        raise Rejection(f"{where}: wrong format")


def check_form(xml: bytes) -> tuple[str, dict[str, str]]:
    """Validate the form's shape and values; its root and the first value of each element, or Rejection."""
    try:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise Rejection(f"data is not a well-formed XML form: {exc}") from None
    spec = form_lists().get(root.tag)
    if spec is None:
        raise Rejection(f"root element {root.tag} is not a known health-check form")
    children = list(root)
    values: dict[str, str] = {}
    position = 0
    for group in spec["groups"]:
        element, fields, repeat = group[0], group[1], len(group) > 2
        count = 0
        while position < len(children) and children[position].tag == element and (repeat or count == 0):
            node = children[position]
            if [child.tag for child in node] != [row[0] for row in fields]:
                raise Rejection(f"{root.tag}/{element} must hold {', '.join(row[0] for row in fields)} in this order")
            for child, (name, kind, size, _row) in zip(node, fields, strict=True):
                value = (child.text or "").strip()
                if value and name not in SIGNATURE_SLOTS:
                    _check_value(f"{root.tag}/{element}/{name}", name, kind, size, value)
                    values.setdefault(name, value)
            position, count = position + 1, count + 1
        if count == 0 and not repeat:
            raise Rejection(f"{root.tag}/{element} is missing or out of order (QĐ 1551 PL02 order)")
    if position < len(children):
        raise Rejection(f"{root.tag}/{children[position].tag} is not an element of this form here")
    absent = [name for name in spec["required"] if name not in SIGNATURE_SLOTS and not values.get(name)]
    if absent:
        raise Rejection(f"{root.tag} lacks required element(s): {', '.join(absent)}")
    return str(root.tag), values
